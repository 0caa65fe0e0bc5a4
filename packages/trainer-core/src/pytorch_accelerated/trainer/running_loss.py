"""The loop's running loss: a sample-weighted mean kept on the device, read once per epoch."""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator


class RunningLoss:
    """A sample-weighted running mean of an epoch's losses, kept on the device (``trainer.running_train_loss``).

    Adding a loss is one tensor operation and no host read; reading it (:meth:`mean`, :meth:`is_finite`)
    is one read.

    Args:
        device: where the sum is kept (the losses' device).
    """

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float32, device=device)
        self.count = 0

    def update(self, loss: torch.Tensor, batch_size: int) -> None:
        """Add one batch's mean ``loss`` over ``batch_size`` samples."""
        self.total.add_(loss.detach(), alpha=batch_size)  # one op; accumulates in float32 whatever the loss's dtype
        self.count += batch_size

    def reset(self) -> None:
        """Start again from no loss (a new epoch)."""
        self.total.zero_()
        self.count = 0

    def mean(self) -> float | None:
        """This process's mean so far (one host read), or ``None`` before the first loss."""
        return self.total.item() / self.count if self.count else None

    def is_finite(self) -> bool:
        """Whether every loss added so far was finite (one read of the total)."""
        return bool(torch.isfinite(self.total))

    def compute(self, accelerator: Accelerator) -> float:
        """The mean over every process's losses (one reduction on several processes)."""
        totals = torch.stack([self.total, torch.tensor(float(self.count), device=self.total.device)])
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, "sum")
        total, count = totals.tolist()
        return total / count if count else math.nan

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Take the sum and count of ``state`` (``None``: none yet)."""
        self.reset()
        if state is not None:
            self.total.copy_(state["total"])
            self.count = state["count"]
