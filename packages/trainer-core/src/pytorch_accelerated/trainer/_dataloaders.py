"""The dataloaders the loop reads: prepared for the processes (sharded by accelerate, workers
started safely, a time limit on their batches) and their batches moved to the trainer's device."""

from __future__ import annotations

import functools
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, send_to_device
from torch.utils.data import DataLoader

from . import _checks
from .dataloader_workers import limit_the_wait_for_a_batch, start_workers_safely


def prepare_dataloader(
    accelerator: Accelerator, dataloader: DataLoader, train: bool, num_processes: int
) -> DataLoader:
    """``dataloader`` ready for the loop: sharded across processes (training pads its last batches,
    evaluation does not), or unchanged on one process."""
    _checks.check_sampler_not_sharded_twice(dataloader, num_processes, "training" if train else "evaluation")
    if not train:
        _checks.check_dataloader_not_empty(dataloader, "evaluation")
    limit_the_wait_for_a_batch(dataloader)  # a __getitem__ that never returns fails instead of hanging
    if accelerator.distributed_type == DistributedType.NO:
        # One process: nothing to shard, and accelerate's wrapper costs ~50 us per batch;
        # batches are moved to the device by on_device instead.
        return dataloader
    start_workers_safely(dataloader)  # where forking this process can hang, workers start from a forkserver
    # Evaluation shards without padding, so that every sample counts exactly once; training
    # pads the last batches so that every process runs the same number of steps.
    even_batches = accelerator.even_batches
    accelerator.even_batches = train
    try:
        return accelerator.prepare(dataloader)
    finally:
        accelerator.even_batches = even_batches


def on_device(batches: Iterator, dataloader: DataLoader, device: torch.device, distributed_type) -> Iterator:
    """``batches`` (of ``dataloader``) on ``device``, moved as they are read."""
    if device.type == "cpu" or distributed_type != DistributedType.NO:
        return batches  # already there, or moved by accelerate's prepared dataloader
    non_blocking = getattr(dataloader, "pin_memory", False)
    return map(functools.partial(send_to_device, device=device, non_blocking=non_blocking), batches)
