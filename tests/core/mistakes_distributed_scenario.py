"""Run on two processes by ``test_mistakes.py``: custom samplers, a DistributedSampler, and Trainers
with different mixed precision in one process group. Writes ``rank<r>.json`` into the folder given."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs
from torch.utils.data import Dataset, DistributedSampler, RandomSampler

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model


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


def make_trainer(callbacks=(), mixed_precision="no"):
    model = make_tiny_model()
    return Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=callbacks,
        accelerator_kwargs={
            "cpu": True,
            "mixed_precision": mixed_precision,
            "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=60))],
        },
    )


def seen_batches(num_samples, **dataloader_kwargs):
    seen = SeenIndices()
    make_trainer([seen]).train(IndexedDataset(num_samples), num_epochs=1, per_device_batch_size=3,
                               train_dataloader_kwargs=dataloader_kwargs)  # fmt: skip
    return seen.batches


def distributed_sampler_error():
    dataset = IndexedDataset(8)
    try:
        make_trainer().train(dataset, num_epochs=1, train_dataloader_kwargs={"sampler": DistributedSampler(dataset)})
    except ValueError as error:
        return str(error)
    return None


def mixed_precision_runs():
    settings = []
    for mixed_precision in ("bf16", "no"):
        trainer = make_trainer(mixed_precision=mixed_precision)
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
