"""What evaluation needs beyond the loop: DDP's buffers in step before it, every sample counted once, and
under FSDP as many forwards on every process."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from accelerate.utils import find_batch_size, send_to_device, slice_tensors
from torch.nn.parallel import DistributedDataParallel

from ._data import is_iterable


def sync_buffers_before_evaluation(model: torch.nn.Module) -> None:
    """DDP broadcasts buffers (BatchNorm statistics) from process 0 in the first forward after
    training: a collective that a process with no evaluation batch would never join. Do it here,
    where every process is, and tell DDP it is done."""
    if (
        isinstance(model, DistributedDataParallel)
        and model.broadcast_buffers
        and model.require_forward_param_sync
    ):
        for buffer in model.module.buffers():
            torch.distributed.broadcast(buffer, src=0)
        model.require_forward_param_sync = False


def real_samples_only(
    batches: Iterator, dataloader, process_index: int, forward_empty: Callable | None = None
) -> Iterator:
    """Evaluation batches of a dispatched iterable dataset without the samples that complete its
    last global batch (copies of the first batch's), so that every sample counts once; a process
    whose share of it holds none gets no last batch (``forward_empty(batch)`` runs on it instead, where every
    forward is a collective). Other dataloaders' batches pass unchanged."""
    if not hasattr(dataloader, "remainder") or not is_iterable(getattr(dataloader, "dataset", None)):
        return batches
    return _trimmed(batches, dataloader, process_index, forward_empty)


def _trimmed(batches: Iterator, dataloader, process_index: int, forward_empty: Callable | None) -> Iterator:
    for batch in batches:
        # remainder: the real samples of the last global batch
        if dataloader.end_of_dataloader and dataloader.remainder > 0:
            size = find_batch_size(batch)
            real = min(max(dataloader.remainder - process_index * size, 0), size)
            if real == 0:
                if forward_empty is not None:
                    forward_empty(batch)
                continue
            if real < size:
                batch = slice_tensors(batch, slice(0, real))
        yield batch


class EvenForwards:
    """A loop's batches, then as many forwards as this process lacks to match the process with the most.

    Under FSDP every forward gathers the parameters from every process, also under ``no_grad``: a process
    with fewer evaluation (or prediction) batches than another would leave it waiting forever. The
    processes' numbers of batches are gathered before the first (one collective per loop, nothing per step),
    and once this process's batches are done, ``forward`` runs on its last batch (or ``spare_batch()``
    where it had none) as many times as it has fewer, the outputs dropped. A dispatched iterable dataset
    gives every process as many batches: pass ``num_batches=None`` then, and nothing is gathered.

    Args:
        batches: the loop's batches.
        accelerator: the Trainer's.
        forward: runs the model on a batch (its result is dropped).
        spare_batch: a batch for a process that had none.
        num_batches: how many batches this process has, or ``None`` where every process has as many.
    """

    def __init__(self, batches: Iterable, accelerator, forward: Callable, spare_batch: Callable, num_batches):
        self._batches = batches
        self._accelerator = accelerator
        self._forward = forward
        self._spare_batch = spare_batch
        self._num_batches = num_batches

    def __iter__(self) -> Iterator:
        most = self._most_batches()
        done, last = 0, None
        for batch in self._batches:
            done, last = done + 1, batch
            yield batch
        for _ in range(most - done):
            last = last if last is not None else self._spare_batch()
            self._forward(last)

    def _most_batches(self) -> int:
        if self._num_batches is None:
            return 0
        accelerator = self._accelerator
        return int(accelerator.gather(torch.tensor([self._num_batches], device=accelerator.device)).max())


def spare_batch(dataset, collate_fn: Callable, device: torch.device | str):
    """A batch of ``dataset``'s first sample on ``device``, for forwards whose outputs are dropped."""
    sample = next(iter(dataset)) if is_iterable(dataset) else dataset[0]
    return send_to_device(collate_fn([sample]), device)
