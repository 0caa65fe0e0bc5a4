"""A training script for torchrun's elastic launches, for ``tests/callbacks/test_elastic.py``: on every
(re)start it resumes the newest training state (``resume_from="latest"``, a state saved after every update),
and records the global sample indices each update read (gathered; rank 0 writes ``OUT/update_<u>.json``,
before the update's state is saved, so that a redone update writes it again)::

    torchrun --nnodes=1:2 --nproc-per-node=1 --max-restarts=2 --rdzv-backend=c10d \\
        --rdzv-endpoint=localhost:PORT --rdzv-id=JOB tests/callbacks/elastic_scenario.py OUT [--kill-at U]

With ``--kill-at U`` (give it to one agent only), the worker SIGKILLs itself as update U starts, once (a
marker file in OUT remembers it). Rank 0 writes the final weights to ``OUT/final.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs, gather_object
from torch.utils.data import Dataset

from pytorch_accelerated.callbacks import SaveTrainingStateCallback
from pytorch_accelerated.trainer import Trainer, TrainerCallback, seed_everything
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

GLOBAL_BATCH = 12
NUM_SAMPLES = 60  # 5 updates per epoch
NUM_EPOCHS = 3


class IndexedData(Dataset):
    """``(inputs, target, index)``: each sample carries its index."""

    draws_random_numbers = False

    def __init__(self):
        self.inputs, self.targets = make_tiny_dataset(NUM_SAMPLES).tensors

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index], torch.tensor(index)


class RecordAndKill(TrainerCallback):
    """Writes each update's gathered sample indices; kills this worker as update ``kill_at`` starts, once."""

    def __init__(self, out: Path, kill_at: int | None):
        self.out, self.kill_at = out, kill_at
        self.indices: list[int] = []

    def on_train_step_start(self, trainer, **kwargs):
        marker = self.out / "killed"
        if trainer.completed_update_steps == self.kill_at and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.indices.extend(batch[2].tolist())

    def on_save_point(self, trainer, point, **kwargs):
        if point != "update":
            return
        indices = sorted(index for share in gather_object([self.indices]) for index in share)
        self.indices = []
        if trainer.accelerator.is_main_process:
            record = {
                "indices": indices,
                "world": trainer.accelerator.num_processes,
                # a restart shows in the pid: a worker restarted for a peer's failure keeps restart count 0
                "pid": os.getpid(),
            }
            (self.out / f"update_{trainer.completed_update_steps - 1:03d}.json").write_text(
                json.dumps(record)
            )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill-at", type=int, default=None)
    args = parser.parse_args(argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    seed_everything(5)
    model = make_tiny_model()
    # a short timeout: a peer that vanished becomes an error, and a restart, rather than a long wait
    handlers = [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=30))]
    callbacks = [
        RecordAndKill(args.out, args.kill_at),
        SaveTrainingStateCallback(args.out / "states", save_every_n_steps=1),
    ]
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        callbacks=callbacks,
        accelerator_kwargs={"cpu": True, "kwargs_handlers": handlers},
    )
    # the same global batch on any number
    per_device_batch_size = GLOBAL_BATCH // trainer.accelerator.num_processes
    trainer.train(
        IndexedData(),
        num_epochs=NUM_EPOCHS,
        per_device_batch_size=per_device_batch_size,
        resume_from="latest",
    )
    weights = trainer.get_model().state_dict()
    if trainer.accelerator.is_main_process:
        torch.save(weights, args.out / "final.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
