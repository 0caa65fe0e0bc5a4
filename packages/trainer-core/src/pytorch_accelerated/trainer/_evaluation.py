"""What evaluation needs beyond the loop: DDP's buffers in step before it, and every sample counted once."""

from __future__ import annotations

from typing import Iterator

import torch
from accelerate.utils import find_batch_size, slice_tensors
from torch.nn.parallel import DistributedDataParallel

from ._data import is_iterable


def sync_buffers_before_evaluation(model: torch.nn.Module) -> None:
    """DDP broadcasts buffers (BatchNorm statistics) from process 0 in the first forward after
    training: a collective that a process with no evaluation batch would never join. Do it here,
    where every process is, and tell DDP it is done."""
    if isinstance(model, DistributedDataParallel) and model.broadcast_buffers and model.require_forward_param_sync:
        for buffer in model.module.buffers():
            torch.distributed.broadcast(buffer, src=0)
        model.require_forward_param_sync = False


def real_samples_only(batches: Iterator, dataloader, process_index: int) -> Iterator:
    """Evaluation batches of a dispatched iterable dataset without the samples that complete its
    last global batch (copies of the first batch's), so that every sample counts once; a process
    whose share of it holds none gets no last batch. Other dataloaders' batches pass unchanged."""
    if not hasattr(dataloader, "remainder") or not is_iterable(getattr(dataloader, "dataset", None)):
        return batches
    return _trimmed(batches, dataloader, process_index)


def _trimmed(batches: Iterator, dataloader, process_index: int) -> Iterator:
    for batch in batches:
        if dataloader.end_of_dataloader and dataloader.remainder > 0:  # remainder: the real samples of the last global batch
            size = find_batch_size(batch)
            real = min(max(dataloader.remainder - process_index * size, 0), size)
            if real == 0:
                continue
            if real < size:
                batch = slice_tensors(batch, slice(0, real))
        yield batch
