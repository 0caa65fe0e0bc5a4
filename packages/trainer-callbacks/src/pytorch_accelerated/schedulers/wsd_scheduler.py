"""Warmup-stable-decay (WSD) schedule, with a decay before each of one or several checkpoints."""

from __future__ import annotations

import copy
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from pytorch_accelerated.trainer import TrainerPlaceholderValues

from ._arguments import check_non_negative_int, check_number, check_positive_int, lr_end_points, resolve
from ._state_0161 import is_wsd_state_0161, wsd_settings_from_0161
from .scheduler_base import StatefulSchedulerBase

# How much of the way from lr_max to lr_min is left, at a fraction `progress` of a decay.
_DECAY_SHAPES = {
    "1-sqrt": lambda progress: 1 - math.sqrt(progress),
    "cosine": lambda progress: 0.5 * (1 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1 - progress,
}


class WSDLrScheduler(StatefulSchedulerBase):
    """Warmup-stable-decay: a linear warmup, then the initial lr held (stable), with a decay to
    ``lr_min`` before each checkpoint; stepped once per optimizer update.

    A checkpoint is a number of completed updates after which a model is worth keeping (save it
    when ``trainer.completed_update_steps`` is in :attr:`checkpoint_steps`). The last checkpoint is
    the end of the run. Each decay takes the last ``decay_phase_ratio`` of the updates since the
    previous checkpoint (at least one) and ends exactly at its checkpoint: the last update before
    the checkpoint uses ``lr_min``. After an intermediate checkpoint the lr goes straight back to
    the stable lr; after the last one it stays at ``lr_min``.

    In a decay of ``D`` updates, the ``j``-th update (``j = 1 .. D``) uses
    ``lr_min + (lr_max - lr_min) * f(j / D)``, with ``f(p)`` = ``1 - sqrt(p)`` for ``"1-sqrt"``
    (the default, which does best in https://arxiv.org/abs/2405.18392), ``(1 + cos(pi * p)) / 2``
    for ``"cosine"`` or ``1 - p`` for ``"linear"``. Warmup: the update that follows ``n`` completed
    updates uses ``start + (lr_max - start) * n / num_warmup_steps``.

    Args:
        optimizer: the optimizer whose param groups' ``lr`` is scheduled.
        total_steps: the number of optimizer updates in the run.
        num_warmup_steps: updates of linear warmup; they must end before the first decay starts.
            ``None``: 1% of ``total_steps`` (0.1.61's default), cut short where the first decay starts.
        decay_phase_ratio: the fraction of each checkpoint's period spent decaying, in (0, 1].
        lr_min: the lr reached at each checkpoint, the same for every group; 1e-6 unless
            ``min_lr_ratio`` is given.
        min_lr_ratio: that lr as a fraction of each group's initial lr (instead of ``lr_min``).
        warmup_starting_lr: the lr of the first warmup update; 1e-6 unless
            ``warmup_starting_lr_ratio`` is given.
        warmup_starting_lr_ratio: that lr as a fraction of each group's initial lr.
        decay_type: ``"1-sqrt"``, ``"cosine"`` or ``"linear"``.
        num_checkpoints: checkpoints spaced by doubling, ending at the end of the run: with 3,
            after 1/4, 1/2 and all of ``total_steps``. 1 unless ``checkpoint_fractions`` is given.
        checkpoint_fractions: the checkpoints as increasing fractions of ``total_steps``, the last
            1.0, e.g. ``(0.3, 0.6, 1.0)``; instead of ``num_checkpoints``.

    The checkpoints and decays can also be read as pytorch-accelerated 0.1.61 did:
    :meth:`get_checkpoint_steps`, :meth:`get_decay_info`, :meth:`get_phase_info`,
    :meth:`get_current_step`, :meth:`get_current_phase_info`; :meth:`load_state_dict` reads a
    state saved by 0.1.61.
    """

    DECAY_TYPES = tuple(_DECAY_SHAPES)

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        num_warmup_steps: int | None = 0,
        decay_phase_ratio: float = 0.1,
        lr_min: float | None = None,
        min_lr_ratio: float | None = None,
        warmup_starting_lr: float | None = None,
        warmup_starting_lr_ratio: float | None = None,
        decay_type: str = "1-sqrt",
        num_checkpoints: int | None = None,
        checkpoint_fractions: Sequence[float] | None = None,
    ):
        _check_settings(num_warmup_steps, decay_phase_ratio, decay_type)
        self.decay_type = decay_type
        self.lr_min, self.min_lr_ratio, self.warmup_starting_lr, self.warmup_starting_lr_ratio = (
            lr_end_points(lr_min, min_lr_ratio, warmup_starting_lr, warmup_starting_lr_ratio)
        )
        self._set_periods(
            total_steps, num_warmup_steps, decay_phase_ratio, num_checkpoints, checkpoint_fractions
        )
        super().__init__(optimizer, param_group_field="lr")
        self._check_lr_min_is_below_the_initial_lrs()

    @property
    def num_checkpoints(self) -> int:
        return len(self.checkpoint_steps)

    def get_updated_values(self, num_updates: int) -> list[float]:
        return [self._lr(num_updates, initial_lr) for initial_lr in self.base_values]

    def _lr(self, num_updates: int, lr_max: float) -> float:
        lr_min = resolve(self.lr_min, self.min_lr_ratio, lr_max)
        if num_updates >= self.total_steps:
            return lr_min
        if num_updates < self.num_warmup_steps:
            start = resolve(self.warmup_starting_lr, self.warmup_starting_lr_ratio, lr_max)
            return start + (lr_max - start) * num_updates / self.num_warmup_steps
        checkpoint, decay_length = next(
            (step, length)
            for step, length in zip(self.checkpoint_steps, self.decay_steps)
            if num_updates < step
        )
        decay_start = checkpoint - decay_length
        if num_updates < decay_start:
            return lr_max
        progress = (num_updates - decay_start + 1) / decay_length
        return lr_min + (lr_max - lr_min) * _DECAY_SHAPES[self.decay_type](progress)

    def _set_periods(
        self, total_steps, num_warmup_steps, decay_phase_ratio, num_checkpoints, checkpoint_fractions
    ) -> None:
        """The checkpoints, each one's decay, and the warmup, checked to end before the first decay."""
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.decay_phase_ratio = float(decay_phase_ratio)
        fractions = _checkpoint_fractions(num_checkpoints, checkpoint_fractions)
        self.checkpoint_steps = _checkpoint_steps(fractions, self.total_steps)
        self.decay_steps = _decay_lengths(self.checkpoint_steps, self.decay_phase_ratio)
        first_decay_start = self.checkpoint_steps[0] - self.decay_steps[0]
        if num_warmup_steps is None:
            num_warmup_steps = min(self.total_steps // 100, first_decay_start)
        if num_warmup_steps > first_decay_start:
            raise ValueError(
                f"num_warmup_steps ({num_warmup_steps}) runs into the decay before the first checkpoint, "
                f"which starts after {first_decay_start} updates (of {self.total_steps}): "
                "shorten the warmup, or use fewer checkpoints or a smaller decay_phase_ratio."
            )
        self.num_warmup_steps = num_warmup_steps

    def _check_lr_min_is_below_the_initial_lrs(self) -> None:
        for index, initial_lr in enumerate(self.base_values):
            if self.lr_min is not None and self.lr_min > initial_lr:
                raise ValueError(
                    f"lr_min ({self.lr_min}) is above the initial lr of param group {index} "
                    f"({initial_lr}): lr_min is a learning rate here. For a fraction of each group's "
                    "initial lr (what 0.1.61's WSDLrScheduler took as lr_min), pass min_lr_ratio."
                )

    # ------------------------------------------------------------------ 0.1.61's queries

    def get_checkpoint_steps(self) -> list[int]:
        """The checkpoints, as numbers of completed updates: :attr:`checkpoint_steps` as a list."""
        return list(self.checkpoint_steps)

    def get_decay_info(self) -> list[dict[str, int]]:
        """One dict per checkpoint: its period's ``period_start`` and ``period_end`` (the
        checkpoint), its ``decay_steps`` and ``pre_decay_step``, the updates completed when its decay
        starts (the state to continue a run from with a fresh stable phase), as in 0.1.61."""
        period_starts = (0, *self.checkpoint_steps[:-1])
        return [
            {"period_start": start, "period_end": end, "decay_steps": decay, "pre_decay_step": end - decay}
            for start, end, decay in zip(period_starts, self.checkpoint_steps, self.decay_steps)
        ]

    def get_phase_info(self, num_updates: int) -> dict[str, int]:
        """The period (a :meth:`get_decay_info` entry) that ``num_updates`` completed updates are
        in: the first whose checkpoint is not before it; the last one after the end.

        Args:
            num_updates: a number of completed updates.
        """
        periods = self.get_decay_info()
        return next((period for period in periods if period["period_end"] >= num_updates), periods[-1])

    def get_current_step(self) -> int:
        """The number of updates completed (0.1.61 returned one less: it counted from -1)."""
        return self.num_updates

    def get_current_phase_info(self) -> dict[str, int]:
        """The period of the current update count (see :meth:`get_phase_info`)."""
        return self.get_phase_info(self.num_updates)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`, or one saved by pytorch-accelerated 0.1.61: its
        settings are read as this scheduler's (its ``lr_min`` as ``min_lr_ratio``, its checkpoints
        spaced as here). 0.1.61 saved no update count, so this scheduler keeps its own, with a
        warning: call :meth:`step_update` to continue at another update.

        Args:
            state_dict: the state to restore.
        """
        if is_wsd_state_0161(state_dict):
            state_dict = self._state_from_0161(state_dict)
        super().load_state_dict(state_dict)

    def _state_from_0161(self, state_0161: dict[str, Any]) -> dict[str, Any]:
        settings = wsd_settings_from_0161(state_0161)
        converted = copy.copy(self)  # checked on a copy: a state refused changes nothing here
        converted._set_periods(
            settings["total_steps"],
            settings["num_warmup_steps"],
            settings["decay_phase_ratio"],
            settings["num_checkpoints"],
            None,
        )
        converted.decay_type = "1-sqrt"
        end_points = lr_end_points(None, settings["min_lr_ratio"], settings["warmup_starting_lr"], None)
        converted.lr_min, converted.min_lr_ratio, converted.warmup_starting_lr, _ = end_points
        converted.warmup_starting_lr_ratio = None
        warnings.warn(
            "This WSDLrScheduler state was saved by pytorch-accelerated 0.1.61, which did not save how many "
            f"updates were made: the schedule goes on from this scheduler's update {self.num_updates}, as "
            "0.1.61's did. To continue at the update the saved run had reached, call "
            "scheduler.step_update(num_updates) after loading.",
            stacklevel=3,
        )
        return converted.state_dict()

    @classmethod
    def create_scheduler_fn(
        cls,
        num_warmup_steps: int | None = None,
        decay_phase_ratio: float = 0.1,
        lr_min: float | None = None,
        min_lr_ratio: float | None = None,
        warmup_starting_lr: float | None = None,
        warmup_starting_lr_ratio: float | None = None,
        decay_type: str = "1-sqrt",
        num_checkpoints: int | None = None,
        checkpoint_fractions: Sequence[float] | None = None,
    ) -> functools.partial:
        """A ``create_scheduler_fn`` for ``Trainer.train``, sized on the number of updates the run
        makes (per process, ``max_num_train_steps`` included), filled in when training starts.
        Arguments as in the constructor, but the warmup defaults to 1% of the updates (``None``), as
        0.1.61's did."""
        _check_settings(num_warmup_steps, decay_phase_ratio, decay_type)
        lr_end_points(lr_min, min_lr_ratio, warmup_starting_lr, warmup_starting_lr_ratio)
        _checkpoint_fractions(num_checkpoints, checkpoint_fractions)
        return functools.partial(
            cls,
            total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
            num_warmup_steps=num_warmup_steps,
            decay_phase_ratio=decay_phase_ratio,
            lr_min=lr_min,
            min_lr_ratio=min_lr_ratio,
            warmup_starting_lr=warmup_starting_lr,
            warmup_starting_lr_ratio=warmup_starting_lr_ratio,
            decay_type=decay_type,
            num_checkpoints=num_checkpoints,
            checkpoint_fractions=checkpoint_fractions,
        )


def estimate_checkpoint_steps(total_steps: int, num_checkpoints: int = 3) -> list[int]:
    """Where ``num_checkpoints`` checkpoints fall in a run of ``total_steps`` updates: spaced by
    doubling, the last at the end (0.1.61's function, with the spacing its docstring described).

    Args:
        total_steps: the number of optimizer updates in the run.
        num_checkpoints: how many checkpoints.
    """
    check_positive_int("total_steps", total_steps)
    return list(_checkpoint_steps(_checkpoint_fractions(num_checkpoints, None), total_steps))


def _check_settings(num_warmup_steps, decay_phase_ratio, decay_type) -> None:
    if num_warmup_steps is not None:
        check_non_negative_int("num_warmup_steps", num_warmup_steps)
    check_number("decay_phase_ratio", decay_phase_ratio, maximum=1.0, allow_minimum=False)
    if decay_type not in _DECAY_SHAPES:
        raise ValueError(f"decay_type must be one of {list(_DECAY_SHAPES)}, got {decay_type!r}.")


def _checkpoint_fractions(num_checkpoints, checkpoint_fractions) -> tuple[float, ...]:
    if checkpoint_fractions is None:
        num_checkpoints = check_positive_int(
            "num_checkpoints", 1 if num_checkpoints is None else num_checkpoints
        )
        return tuple(2.0 ** (index + 1 - num_checkpoints) for index in range(num_checkpoints))
    if num_checkpoints is not None:
        raise ValueError("Pass num_checkpoints or checkpoint_fractions, not both.")
    fractions = tuple(
        check_number("checkpoint_fractions", value, allow_minimum=False) for value in checkpoint_fractions
    )
    if not fractions or fractions[-1] != 1.0 or any(a >= b for a, b in zip(fractions, fractions[1:])):
        raise ValueError(
            "checkpoint_fractions must be increasing fractions of the run ending with 1.0, got"
            f" {checkpoint_fractions!r}."
        )
    return fractions


def _decay_lengths(checkpoint_steps: tuple[int, ...], decay_phase_ratio: float) -> tuple[int, ...]:
    """Each checkpoint's decay: the last ``decay_phase_ratio`` of its period, at least one update."""
    periods = zip((0, *checkpoint_steps[:-1]), checkpoint_steps)
    return tuple(max(1, round(decay_phase_ratio * (end - start))) for start, end in periods)


def _checkpoint_steps(fractions: tuple[float, ...], total_steps: int) -> tuple[int, ...]:
    steps = tuple(round(fraction * total_steps) for fraction in fractions)
    if steps[0] < 1 or any(a >= b for a, b in zip(steps, steps[1:])):
        raise ValueError(
            f"{len(fractions)} checkpoints at fractions {list(fractions)} of {total_steps} updates fall on"
            f" updates {list(steps)}: each must come at least one update after the previous one (or the"
            " start). Use fewer checkpoints or a longer run."
        )
    return steps
