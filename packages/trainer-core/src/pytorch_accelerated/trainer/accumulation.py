"""Gradient accumulation windows: which batches of an epoch share one optimizer update."""

from __future__ import annotations

from typing import Iterable, NamedTuple

import torch

from . import _data


class Window(NamedTuple):
    """The accumulation window of one batch.

    Args:
        size: how many batches the window holds; each batch's loss is divided by it.
        filled: how many of them are done with this batch.
        closes: whether this batch is its last: the update follows it.
    """

    size: int
    filled: int
    closes: bool


class AccumulationWindows:
    """An epoch's batches in windows of ``accumulation_steps``, the last one shorter where they do not divide it.

    Args:
        accumulation_steps: batches per optimizer update.
        num_batches: the epoch's length, or ``None`` where it is unknown (an iterable dataset).
        end_signal: where the length is unknown, an object whose ``end_of_dataloader`` is true at the
            epoch's last batch (accelerate's prepared dataloader, which looks one batch ahead), or ``None``:
            the window open when the data ends is then closed after the loop (:meth:`left_open`).
    """

    def __init__(self, accumulation_steps: int, num_batches: int | None, end_signal=None):
        self.accumulation_steps = accumulation_steps
        self.num_batches = num_batches
        self.end_signal = end_signal if num_batches is None else None

    @classmethod
    def of(cls, dataloader, accumulation_steps: int) -> AccumulationWindows:
        """The windows of an epoch of ``dataloader``."""
        return cls(accumulation_steps, _data.length_or_none(dataloader), _data.last_batch_signal(dataloader))

    def at(self, batch_index: int) -> Window:
        """The window of the epoch's batch ``batch_index`` (counted from 0)."""
        filled = batch_index % self.accumulation_steps + 1
        size = self.accumulation_steps
        if self.num_batches is not None:
            size = min(size, self.num_batches - (batch_index - filled + 1))
        closes = filled == size or (self.end_signal is not None and self.end_signal.end_of_dataloader)
        return Window(size, filled, closes)

    def left_open(self, batches_done: int) -> Window | None:
        """The window the data of unknown length ended in, cut short, or ``None`` where the last one closed."""
        if batches_done == 0 or self.num_batches is not None or self.end_signal is not None:
            return None
        filled = (batches_done - 1) % self.accumulation_steps + 1
        return None if filled == self.accumulation_steps else Window(self.accumulation_steps, filled, True)


def rescale_cut_window(parameters: Iterable[torch.nn.Parameter], window: Window) -> None:
    """Make the gradients of a window cut short (each batch's loss divided by the full ``window.size``)
    the mean over the batches it got: exact up to rounding. Once per epoch at most."""
    factor = window.size / window.filled
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.mul_(factor)
