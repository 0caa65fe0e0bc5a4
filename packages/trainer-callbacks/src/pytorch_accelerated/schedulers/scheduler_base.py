"""The base class for schedulers that step once per optimizer update."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch

from ._arguments import check_non_negative_int

# pytorch-accelerated 0.1.61's stateless base class is not kept: the error says what to write instead.
SCHEDULER_BASE_NOT_KEPT = (
    "subclass StatefulSchedulerBase, which counts the updates itself and passes "
    "get_updated_values(num_updates) the number of updates completed; a stateless scheduler (timm's) "
    "is stepped from a Trainer subclass whose scheduler_step() calls "
    "self.scheduler.step_update(num_updates=self.completed_update_steps)"
)


def __getattr__(name: str):
    if name == "SchedulerBase":
        raise ImportError(
            f"{__name__}.SchedulerBase (pytorch-accelerated 0.1.61) is not kept: {SCHEDULER_BASE_NOT_KEPT}. "
            "See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StatefulSchedulerBase(ABC):
    """Schedules one field of every optimizer param group (``"lr"`` by default); the Trainer calls
    :meth:`step` once per optimizer update.

    Subclasses implement :meth:`get_updated_values`. They set their own attributes first, then call
    ``super().__init__``, which records each group's initial value in :attr:`base_values` and sets
    the value for the first update. The initial value is also kept in the group as
    ``initial_<field>`` (e.g. ``initial_lr``); a group that already has one (from an earlier
    scheduler on this optimizer) keeps it, as with torch's schedulers.

    :meth:`state_dict` holds every attribute except the optimizer (subclasses keep them plain data:
    numbers, strings, ``None``, lists and tuples): the update count and the schedule's settings.
    :meth:`load_state_dict` restores them and sets the current value, so that a resumed run
    continues the schedule where it stopped.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, param_group_field: str = "lr"):
        self.optimizer = optimizer
        self.param_group_field = param_group_field
        self.num_updates = 0
        self.base_values = self._record_initial_values()
        self.last_values: list[float] = []
        self._apply_values()

    @property
    def initial_field(self) -> str:
        """The param-group key holding each group's initial value, e.g. ``"initial_lr"``."""
        return f"initial_{self.param_group_field}"

    @abstractmethod
    def get_updated_values(self, num_updates: int) -> float | Sequence[float]:
        """The value for the update that follows ``num_updates`` completed updates: one number
        for every param group, or one per group (in ``optimizer.param_groups`` order)."""

    def step(self) -> None:
        """Count one optimizer update and set the value for the next one."""
        self.num_updates += 1
        self._apply_values()

    def step_update(self, num_updates: int) -> None:
        """Set the value for the update that follows ``num_updates`` completed updates, and count
        from there (0.1.61's and timm's call, for a loop that counts the updates itself).

        Args:
            num_updates: the number of optimizer updates completed so far.
        """
        self.num_updates = check_non_negative_int("num_updates", num_updates)
        self._apply_values()

    def get_last_values(self) -> list[float]:
        """The values last set, one per param group."""
        return list(self.last_values)

    def get_last_lr(self) -> list[float]:
        """The same as :meth:`get_last_values`, under the name torch's schedulers use."""
        return self.get_last_values()

    def state_dict(self) -> dict[str, Any]:
        """The update count and the schedule's settings, as plain data."""
        return copy.deepcopy({key: value for key, value in vars(self).items() if key != "optimizer"})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (of a scheduler of the same kind, over as many
        param groups) and set the current value on the optimizer."""
        self._check_state(state_dict)
        vars(self).update(copy.deepcopy(state_dict))
        for group, initial_value in zip(self.optimizer.param_groups, self.base_values):
            group[self.initial_field] = initial_value
        self._apply_values()

    def _record_initial_values(self) -> list[float]:
        for index, group in enumerate(self.optimizer.param_groups):
            if self.param_group_field not in group:
                raise KeyError(
                    f"optimizer.param_groups[{index}] has no {self.param_group_field!r} to schedule."
                )
            group.setdefault(self.initial_field, group[self.param_group_field])
        return [float(group[self.initial_field]) for group in self.optimizer.param_groups]

    def _apply_values(self) -> None:
        groups = self.optimizer.param_groups
        values = self.get_updated_values(self.num_updates)
        if isinstance(values, Real):
            values = [values] * len(groups)
        if len(values) != len(groups):
            raise ValueError(
                f"{type(self).__name__}.get_updated_values returned {len(values)} values "
                f"for {len(groups)} param groups."
            )
        self.last_values = [float(value) for value in values]
        for group, value in zip(groups, self.last_values):
            group[self.param_group_field] = value

    def _check_state(self, state_dict: dict[str, Any]) -> None:
        expected_keys = set(self.state_dict())
        if set(state_dict) != expected_keys:
            raise ValueError(
                f"This state was not saved by a {type(self).__name__}: its keys {sorted(state_dict)} "
                f"differ from {sorted(expected_keys)}."
            )
        if state_dict["param_group_field"] != self.param_group_field:
            raise ValueError(
                f"This state schedules {state_dict['param_group_field']!r}, this scheduler"
                f" {self.param_group_field!r}."
            )
        num_groups = len(self.optimizer.param_groups)
        if len(state_dict["base_values"]) != num_groups:
            raise ValueError(
                f"This state is for {len(state_dict['base_values'])} param groups; the optimizer has"
                f" {num_groups}."
            )
