"""Datasets whose length may be unknown: iterable and streaming datasets
(``torch.utils.data.IterableDataset``,
HF ``datasets`` in streaming mode).

On several processes the trainer shards them with accelerate's dispatching (accelerate's default for
an ``IterableDataset``): the main process reads each global batch and every process gets its slice,
so every process runs the same number of steps and no sample appears twice in one global batch. The
last global batch is completed with samples from the epoch's first; evaluation drops those again
(``_evaluation.real_samples_only``), so that each evaluation sample counts once.
"""

from __future__ import annotations

from torch.utils.data import IterableDataset


def length_or_none(dataloader) -> int | None:
    try:
        return len(dataloader)
    except TypeError:
        return None


def is_iterable(dataset) -> bool:
    return isinstance(dataset, IterableDataset)


def check_predictable(dataset) -> None:
    """predict() shares a dataset among processes by index, which an iterable dataset has not."""
    if is_iterable(dataset):
        raise TypeError(
            "predict() needs a map-style dataset (with __getitem__ and __len__): it returns outputs in"
            f" dataset order and shares the samples among processes by index, and {type(dataset).__name__} is"
            " an IterableDataset. Run the model over the stream in a loop of your own, or use evaluate() for"
            " its loss."
        )


def check_length_known(train_len: int | None, max_num_train_steps: int | None) -> None:
    """An epoch of unknown length can only be sized by ``max_num_train_steps``."""
    if train_len is None and max_num_train_steps is None:
        raise ValueError(
            "The training dataset has no length (an IterableDataset without __len__), so the run's number of "
            "updates cannot be known: pass train(..., max_num_train_steps=N) (epochs then end when the data "
            "does, or at N updates), or give the dataset a __len__."
        )


def last_batch_signal(dataloader):
    """What tells, at each step, whether the batch is the epoch's last, where the length is unknown:
    accelerate's prepared dataloaders (several processes) look one batch ahead and say so in
    ``end_of_dataloader``, so that the last window's gradients are synchronised as they are
    accumulated. A plain dataloader (one process) is not looked ahead of, which would draw the next
    batch's random numbers early (a resumed run could not replay them): the trainer updates the
    last window once the data has ended. ``None`` for that case."""
    return dataloader if hasattr(dataloader, "end_of_dataloader") else None


def sized_for_steps(
    updates_per_epoch: int | None, num_epochs: int, max_num_train_steps: int | None
) -> tuple[int, int]:
    """``(num_epochs, num_training_steps)`` of a run: at most ``max_num_train_steps`` updates. With an
    unknown epoch length every epoch may be the last, so both come from the arguments as given."""
    if updates_per_epoch is None:
        return num_epochs, max_num_train_steps
    if max_num_train_steps is None:
        return num_epochs, num_epochs * updates_per_epoch
    num_epochs = min(num_epochs, -(-max_num_train_steps // updates_per_epoch))
    return num_epochs, min(max_num_train_steps, num_epochs * updates_per_epoch)
