"""Where a training run is: :class:`RunPosition`, advanced by the loop and saved by its field names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class RunPosition:
    """The position of a training run, as the loop advances it (read it as ``trainer.position``).

    Args:
        completed_update_steps: optimizer updates done in the run.
        epochs_completed: training epochs done (their evaluation and end events included).
        epoch_batches: batches of the current training epoch done.
        stopped: whether a ``StopTrainingError`` ended the run.
        epoch_end_requested: whether ``trainer.request_epoch_end()`` asked the current epoch to end.
    """

    completed_update_steps: int = 0
    epochs_completed: int = 0
    epoch_batches: int = 0
    stopped: bool = False
    epoch_end_requested: bool = False

    @property
    def in_epoch(self) -> bool:
        """Whether a training epoch was left part-way (a run resumed there finishes it first)."""
        return self.epoch_batches > 0 and not self.stopped

    @property
    def at_run_start(self) -> bool:
        """Whether nothing of the run has happened yet."""
        return self == RunPosition()

    def train_epoch_should_end(self, max_num_train_steps: int | None) -> bool:
        """Whether the current training epoch ends now: its end was requested, or the run's updates are
        done."""
        return self.epoch_end_requested or self.reached(max_num_train_steps)

    def reached(self, max_num_train_steps: int | None) -> bool:
        """Whether ``max_num_train_steps`` updates are done (never, for ``None``)."""
        return max_num_train_steps is not None and self.completed_update_steps >= max_num_train_steps

    def end_epoch(self) -> None:
        """Count the training epoch as done: the next one starts at its first batch."""
        self.epochs_completed += 1
        self.epoch_batches = 0
        self.epoch_end_requested = False

    def state_dict(self) -> dict[str, Any]:
        """The position by field name."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the position ``state`` gives (unknown keys are left out: a saved state may hold more)."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, state[field.name])
