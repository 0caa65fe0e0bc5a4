"""Where a run's metrics live: the :class:`RunHistory` interface, its in-memory default, and the
:class:`MetricRecord` each value is recorded as (its update step, epoch and evaluation)."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, NamedTuple

#: ``MetricRecord.evaluation`` of the values recorded by the evaluation after each training epoch.
VALIDATION = "validation"
#: ``MetricRecord.evaluation`` of an ``evaluate()`` run under no metric prefix.
EVALUATE = "evaluate"


@dataclass(frozen=True)
class MetricRecord:
    """One recorded value and where in the run it was recorded.

    ``step`` is the number of completed optimizer updates it belongs to (``trainer.completed_update_steps``
    when it was recorded, unless the writer named the update itself), ``None`` where no trainer was
    bound to the history (or for values of a saved history that predates steps). ``epoch`` is the
    history's ``current_epoch`` then. ``evaluation`` names the evaluation that produced it:
    ``"validation"`` (the evaluation after each training epoch), the metric prefix of an
    ``evaluate()`` without its trailing ``_`` (``"test"``, ``"step"``, ``"ema"``), ``"evaluate"``
    for an ``evaluate()`` under no prefix, ``None`` for a value recorded outside any evaluation.
    """

    name: str
    value: Any
    step: int | None
    epoch: int
    evaluation: str | None = None


class _Place(NamedTuple):
    step: int | None
    epoch: int
    evaluation: str | None


class RunHistory(ABC):
    """Records metric values, each with its place in the run. Implement it to send metrics somewhere else.

    A subclass implements the per-name storage (:meth:`write_metric`, :meth:`get_metric_values`, ...);
    the base class keeps each value's place (:meth:`get_metric_records`) and tells the listeners
    (:meth:`add_listener`) of each new record. Metric names written inside :meth:`metric_prefix`
    get the prefix prepended, which lets a callback evaluate another model (an EMA copy, say) and
    record ``ema_eval_loss_epoch`` without the trainer knowing.

    The trainer binds itself once when ``train()`` or ``evaluate()`` starts (:meth:`bind_step_source`);
    the step is read only when a value is recorded, so a history adds nothing to a step that records
    nothing.
    """

    def __init__(self):
        self._prefixes: list[str] = []
        self._evaluations: list[str] = []
        self._listeners: list[Callable[[MetricRecord], None]] = []
        self._step_source: Callable[[], int] | None = None
        self._places: defaultdict[str, list[_Place]] = defaultdict(list)

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

    # ------------------------------------------------------------------ recording

    def update_metric(self, metric_name: str, metric_value, *, step: int | None = None) -> None:
        """Record a value, under the active prefixes if any, at the current update step (or at
        ``step``, for a value that belongs to an earlier update: norms read in a batch, say)."""
        record = MetricRecord(
            "".join(self._prefixes) + metric_name,
            metric_value,
            step if step is not None else self._current_step(),
            self.current_epoch,
            self._evaluations[-1] if self._evaluations else None,
        )
        self.write_record(record)
        for listener in self._listeners:
            listener(record)

    def write_record(self, record: MetricRecord) -> None:
        """Store one record. By default the value goes to :meth:`write_metric` and its place is kept
        here; a history that stores places itself overrides this and :meth:`get_metric_records`."""
        self.write_metric(record.name, record.value)
        self._places[record.name].append(_Place(record.step, record.epoch, record.evaluation))

    def get_metric_records(self, metric_name: str) -> list[MetricRecord]:
        """Every value of ``metric_name`` with its place, oldest first (empty if none)."""
        values = self.get_metric_values(metric_name)
        places = self._places.get(metric_name, [])
        # after a reset() the newest places are those of the values kept; values loaded from a
        # history saved without places have none
        places = (
            places[len(places) - len(values) :]
            if len(places) >= len(values)
            else [None] * (len(values) - len(places)) + places
        )
        return [
            MetricRecord(metric_name, value, *(place or (None, 0, None)))
            for value, place in zip(values, places)
        ]

    def add_listener(self, listener: Callable[[MetricRecord], None]) -> None:
        """Call ``listener(record)`` with every record written from now on (not with loaded ones)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[MetricRecord], None]) -> None:
        """Stop calling ``listener``; nothing happens if it was not added."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def bind_step_source(self, step_source: Callable[[], int] | None) -> None:
        """Read the update step of each new record from ``step_source()`` (the trainer binds
        ``lambda: trainer.completed_update_steps``); ``None`` unbinds it."""
        self._step_source = step_source

    @contextmanager
    def metric_prefix(self, prefix: str) -> Iterator[None]:
        """Within this block, every metric written is recorded as ``prefix + name``."""
        self._prefixes.append(prefix)
        try:
            yield
        finally:
            self._prefixes.pop()

    @contextmanager
    def evaluation(self, unprefixed_name: str = EVALUATE) -> Iterator[None]:
        """Within this block, records are marked as produced by one evaluation: named after the
        active metric prefix (``"test_"`` -> ``"test"``), or ``unprefixed_name`` under none."""
        self._evaluations.append("".join(self._prefixes).rstrip("_") or unprefixed_name)
        try:
            yield
        finally:
            self._evaluations.pop()

    def _current_step(self) -> int | None:
        return self._step_source() if self._step_source is not None else None

    # ------------------------------------------------------------------ saving

    def state_dict(self) -> dict[str, Any]:
        """The history as plain data, for checkpoints."""
        records = {name: self.get_metric_records(name) for name in self.get_metric_names()}
        return {
            "current_epoch": self.current_epoch,
            "metrics": {name: [record.value for record in rows] for name, rows in records.items()},
            "places": {
                name: [[r.step, r.epoch, r.evaluation] for r in rows] for name, rows in records.items()
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Replace the history with one returned by :meth:`state_dict` (also one saved before
        values had places: their step is then ``None``)."""
        self.reset()
        places = state_dict.get("places", {})
        for name, values in state_dict["metrics"].items():
            name_places = places.get(name) or [(None, 0, None)] * len(values)
            for value, (step, epoch, evaluation) in zip(values, name_places):
                self.write_record(MetricRecord(name, value, step, epoch, evaluation))
        for _ in range(state_dict["current_epoch"] - 1):
            self.increment_epoch()


class InMemoryRunHistory(RunHistory):
    """The default run history: records kept in a dict of lists in memory."""

    def __init__(self):
        super().__init__()
        self._records: defaultdict[str, list[MetricRecord]] = defaultdict(list)
        self._current_epoch = 1

    def get_metric_names(self) -> list[str]:
        return list(self._records)

    def get_metric_values(self, metric_name: str) -> list:
        return [record.value for record in self._records.get(metric_name, [])]

    def get_metric_records(self, metric_name: str) -> list[MetricRecord]:
        return list(self._records.get(metric_name, []))

    def get_latest_metric(self, metric_name: str):
        records = self._records.get(metric_name)
        if not records:
            raise KeyError(
                f"No value recorded for metric {metric_name!r}; recorded metrics: {sorted(self._records)}"
            )
        return records[-1].value

    def write_metric(self, metric_name: str, metric_value) -> None:
        self.write_record(MetricRecord(metric_name, metric_value, self._current_step(), self._current_epoch))

    def write_record(self, record: MetricRecord) -> None:
        self._records[record.name].append(replace(record, value=copy.deepcopy(record.value)))

    @property
    def current_epoch(self) -> int:
        return self._current_epoch

    def increment_epoch(self) -> None:
        self._current_epoch += 1

    def reset(self) -> None:
        self._records = defaultdict(list)
        self._current_epoch = 1
