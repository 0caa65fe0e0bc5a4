"""Cosine decay with k-decay, linear warmup and a cooldown."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch

from pytorch_accelerated.trainer import TrainerPlaceholderValues

from ._arguments import check_number, check_positive_int, epochs_to_steps, lr_end_points, resolve
from ._state_0161 import cosine_settings_from_0161, is_cosine_state_0161
from .scheduler_base import StatefulSchedulerBase


class CosineLrScheduler(StatefulSchedulerBase):
    """Linear warmup, cosine decay (with k-decay) to a minimum learning rate, then a cooldown held
    at that minimum; stepped once per optimizer update.

    With ``W`` warmup updates, ``C`` cooldown updates and ``N`` updates in all, the update that
    follows ``n`` completed updates uses, for a param group whose initial lr is ``lr_max``:

    - ``n < W``: ``start + (lr_max - start) * n / W`` (the first update uses ``start``);
    - ``W <= n < N - C``, with ``t = n - W`` and ``T = N - W - C``:
      ``lr_min + 0.5 * (lr_max - lr_min) * (1 + cos(pi * t**k / T**k))``, so the first update
      after warmup uses ``lr_max`` and the decay reaches ``lr_min`` exactly when the cooldown starts;
    - ``n >= N - C``: ``lr_min``, also after the last update.

    ``k_decay`` above 1 keeps the lr high for longer, below 1 decays it sooner (k-decay,
    https://arxiv.org/abs/2004.05909).

    Args:
        optimizer: the optimizer whose param groups' ``lr`` is scheduled.
        total_num_epochs: the number of epochs of the run.
        num_update_steps_per_epoch: optimizer updates per epoch (per process, as the Trainer counts).
        k_decay: the k of k-decay, > 0; 1 is plain cosine decay.
        lr_min: the minimum lr, the same for every group; 1e-6 unless ``min_lr_ratio`` is given.
        min_lr_ratio: the minimum lr as a fraction of each group's initial lr (instead of ``lr_min``).
        num_warmup_epochs: epochs of linear warmup (may be fractional: rounded to whole updates).
        warmup_starting_lr: the lr of the first warmup update; 1e-6 unless
            ``warmup_starting_lr_ratio`` is given.
        warmup_starting_lr_ratio: that lr as a fraction of each group's initial lr.
        num_cooldown_epochs: epochs at ``lr_min`` at the end of the run (may be fractional).
        total_steps: the number of updates the run makes, when it stops before
            ``total_num_epochs * num_update_steps_per_epoch`` (``max_num_train_steps``);
            :meth:`create_scheduler_fn` always passes it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_num_epochs: int,
        num_update_steps_per_epoch: int,
        k_decay: float = 1.0,
        lr_min: float | None = None,
        min_lr_ratio: float | None = None,
        num_warmup_epochs: float = 0,
        warmup_starting_lr: float | None = None,
        warmup_starting_lr_ratio: float | None = None,
        num_cooldown_epochs: float = 0,
        total_steps: int | None = None,
    ):
        check_positive_int("total_num_epochs", total_num_epochs)
        check_positive_int("num_update_steps_per_epoch", num_update_steps_per_epoch)
        self.k_decay = check_number("k_decay", k_decay, allow_minimum=False)
        self.lr_min, self.min_lr_ratio, self.warmup_starting_lr, self.warmup_starting_lr_ratio = (
            lr_end_points(lr_min, min_lr_ratio, warmup_starting_lr, warmup_starting_lr_ratio)
        )
        if total_steps is None:
            total_steps = total_num_epochs * num_update_steps_per_epoch
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.num_warmup_steps = epochs_to_steps(
            "num_warmup_epochs", num_warmup_epochs, num_update_steps_per_epoch
        )
        self.num_cooldown_steps = epochs_to_steps(
            "num_cooldown_epochs", num_cooldown_epochs, num_update_steps_per_epoch
        )
        self._check_phases_fit()
        super().__init__(optimizer, param_group_field="lr")

    @property
    def num_decay_steps(self) -> int:
        """The number of updates in the cosine phase."""
        return self.total_steps - self.num_warmup_steps - self.num_cooldown_steps

    def get_updated_values(self, num_updates: int) -> list[float]:
        return [self._lr(num_updates, initial_lr) for initial_lr in self.base_values]

    def _lr(self, num_updates: int, lr_max: float) -> float:
        if num_updates < self.num_warmup_steps:
            start = resolve(self.warmup_starting_lr, self.warmup_starting_lr_ratio, lr_max)
            return start + (lr_max - start) * num_updates / self.num_warmup_steps
        lr_min = resolve(self.lr_min, self.min_lr_ratio, lr_max)
        steps_into_decay = num_updates - self.num_warmup_steps
        if steps_into_decay >= self.num_decay_steps:
            return lr_min
        progress = steps_into_decay**self.k_decay / self.num_decay_steps**self.k_decay
        return lr_min + 0.5 * (lr_max - lr_min) * (1 + math.cos(math.pi * progress))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`, or one saved by pytorch-accelerated 0.1.61: its
        settings are read as this scheduler's, and its update count is kept as 0.1.61 counted it
        (from -1), so that the continued run uses the learning rates 0.1.61 would have used.

        Args:
            state_dict: the state to restore.
        """
        if is_cosine_state_0161(state_dict):
            state_dict = {**self.state_dict(), **cosine_settings_from_0161(state_dict)}
        super().load_state_dict(state_dict)

    def _check_phases_fit(self) -> None:
        if self.num_decay_steps < 1:
            raise ValueError(
                f"Warmup ({self.num_warmup_steps} updates) and cooldown ({self.num_cooldown_steps} updates) "
                f"leave no update for the cosine decay in a run of {self.total_steps} updates: shorten them."
            )

    @classmethod
    def create_scheduler_fn(
        cls,
        k_decay: float = 1.0,
        lr_min: float | None = None,
        min_lr_ratio: float | None = None,
        num_warmup_epochs: float = 0,
        warmup_starting_lr: float | None = None,
        warmup_starting_lr_ratio: float | None = None,
        num_cooldown_epochs: float = 0,
    ) -> functools.partial:
        """A ``create_scheduler_fn`` for ``Trainer.train``: the run's sizes (per process, and
        ``max_num_train_steps`` included) are filled in when training starts, so the schedule ends
        exactly with the run on any number of processes. Arguments as in the constructor."""
        check_number("k_decay", k_decay, allow_minimum=False)
        lr_end_points(lr_min, min_lr_ratio, warmup_starting_lr, warmup_starting_lr_ratio)
        check_number("num_warmup_epochs", num_warmup_epochs)
        check_number("num_cooldown_epochs", num_cooldown_epochs)
        return functools.partial(
            cls,
            total_num_epochs=TrainerPlaceholderValues.NUM_EPOCHS,
            num_update_steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
            total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
            k_decay=k_decay,
            lr_min=lr_min,
            min_lr_ratio=min_lr_ratio,
            num_warmup_epochs=num_warmup_epochs,
            warmup_starting_lr=warmup_starting_lr,
            warmup_starting_lr_ratio=warmup_starting_lr_ratio,
            num_cooldown_epochs=num_cooldown_epochs,
        )
