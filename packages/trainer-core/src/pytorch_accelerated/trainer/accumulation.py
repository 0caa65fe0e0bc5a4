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
    """An epoch's batches in windows of ``accumulation_steps``, the last one shorter where they do not divide
    it.

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
        """The window the data of unknown length ended in, cut short, or ``None`` where the last one
        closed."""
        if batches_done == 0 or self.num_batches is not None or self.end_signal is not None:
            return None
        filled = (batches_done - 1) % self.accumulation_steps + 1
        return None if filled == self.accumulation_steps else Window(self.accumulation_steps, filled, True)


class WindowItems:
    """The items (tokens) an accumulation window's losses are means over, counted on the device.

    A batch that gives ``num_items_in_batch`` backpropagates its loss summed over its items; the update then
    divides the gradients by the items of the whole global window (one all-reduce of the count on several
    processes, none on one): the gradient of the global batch's mean loss over every item, whatever the
    padding, the accumulation and the number of processes.

    Args:
        device: where the count is kept.
    """

    def __init__(self, device: torch.device):
        self.count = torch.zeros((), dtype=torch.float32, device=device)
        self.batches = 0

    def summed(self, loss: torch.Tensor, num_items: torch.Tensor | int) -> torch.Tensor:
        """``loss`` (a mean over ``num_items``) summed over its items, the items counted."""
        self.count.add_(num_items)
        self.batches += 1
        return loss * num_items

    def average_gradients(
        self, parameters: Iterable[torch.nn.Parameter], window: Window, accelerator
    ) -> None:
        """Divide the window's gradients by its items on every process, then count again from zero."""
        if self.batches != window.filled:
            raise ValueError(
                f"num_items_in_batch was given for {self.batches} of the {window.filled} batches of an"
                " accumulation window: return it from calculate_train_batch_loss for every batch, or for"
                " none."
            )
        total = accelerator.reduce(self.count, "sum") if accelerator.num_processes > 1 else self.count
        # the processes' gradients were averaged (DDP, FSDP): the factor puts their number back
        factor = accelerator.num_processes / total.clamp(min=1)
        gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
        if gradients:
            torch._foreach_mul_(gradients, factor)
        self.count.zero_()
        self.batches = 0


def rescale_cut_window(parameters: Iterable[torch.nn.Parameter], window: Window) -> None:
    """Make the gradients of a window cut short (each batch's loss divided by the full ``window.size``)
    the mean over the batches it got: exact up to rounding. Once per epoch at most."""
    factor = window.size / window.filled
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.mul_(factor)
