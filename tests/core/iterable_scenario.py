"""Two processes (gloo) training and evaluating on an IterableDataset without a length; checked by
``tests/core/test_iterable_datasets.py``. Run on every process of a launch::

    python -m torch.distributed.run --nproc_per_node 2 tests/core/iterable_scenario.py OUT_DIR

Each process writes ``iterable_rank<r>.json``: the sample ids of each of its training steps and of
its evaluation steps, and the trained weights. 21 samples in global batches of 4 make 6 steps:
windows of 4 and 2 (the last one cut short by the end of the data).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from pytorch_accelerated.trainer import Trainer, TrainerCallback

TRAIN_SAMPLES, EVAL_SAMPLES, BATCH_SIZE, ACCUMULATION, MAX_STEPS, LR = 21, 7, 2, 4, 100, 0.1


class Samples(torch.utils.data.IterableDataset):
    """``(features, label, id)`` for ids 0..n-1, in order; no ``__len__``."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples

    def __iter__(self):
        for index in range(self.num_samples):
            yield torch.full((4,), float(index)), torch.tensor(index % 3), torch.tensor(index)


class SampleIds(TrainerCallback):
    def __init__(self):
        self.train, self.eval = [], []

    def on_train_step_end(self, trainer, batch, **kwargs):
        self.train.append(batch[2].tolist())

    def on_eval_step_end(self, trainer, batch, **kwargs):
        self.eval.append(batch[2].tolist())


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    ids = SampleIds()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=LR),
        callbacks=[ids],
        accelerator_kwargs={"cpu": True},
    )
    trainer.train(
        Samples(TRAIN_SAMPLES),
        num_epochs=1,
        eval_dataset=Samples(EVAL_SAMPLES),
        per_device_batch_size=BATCH_SIZE,
        max_num_train_steps=MAX_STEPS,
        gradient_accumulation_steps=ACCUMULATION,
    )
    result = {
        "train": ids.train,
        "eval": ids.eval,
        "eval_loss": trainer.run_history.get_latest_metric("eval_loss_epoch"),
        "updates": trainer.completed_update_steps,
        "weight": trainer.get_model().weight.tolist(),
        "bias": trainer.get_model().bias.tolist(),
    }
    (out / f"iterable_rank{trainer.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
