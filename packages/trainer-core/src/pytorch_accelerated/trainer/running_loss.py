"""The loop's running loss: a sample-weighted mean kept on the device, read once per epoch."""

from __future__ import annotations

import math
from typing import Any

import torch
from accelerate import Accelerator


class RunningLoss:
    """A sample-weighted running mean kept on the device; read (and reduced) once per epoch."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float32, device=device)
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None, device: torch.device) -> RunningLoss:
        tracker = cls(device)
        if state is not None:
            tracker.total.copy_(state["total"])
            tracker.count = state["count"]
        return tracker

    def update(self, loss: torch.Tensor, batch_size: int) -> None:
        self.total.add_(loss.detach(), alpha=batch_size)  # one op; accumulates in float32 whatever the loss's dtype
        self.count += batch_size

    def is_finite(self) -> bool:
        """Whether every loss added so far was finite (one read of the total)."""
        return bool(torch.isfinite(self.total))

    def compute(self, accelerator: Accelerator) -> float:
        totals = torch.stack([self.total, torch.tensor(float(self.count), device=self.total.device)])
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, "sum")
        total, count = totals.tolist()
        return total / count if count else math.nan
