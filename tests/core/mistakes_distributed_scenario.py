"""Run on two processes by ``test_mistakes.py``: custom samplers, a DistributedSampler, and Trainers
with different mixed precision in one process group. Writes ``rank<r>.json`` into the folder given."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset, DistributedSampler, RandomSampler

from pytorch_accelerated.trainer import TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset

try:  # launched as a script, or imported by the test module
    from helpers import make_gloo_trainer
except ImportError:
    from .helpers import make_gloo_trainer


class IndexedDataset(Dataset):
    def __init__(self, num_samples):
        self.inner = make_tiny_dataset(num_samples)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        inputs, target = self.inner[index]
        return inputs, target, index


class SeenIndices(TrainerCallback):
    def __init__(self):
        self.batches = []

    def on_train_step_end(self, trainer, batch, **kwargs):
        self.batches.append(batch[2].tolist())


def seen_batches(num_samples, **dataloader_kwargs):
    seen = SeenIndices()
    trainer = make_gloo_trainer([seen], mixed_precision="no")
    dataset = IndexedDataset(num_samples)
    trainer.train(dataset, num_epochs=1, per_device_batch_size=3, train_dataloader_kwargs=dataloader_kwargs)
    return seen.batches


def distributed_sampler_error():
    dataset = IndexedDataset(8)
    try:
        trainer = make_gloo_trainer(mixed_precision="no")
        trainer.train(dataset, num_epochs=1, train_dataloader_kwargs={"sampler": DistributedSampler(dataset)})
    except ValueError as error:
        return str(error)
    return None


def mixed_precision_runs():
    settings = []
    for mixed_precision in ("bf16", "no"):
        trainer = make_gloo_trainer(mixed_precision=mixed_precision)
        trainer.train(make_tiny_dataset(8), num_epochs=1, per_device_batch_size=2)
        settings.append(trainer.run_config.mixed_precision)
    return settings


def main(out: Path) -> None:
    result = {
        "batch_sampler_batches": seen_batches(10, batch_sampler=[[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]),
        "random_sampler_batches": seen_batches(12, sampler=RandomSampler(range(12))),
        "distributed_sampler_error": distributed_sampler_error(),
        "mixed_precision_runs": mixed_precision_runs(),
    }
    result["process_group_alive"] = torch.distributed.is_initialized()
    torch.distributed.barrier()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
