"""Two processes (gloo) resuming inside an epoch of a stream without ``state_dict`` (replayed), for
``tests/core/test_resumable_data.py``. Run on every process of a launch::

    python -m torch.distributed.run --nproc_per_node 2 tests/core/stream_resume_scenario.py OUT_DIR

For a stream that draws random numbers as it is read in the main process, one that draws none, and
the first read in a dataloader worker: the uninterrupted run, a run saved after its 3rd update and
stopped, and its resume. Each process writes ``stream_rank<r>.json``: per case, whether the resumed run
ended bitwise like the uninterrupted one, and the warnings about resuming it gave.
"""

from __future__ import annotations

import json
import random
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import InitProcessGroupKwargs

from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback, seed_everything
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, final_state, make_tiny_dataset

CASES = {"draws-in-the-main-process": (True, 0), "draws-nothing": (False, 0), "draws-in-a-worker": (True, 1)}


class Stream(torch.utils.data.IterableDataset):
    """48 samples, with noise from torch's generator added as each is read when ``noisy``."""

    def __init__(self, noisy: bool):
        self.noisy = noisy

    def __iter__(self):
        for inputs, target in make_tiny_dataset(48):
            yield (inputs + 0.1 * torch.randn(4) if self.noisy else inputs), target


class SaveThenStop(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps == 3:
            trainer.save_training_state(self.path)
            raise StopTrainingError("saved")


def run(noisy: bool, workers: int, callbacks=(), resume_from=None) -> Trainer:
    seed_everything(7)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layers = [torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)]
        model = torch.nn.Sequential(*layers)
    handlers = [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=60))]
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.01),
        callbacks=callbacks,
        accelerator_kwargs={"cpu": True, "kwargs_handlers": handlers},
    )
    trainer.train(
        Stream(noisy),
        num_epochs=2,
        per_device_batch_size=2,
        max_num_train_steps=100,
        resume_from=resume_from,
        train_dataloader_kwargs={"num_workers": workers},
    )
    return trainer


def resume_case(out: Path, noisy: bool, workers: int) -> dict:
    expected = final_state(run(noisy, workers))
    run(noisy, workers, [SaveThenStop(out / "state")])
    random.seed(), np.random.seed(), torch.seed()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = final_state(run(noisy, workers, resume_from=out / "state"))
    try:
        assert_bitwise_equal(resumed, expected)
        exact = True
    except AssertionError:
        exact = False
    return {"exact": exact, "warnings": [str(w.message) for w in caught if "resum" in str(w.message).lower()]}


def main(out: Path) -> None:
    results = {name: resume_case(out / name, *case) for name, case in CASES.items()}
    rank = torch.distributed.get_rank()
    (out / f"stream_rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
