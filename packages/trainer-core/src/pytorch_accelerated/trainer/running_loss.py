"""The loop's running loss: a sample-weighted mean kept on the device, read once per epoch."""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator


class RunningLoss:
    """A running mean of an epoch's losses, kept on the device (``trainer.running_train_loss``): weighted by
    each batch's samples, or by its items (tokens) where the batch gives ``num_items_in_batch``.

    Adding a loss is one tensor operation (two, weighted by items) and no host read; reading it
    (:meth:`mean`, :meth:`is_finite`) is one read.

    Args:
        device: where the sums are kept (the losses' device).
    """

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float32, device=device)
        self.count = 0
        self.items: torch.Tensor | None = None  # the items the losses are means over, where batches give them

    def update(
        self, loss: torch.Tensor, batch_size: int, num_items: torch.Tensor | int | None = None
    ) -> None:
        """Add one batch's mean ``loss``.

        Args:
            loss: the batch's mean loss.
            batch_size: its samples: the loss's weight, unless ``num_items`` is given.
            num_items: the items (tokens) the loss is a mean over, or ``None``.
        """
        self.count += batch_size
        if num_items is None:
            # one op; accumulates in float32 whatever the loss's dtype
            self.total.add_(loss.detach(), alpha=batch_size)
            return
        if self.items is None:
            self.items = torch.zeros((), dtype=torch.float32, device=self.total.device)
        self.total.add_(loss.detach() * num_items)
        self.items.add_(num_items)

    def reset(self) -> None:
        """Start again from no loss (a new epoch)."""
        self.total.zero_()
        self.count = 0
        self.items = None

    def mean(self) -> float | None:
        """This process's mean so far (one host read), or ``None`` before the first loss."""
        if not self.count:
            return None
        return (self.total / self.items).item() if self.items is not None else self.total.item() / self.count

    def is_finite(self) -> bool:
        """Whether every loss added so far was finite (one read of the total)."""
        return bool(torch.isfinite(self.total))

    def compute(self, accelerator: Accelerator) -> float:
        """The mean over every process's losses (one reduction on several processes)."""
        weight = (
            self.items
            if self.items is not None
            else torch.tensor(float(self.count), device=self.total.device)
        )
        totals = torch.stack([self.total, weight])
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, "sum")
        total, count = totals.tolist()
        return total / count if count else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count, "items": self.items}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Take the sums of ``state`` (``None``: none yet)."""
        self.reset()
        if state is not None:
            self.total.copy_(state["total"])
            self.count = state["count"]
            if state.get("items") is not None:  # states before trainer-core 0.5 have none
                self.items = state["items"].to(self.total.device)
