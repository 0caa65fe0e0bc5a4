"""``pytorch_accelerated.tracking`` as pytorch-accelerated 0.1.61 had it, so that its imports keep
working: the run history itself lives in :mod:`pytorch_accelerated.trainer` (see MIGRATING.md)."""

from __future__ import annotations

from pytorch_accelerated.trainer import InMemoryRunHistory, RunHistory

__all__ = ["RunHistory", "InMemoryRunHistory", "LossTracker"]


class LossTracker:
    """A running, sample-weighted mean of loss values (Python numbers), as in 0.1.61.

    The Trainer no longer uses it: it keeps the epoch's loss on the device and reads it once per
    epoch, where this class needs one host-device read per batch.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss_value = 0
        self.total_loss = 0
        self.running_count = 0
        self._average = 0

    def update(self, loss_batch_value, batch_size: int = 1) -> None:
        self.loss_value = loss_batch_value
        self.total_loss += loss_batch_value * batch_size
        self.running_count += batch_size
        self._average = self.total_loss / self.running_count

    @property
    def average(self):
        return self._average
