"""Where a run's metrics live: the :class:`RunHistory` interface and its in-memory default."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Iterator


class RunHistory(ABC):
    """Records metric values per epoch. Implement it to send metrics somewhere else.

    Metric names written inside :meth:`metric_prefix` get the prefix prepended, which lets a
    callback evaluate another model (an EMA copy, say) and record ``ema_eval_loss_epoch``
    without the trainer knowing.
    """

    def __init__(self):
        self._prefixes: list[str] = []

    @abstractmethod
    def get_metric_names(self) -> list[str]:
        """The names of every metric recorded so far."""

    @abstractmethod
    def get_metric_values(self, metric_name: str) -> list:
        """Every value recorded for ``metric_name``, oldest first (empty if none)."""

    @abstractmethod
    def get_latest_metric(self, metric_name: str):
        """The most recent value of ``metric_name``; raises KeyError naming the known metrics if none."""

    @abstractmethod
    def write_metric(self, metric_name: str, metric_value) -> None:
        """Store one value under the final (already prefixed) name."""

    @property
    @abstractmethod
    def current_epoch(self) -> int:
        """The epoch being run, starting at 1."""

    @abstractmethod
    def increment_epoch(self) -> None:
        """Move to the next epoch; the trainer calls this after each training epoch."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every metric and go back to epoch 1."""

    def update_metric(self, metric_name: str, metric_value) -> None:
        """Record a value, under the active prefixes if any."""
        self.write_metric("".join(self._prefixes) + metric_name, metric_value)

    @contextmanager
    def metric_prefix(self, prefix: str) -> Iterator[None]:
        """Within this block, every metric written is recorded as ``prefix + name``."""
        self._prefixes.append(prefix)
        try:
            yield
        finally:
            self._prefixes.pop()

    def state_dict(self) -> dict[str, Any]:
        """The history as plain data, for checkpoints."""
        return {
            "current_epoch": self.current_epoch,
            "metrics": {name: list(self.get_metric_values(name)) for name in self.get_metric_names()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Replace the history with one returned by :meth:`state_dict`."""
        self.reset()
        for name, values in state_dict["metrics"].items():
            for value in values:
                self.write_metric(name, value)
        for _ in range(state_dict["current_epoch"] - 1):
            self.increment_epoch()


class InMemoryRunHistory(RunHistory):
    """The default run history: metrics kept in a dict of lists in memory."""

    def __init__(self):
        super().__init__()
        self._metrics: defaultdict[str, list] = defaultdict(list)
        self._current_epoch = 1

    def get_metric_names(self) -> list[str]:
        return list(self._metrics)

    def get_metric_values(self, metric_name: str) -> list:
        return list(self._metrics.get(metric_name, []))

    def get_latest_metric(self, metric_name: str):
        values = self._metrics.get(metric_name)
        if not values:
            raise KeyError(
                f"No value recorded for metric {metric_name!r}; recorded metrics: {sorted(self._metrics)}"
            )
        return values[-1]

    def write_metric(self, metric_name: str, metric_value) -> None:
        self._metrics[metric_name].append(copy.deepcopy(metric_value))

    @property
    def current_epoch(self) -> int:
        return self._current_epoch

    def increment_epoch(self) -> None:
        self._current_epoch += 1

    def reset(self) -> None:
        self._metrics = defaultdict(list)
        self._current_epoch = 1
