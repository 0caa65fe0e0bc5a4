"""The base class of the loggers, and the callbacks that write a run's metrics to a CSV or a JSON Lines
file."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import warnings
import weakref
from numbers import Real
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from pytorch_accelerated.trainer import TrainerCallback, list_training_states

from .run_folders import IfExists, RunPath

#: The name under which per-step training losses are logged.
STEP_LOSS_METRIC = "train_loss_step"
#: The name under which the trainer records each training epoch's loss, once its updates are done.
EPOCH_LOSS_METRIC = "train_loss_epoch"


def as_number(value) -> int | float | None:
    """A metric value as a Python number, or None when it is not a scalar (such values are not logged)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if isinstance(value, Real):
        return value.item() if hasattr(value, "item") else value  # numpy scalars
    return None


def describe_value(value) -> str:
    """What a value that is not a number is, in words: ``a tensor of shape (3, 8, 8)``."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__name__.lower().replace('ndarray', 'array')} of shape {tuple(shape)}"
    return f"a {type(value).__name__}"


def metric_counts(run_history) -> dict[str, int]:
    """How many values each metric of ``run_history`` holds, by name."""
    return {name: len(run_history.get_metric_values(name)) for name in run_history.get_metric_names()}


def auto_log_every_n_steps(run_config) -> int:
    """``log_every_n_steps="auto"``: Lightning's 50 updates, fewer for a short run so that it gets
    about 20 points (64 updates: every 3rd)."""
    total = run_config.num_training_steps if run_config is not None else None
    return max(1, min(AUTO_LOG_EVERY_N_STEPS, (total or 0) // 20)) if total else AUTO_LOG_EVERY_N_STEPS


def learning_rates(optimizer) -> dict[str, float]:
    """The learning rate of each parameter group: ``lr`` for one group, ``lr_group_<i>`` for several."""
    groups = optimizer.param_groups
    names = ["lr"] if len(groups) == 1 else [f"lr_group_{index}" for index in range(len(groups))]
    return {name: float(group["lr"]) for name, group in zip(names, groups)}


def note_weights_from(trainer, *, epoch: int, step: int) -> None:
    """Say that the model now holds the weights of ``epoch`` (its update ``step``), not those of the
    last epoch trained: the loggers label the values of later ``evaluate()`` calls with them, until
    the next training run. :class:`SaveBestModelCallback` calls it when it loads the best back.

    Args:
        trainer: the trainer whose model was loaded.
        epoch: the epoch that ended with these weights.
        step: the update step that ended with them.
    """
    _WEIGHTS_FROM[trainer.run_history] = (epoch, step)


class _Pending(NamedTuple):
    """A record received from the run history and not written yet."""

    name: str
    value: Any  # a tensor stays on its device until the batch is read
    step: int | None
    epoch: int
    per_step: bool


#: ``log_every_n_steps="auto"``'s cadence for a long run (Lightning's default).
AUTO_LOG_EVERY_N_STEPS = 50

# per run history: the update at which some logger last recorded each per-step value it records itself
# (train_loss_step, lr), so that several loggers record each once
_RECORDED_AT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# per run history: the (epoch, step) of the weights in the model, when a callback loaded other weights back
_WEIGHTS_FROM: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class MetricsLoggerCallback(TrainerCallback):
    """Base class of the loggers: receives every value the run history records, at its update
    step, and hands them to :meth:`write` in rows; a subclass writes them.

    The logger listens to ``trainer.run_history`` (:meth:`RunHistory.add_listener`) during each
    training run and each ``evaluate()`` outside training, on the main process only. Each value
    is logged at the update step it was recorded at (``MetricRecord.step``). Values recorded at
    one update step (and epoch) share a row, unless a name comes twice.

    With ``log_every_n_steps=n`` (``"auto"``: :func:`auto_log_every_n_steps`), the values recorded
    during the updates (``lr``, gradient norms, a callback's per-step values) are logged at every
    n-th update only, as Lightning's ``log_every_n_steps`` does; the logger then also records, at
    those updates, ``train_loss_step`` (the update's training loss: the mean over its accumulation
    window, on each process's own batches, kept on the device and read once) and, with
    ``log_learning_rate=True`` and no :class:`LearningRateMonitorCallback` in the run, the learning
    rate (``lr``). A logged update's row is written at the next update (when every value of its
    step has come) or at the epoch's end, which it then shares with the epoch's values. Without
    ``log_every_n_steps``, every value is logged, at the end of its epoch. Rows are also written at
    the end of a run stopped early and of each ``evaluate()`` called outside training.

    Values stay as they were recorded (tensors on their device) until a row is written; then the
    tensors among them are read in one transfer per device, so logging adds no host-device
    synchronisation per step. ``write(metrics, *, epoch, step, per_step)`` gets the numbers,
    the row's ``epoch`` (for values recorded by an ``evaluate()`` outside training, the last epoch
    trained, 0 before any, or the epoch whose weights were loaded back: :func:`note_weights_from`)
    and ``step``, and ``per_step``: True for a row of values recorded during the updates only.
    :meth:`write_non_scalars` gets the other values (images, histograms, text); by default they are
    skipped with one warning per name.

    Subclasses implement :meth:`write`, and :meth:`open` / :meth:`close` if they hold a file or a
    writer: it is opened at the start of each training run (and of each ``evaluate()`` outside
    training) and closed at its end, also when the run was stopped. A resumed run opens it when
    it first writes, after :meth:`load_state_dict` has restored the values not written yet when
    the state was saved.

    Args:
        log_every_n_steps: log the values recorded during the updates at every n-th update (and the
            training loss and learning rate then); ``"auto"``: about 20 points in a short run, every 50
            updates in a long one; None: every value, at its epoch's end.
        log_learning_rate: with ``log_every_n_steps``, record the learning rate at the logged updates.
    """

    def __init__(
        self, log_every_n_steps: int | Literal["auto"] | None = None, log_learning_rate: bool = True
    ):
        if log_every_n_steps != "auto" and log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, 'auto' or None, got {log_every_n_steps}.")
        self.log_every_n_steps = log_every_n_steps
        self.log_learning_rate = log_learning_rate
        self._every: int | None = None  # log_every_n_steps for this run ("auto" resolved)
        self._records_lr = False
        self._pending: list[_Pending] = []
        self._last_logged_epoch = 0
        self._in_training_run = False
        self._in_updates = (
            False  # from a train step's end to the epoch's train_loss_epoch: values are per-step
        )
        self._row_due = False  # a logged update's row waits for the next update
        self._history = None  # the run history listened to
        self._is_open = False
        self._window_loss: torch.Tensor | None = None
        self._window_batches = 0
        self._skipped: set[str] = set()  # the names of values skipped with a warning

    # ------------------------------------------------------------------ for subclasses

    def open(self, trainer) -> None:
        """Get ready to write (main process only)."""

    def write(self, metrics: dict[str, int | float], *, epoch: int, step: int, per_step: bool) -> None:
        """Write one row of metrics (main process only)."""
        raise NotImplementedError

    def write_non_scalars(self, values: dict[str, Any], *, epoch: int, step: int) -> None:
        """Log the row's values that are not numbers (a tensor image, a vector, a string); by default
        each name is skipped with one warning (main process only)."""
        for name, value in values.items():
            self.skip_with_warning(name, value, "it logs numbers only")

    def skip_with_warning(self, name: str, value, why: str) -> None:
        """Warn, once per name, that ``name`` is not logged, and why."""
        if name in self._skipped:
            return
        self._skipped.add(name)
        warnings.warn(
            f"{type(self).__name__} does not log {name!r}, {describe_value(value)}: {why}. "
            "TrackerCallback('tensorboard') logs images and histograms; "
            "TrackerCallback.get_tracker(name, unwrap=True) reaches a tracker's own API.",
            stacklevel=3,
        )

    def close(self) -> None:
        """Release what :meth:`open` acquired."""

    # ------------------------------------------------------------------ events

    def recorded_metric_names(self, trainer):
        if self.log_every_n_steps is None:
            return []
        records_lr = self.log_learning_rate and not _has_learning_rate_monitor(trainer)
        return [STEP_LOSS_METRIC, *(learning_rates(trainer.optimizer) if records_lr else ())]

    def on_training_run_start(self, trainer, **kwargs):
        self._in_training_run = True
        self._window_loss, self._window_batches, self._row_due = None, 0, False
        every = self.log_every_n_steps
        self._every = auto_log_every_n_steps(trainer.run_config) if every == "auto" else every
        self._records_lr = self.log_learning_rate and not _has_learning_rate_monitor(trainer)
        _RECORDED_AT.pop(trainer.run_history, None)  # a new run counts its updates from 0 again
        _WEIGHTS_FROM.pop(trainer.run_history, None)
        self._start_logging(trainer, open_now=trainer.resumed_from is None)

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self._in_updates = True
        n = self._every
        if n is not None and (trainer.completed_update_steps + 1) % n == 0:
            update = trainer.completed_update_steps + 1
            if self._window_batches == 0 and self._records_lr:
                self._record_once(trainer, learning_rates(trainer.optimizer), update)
            loss = batch_output["loss"].detach().float()
            self._window_loss = loss if self._window_loss is None else self._window_loss + loss
            self._window_batches += 1

    def on_optimizer_step_end(self, trainer, **kwargs):
        step = trainer.completed_update_steps
        if self._window_batches:
            if _RECORDED_AT.get(trainer.run_history, {}).get(STEP_LOSS_METRIC) != step:
                loss = (self._window_loss / self._window_batches).item()  # the interval's one read
                self._record_once(trainer, {STEP_LOSS_METRIC: loss}, step)
            self._window_loss, self._window_batches = None, 0
        if self._row_due:  # every value of the earlier updates has come: their rows are whole
            self._row_due = False
            self._write_pending(trainer, before_step=step)
        self._row_due = self._every is not None and step % self._every == 0

    def on_training_run_epoch_end(self, trainer, **kwargs):
        self._row_due = False
        self._write_pending(trainer)

    def on_stop_training_error(self, trainer, **kwargs):
        # The stop may have come before this callback's on_training_run_epoch_end ran.
        self._write_pending(trainer)
        if self._in_training_run:
            self._stop_listening()
        self._close()

    def on_training_run_end(self, trainer, **kwargs):
        self._write_pending(trainer)
        self._in_training_run = False
        self._stop_listening()
        self._close()

    def on_training_run_error(self, trainer, error, **kwargs):
        # what was recorded before the error is logged; an evaluate() after a caught error logs on its own
        self._write_pending(trainer)
        self._in_training_run = False
        self._stop_listening()

    def on_evaluation_run_start(self, trainer, **kwargs):
        if not self._in_training_run:
            self._start_logging(trainer)

    def on_evaluation_run_end(self, trainer, **kwargs):
        if not self._in_training_run:
            self._write_pending(trainer)
            self._stop_listening()
            self._close()

    # ------------------------------------------------------------------ helpers

    def _start_logging(self, trainer, open_now: bool = True) -> None:
        if trainer.is_world_process_zero:
            self._stop_listening()
            if open_now:
                self._open(trainer)  # first: a file refused leaves no listener behind
            self._history = trainer.run_history
            self._history.add_listener(self._receive)

    def _stop_listening(self) -> None:
        if self._history is not None:
            self._history.remove_listener(self._receive)
            self._history = None

    def _receive(self, record) -> None:
        """The run history's listener: keeps the record until its row is written."""
        if record.name == EPOCH_LOSS_METRIC:
            self._in_updates = False  # the trainer records it once the epoch's updates are done
        per_step = self._in_updates and self._in_training_run and record.evaluation is None
        if per_step and self._every is not None and record.step is not None and record.step % self._every:
            return  # as Lightning's log_every_n_steps: values of the updates at every n-th update only
        epoch, step = record.epoch, record.step
        if not self._in_training_run:
            epoch, step = _WEIGHTS_FROM.get(self._history, (self._last_logged_epoch, step))
        self._pending.append(_Pending(record.name, record.value, step, epoch, per_step))

    def _record_once(self, trainer, values: dict[str, float], step: int) -> None:
        """Record ``values`` at update ``step``, those that no other logger recorded there already."""
        history = trainer.run_history
        recorded = _RECORDED_AT.setdefault(history, {})
        for name, value in values.items():
            if recorded.get(name) != step:
                recorded[name] = step
                history.update_metric(name, value, step=step)

    def _write_pending(self, trainer, before_step: int | None = None) -> None:
        """Write the values received (those of updates before ``before_step``, if given), in rows by step."""
        if not self._pending or not trainer.is_world_process_zero:
            self._pending = []
            return
        if before_step is None:
            pending, self._pending = self._pending, []
        else:
            pending = [p for p in self._pending if p.step is not None and p.step < before_step]
            self._pending = [p for p in self._pending if p.step is None or p.step >= before_step]
        if self._in_training_run and pending:
            self._last_logged_epoch = max(self._last_logged_epoch, *(p.epoch for p in pending))
        for (step, epoch), row in _rows(pending):
            self._open(trainer)
            step = step if step is not None else trainer.completed_update_steps
            numbers = {name: value for name, value in row.items() if not isinstance(value, _NonScalar)}
            if numbers:
                self.write(numbers, epoch=epoch, step=step, per_step=row.per_step)
            others = {name: value.value for name, value in row.items() if isinstance(value, _NonScalar)}
            if others:
                self.write_non_scalars(others, epoch=epoch, step=step)

    def _open(self, trainer) -> None:
        if not self._is_open:
            self.open(trainer)
            self._is_open = True

    def _close(self) -> None:
        if self._is_open:
            self._is_open = False
            self.close()

    def state_dict(self):
        # values received and not written yet (a state saved between two rows) go on with the state
        pending = [
            [p.name, number, p.step, p.epoch, p.per_step]
            for p, number in zip(self._pending, read_numbers([p.value for p in self._pending]))
            if number is not None
        ]
        return {"pending": pending, "last_logged_epoch": self._last_logged_epoch}

    def load_state_dict(self, state_dict):
        # a state saved before loggers listened to the record stream has "logged_counts" instead: nothing
        # pending
        self._pending = [_Pending(*row) for row in state_dict.get("pending", [])]
        self._last_logged_epoch = state_dict["last_logged_epoch"]


class _NonScalar(NamedTuple):
    """A value of a row that is not a number, as it was recorded."""

    value: Any


class _Row(dict):
    """The values of one row, by name; ``per_step`` while each of them was recorded during the updates."""

    per_step: bool = True


def _rows(pending: list[_Pending]) -> list[tuple[tuple, _Row]]:
    """The records as rows, one per (update step, epoch) unless a name comes twice, in step order;
    numbers read in one transfer per device, other values wrapped in :class:`_NonScalar`."""
    rows: list[tuple[tuple, _Row]] = []
    open_rows: dict[tuple, _Row] = {}
    for record, number in zip(pending, read_numbers([p.value for p in pending])):
        key = (record.step, record.epoch)
        row = open_rows.get(key)
        if row is None or record.name in row:
            row = open_rows[key] = _Row()
            rows.append((key, row))
        row[record.name] = number if number is not None else _NonScalar(record.value)
        row.per_step = row.per_step and record.per_step
    return sorted(rows, key=lambda item: _step_order(item[0][0]))


def _has_learning_rate_monitor(trainer) -> bool:
    from .monitors import LearningRateMonitorCallback  # it records the learning rate itself

    return trainer.callback_handler.get_callback(LearningRateMonitorCallback) is not None


def _step_order(step: int | None) -> float:
    return float("inf") if step is None else step


def read_numbers(values: list) -> list[int | float | None]:
    """``values`` as Python numbers (None for a non-scalar), reading the tensors among them from
    their device in one transfer per device and dtype rather than one per value."""
    numbers = [None if isinstance(value, torch.Tensor) else as_number(value) for value in values]
    batches: dict[tuple, list[int]] = {}
    for index, value in enumerate(values):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            batches.setdefault((value.device, value.dtype), []).append(index)
    for indices in batches.values():
        read = torch.stack([values[i].detach().reshape(()) for i in indices]).tolist()
        for index, number in zip(indices, read):
            numbers[index] = number
    return numbers


class _FileLoggerCallback(MetricsLoggerCallback):
    """A logger that writes one file of records, in a fresh ``version_<n>`` folder by default, or
    by an explicit policy into a file that exists already (``run_folders.py``: the rule). A resumed
    run continues the file with the records it held when the state was saved (records written
    after that, by the run that was interrupted, are written again)."""

    def __init__(
        self,
        path: str | os.PathLike,
        log_every_n_steps: int | Literal["auto"] | None,
        if_exists: IfExists,
        log_learning_rate: bool = True,
    ):
        super().__init__(log_every_n_steps, log_learning_rate)
        self._run_path = RunPath(path, if_exists, owner=type(self).__name__)
        self.if_exists = if_exists
        self._file = None
        # Once this callback has started the file, its later runs (and evaluations) append to it.
        self._started_file = False
        self._num_records = 0
        self._records_to_keep: int | None = None  # set by a resumed run's load_state_dict

    @property
    def path(self) -> Path:
        """The file this logger writes: ``folder/version_<n>/name`` once its first run has started
        (with the default ``if_exists="new_version"``), else the path it was given."""
        return self._run_path.path

    def on_training_run_start(self, trainer, **kwargs):
        self._run_path.start_run(trainer)
        super().on_training_run_start(trainer, **kwargs)

    def open(self, trainer) -> None:
        # an evaluate() before any training: the main process alone
        self._run_path.choose(trainer, agree=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append = self._started_file or self.if_exists == "append" or self._records_to_keep is not None
        if append:
            _cut_torn_last_record(self.path)
        if self._records_to_keep is not None:
            self._back_up_later_records(self._records_to_keep, trainer.resumed_from)
            self._keep_first_records(self._records_to_keep)
            self._records_to_keep, self._started_file = None, True
        elif not append and self._run_path.refusal() is not None:
            raise FileExistsError(self._run_path.refusal())
        self._num_records = self._count_records() if append else 0
        self._file = RecordFile(self.path, append, owner=type(self).__name__)
        self._started_file = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_training_run_error(self, trainer, error, **kwargs):
        # as at a run's end: the file closed, and an evaluate() after the caught error logs to it
        super().on_training_run_error(trainer, error, **kwargs)
        self._close()

    def state_dict(self):
        # loaded but not applied yet (the file opens at the first write): still the loaded state
        pending = self._records_to_keep is not None
        return {
            **super().state_dict(),
            **self._run_path.state_dict(),
            "num_records": self._records_to_keep if pending else self._num_records,
        }

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._run_path.load_state_dict(state_dict)
        self._records_to_keep = state_dict["num_records"]

    def _back_up_later_records(self, count: int, resumed_from) -> None:
        """Copy the file aside (``log.csv.before-resume-<n>``) when it holds records written after
        the state a run resumes from and that state is not the newest beside it (a run branched from
        an older state), since those records are cut off next. Resuming from the newest state (an
        interrupted run going on) writes the cut records again, identically: no copy then."""
        found = self._count_records()
        if found <= count or not _branches_off(resumed_from):
            return
        number = 1
        while (backup := self.path.with_name(f"{self.path.name}.before-resume-{number}")).exists():
            number += 1
        try:
            shutil.copy2(self.path, backup)
        except OSError as error:
            # a partial copy is no backup, and would push the next one to <n+1>
            backup.unlink(missing_ok=True)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                message = (
                    f"No space left on device backing up {self.path} to {backup} before cutting it back to"
                    f" the resumed state's records: it needs about {self.path.stat().st_size} bytes; free"
                    " some space"
                )
                raise OSError(error.errno, message) from error
            raise
        warnings.warn(
            f"{self.path} holds {found - count} record(s) written after the training state this run resumes"
            f" from ({resumed_from}); the file goes on from that state's {count} record(s), and the whole"
            f" earlier file is kept in {backup}.",
            stacklevel=2,
        )

    def _count_records(self) -> int:
        """How many records the file holds (0 when there is none)."""
        raise NotImplementedError

    def _keep_first_records(self, count: int) -> None:
        """Cut the file (if there is one) back to its first ``count`` records, atomically."""
        raise NotImplementedError


def _branches_off(resumed_from) -> bool:
    """Whether resuming from ``resumed_from`` leaves a state beside it that got further (or it has no
    folder of states to tell by)."""
    if resumed_from is None:
        return True
    states = list_training_states(Path(resumed_from).parent)
    return not states or states[-1].resolve() != Path(resumed_from).resolve()


class CSVLoggerCallback(_FileLoggerCallback):
    """Writes metrics to a CSV file: one row per epoch, with the columns ``epoch``, ``step`` and
    one per metric (see :class:`MetricsLoggerCallback` for what is logged when).

    A metric that first appears later (say ``eval_loss`` from an ``evaluate()`` after
    training, or ``train_loss_step`` rows from ``log_every_n_steps``) adds a column: the file is
    rewritten with the wider header (atomically) and earlier rows leave it empty. The file thus
    always has one header and reads with ``csv.DictReader`` or ``pandas.read_csv``. Each row is
    flushed as it is written. One (epoch, step) has one row: values that come for a row already
    written (an ``evaluate()`` after training, values a callback records late for an earlier update)
    are written into it (the file rewritten atomically); only a second value of a name gets a row of
    its own.

    No run replaces another's file: by default (``if_exists="new_version"``) ``logs/metrics.csv``
    is written as ``logs/version_0/metrics.csv``, the next run's as ``logs/version_1/metrics.csv``
    (``path`` says which, once the run has started). To write the path given exactly:
    ``if_exists="error"`` raises FileExistsError for an existing non-empty file when a run starts,
    before its first step, ``"append"`` adds rows (and columns) to it, ``"overwrite"`` replaces it
    at the start of the first run. The same logger keeps its file for its later runs. A resumed run
    (``train(..., resume_from=...)``) continues the file it wrote, with the rows and columns it
    held when the state was saved; the rows the interrupted run wrote after that are written again.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        log_every_n_steps: int | Literal["auto"] | None = None,
        if_exists: IfExists = "new_version",
        log_learning_rate: bool = True,
    ):
        super().__init__(path, log_every_n_steps, if_exists, log_learning_rate)
        self._fieldnames: list[str] = []
        self._fieldnames_to_keep: list[str] | None = None
        self._row_keys: set[tuple[str, str]] = set()  # the (epoch, step) of every row this run wrote

    def on_training_run_start(self, trainer, **kwargs):
        self._row_keys = set()  # a new run's steps count from 0 again: its rows are its own
        super().on_training_run_start(trainer, **kwargs)

    def open(self, trainer) -> None:
        resuming = self._records_to_keep is not None
        super().open(trainer)
        self._fieldnames = _csv_header(self.path)
        if resuming:  # the interrupted run's rows are this run's
            self._row_keys = {_row_key(row) for row in self._read_rows()}

    def write(self, metrics, *, epoch, step, per_step):
        row = {"epoch": epoch, "step": step, **metrics}
        if _row_key(row) in self._row_keys and self._write_into_its_row(row):
            return
        new_columns = [name for name in row if name not in self._fieldnames]
        if new_columns:
            self._file.close()
            self._rewrite([*self._fieldnames, *new_columns], self._read_rows())
            self._file = RecordFile(self.path, append=True, owner=type(self).__name__)
        line = io.StringIO()
        csv.DictWriter(line, self._fieldnames).writerow(row)
        self._file.write(line.getvalue())
        self._num_records += 1
        self._row_keys.add(_row_key(row))

    def _write_into_its_row(self, row: dict) -> bool:
        """Write ``row``'s values into the last row of the file with its epoch and step (rewritten
        atomically); False, leaving the file alone, where that row holds another value of one of them.
        A value it holds already is no clash: a resumed run records again what the interrupted one did."""
        rows = self._read_rows()
        written = next(line for line in reversed(rows) if _row_key(line) == _row_key(row))
        cells = {name: str(value) for name, value in row.items()}
        if any(written.get(name) not in (None, "", cell) for name, cell in cells.items()):
            return False
        written.update(cells)
        self._file.close()
        self._rewrite([*self._fieldnames, *(name for name in row if name not in self._fieldnames)], rows)
        self._file = RecordFile(self.path, append=True, owner=type(self).__name__)
        return True

    def state_dict(self):
        pending = self._records_to_keep is not None
        return {
            **super().state_dict(),
            "fieldnames": list(self._fieldnames_to_keep if pending else self._fieldnames),
        }

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._fieldnames_to_keep = list(state_dict["fieldnames"])

    def _count_records(self) -> int:
        return len(self._read_rows()) if self.path.is_file() else 0

    def _keep_first_records(self, count: int) -> None:
        if not self.path.is_file():
            return
        fieldnames = (
            self._fieldnames_to_keep if self._fieldnames_to_keep is not None else _csv_header(self.path)
        )
        if fieldnames:
            self._rewrite(fieldnames, self._read_rows()[:count])
        else:
            self.path.write_text("", encoding="utf-8")  # nothing had been written yet

    def _read_rows(self) -> list[dict]:
        with open(self.path, newline="", encoding="utf-8") as file:
            return list(csv.DictReader(file))

    def _rewrite(self, fieldnames: list[str], rows: list[dict]) -> None:
        """Replace the file (atomically) with ``rows`` under the header ``fieldnames``; a row's
        values in columns not in ``fieldnames`` are dropped, missing ones left empty."""
        self._fieldnames = list(fieldnames)

        def write(file) -> None:
            writer = csv.DictWriter(file, self._fieldnames, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

        _replace_atomically(self.path, write)


class RecordFile:
    """A log file written one whole record at a time: a record the disk has no room for is taken
    back, so that the file never ends in half a record.

    Args:
        path: the file.
        append: add to the file (else it is emptied first).
        owner: the logger's name, for the errors.
    """

    def __init__(self, path: Path, append: bool, owner: str):
        self.path, self.owner = path, owner
        # os-level writes: Python's buffered file writes a record that does not fit in part, then fails
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self._fd: int | None = os.open(path, flags, 0o666)

    def write(self, text: str) -> None:
        """Append ``text`` whole, or raise naming the file and leave it as it was."""
        data = text.encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as error:
            os.ftruncate(self._fd, size)
            raise OSError(error.errno, self._explain(error)) from error

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _explain(self, error: OSError) -> str:
        reason = "No space left on device" if error.errno in (errno.ENOSPC, errno.EDQUOT) else error.strerror
        return (
            f"{reason} writing a record to {self.path}: the record was not written, and the file keeps every "
            f"earlier record whole. Free some space, or give {self.owner} a path on a disk with room."
        )


def _cut_torn_last_record(path: Path) -> None:
    """Cut off the last record of ``path`` if it has no line end: half a record, left by a process
    killed while writing it (or by a full disk, before :class:`RecordFile`)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as file:
        end = file.seek(0, os.SEEK_END)
        file.seek(end - 1)
        if file.read(1) == b"\n":
            return
        position = end
        while position > 0:
            start = max(0, position - 65536)
            file.seek(start)
            line_end = file.read(position - start).rfind(b"\n")
            if line_end >= 0:
                break
            position = start
        kept = start + line_end + 1 if position > 0 else 0
        file.truncate(kept)
    warnings.warn(
        f"{path} ended in half a record ({end - kept} bytes without a line end: a process killed or a disk "
        "full while writing it); it was cut off, and the file goes on after its last whole record.",
        stacklevel=3,
    )


def _replace_atomically(path: Path, write) -> None:
    """Replace ``path`` with what ``write(file)`` writes, through a temporary file beside it that a
    failed write (a full disk) does not leave behind."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "w", newline="", encoding="utf-8") as file:
            write(file)
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            # what the new file holds: the old one's size says nothing of an empty log
            rendered = io.StringIO()
            write(rendered)
            needed = len(rendered.getvalue().encode("utf-8"))
            message = (
                f"No space left on device rewriting {path}: it needs about {needed} bytes; free some space"
            )
            raise OSError(error.errno, message) from error
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _row_key(row: dict) -> tuple[str, str]:
    """A CSV row's (epoch, step), as the file holds them."""
    return str(row["epoch"]), str(row["step"])


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file (none for an empty file)."""
    with open(path, newline="", encoding="utf-8") as file:
        return next(csv.reader(file), [])


class JSONLinesLoggerCallback(_FileLoggerCallback):
    """Writes metrics to a JSON Lines file: one object per record, e.g.
    ``{"epoch": 1, "step": 8, "train_loss_epoch": 0.93, "eval_loss_epoch": 0.88}`` (see
    :class:`MetricsLoggerCallback` for what is logged when). Each line is flushed as it is written.

    ``if_exists`` decides what happens to an existing non-empty file, as for :class:`CSVLoggerCallback`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        log_every_n_steps: int | Literal["auto"] | None = None,
        if_exists: IfExists = "new_version",
        log_learning_rate: bool = True,
    ):
        super().__init__(path, log_every_n_steps, if_exists, log_learning_rate)

    def write(self, metrics, *, epoch, step, per_step):
        self._file.write(json.dumps({"epoch": epoch, "step": step, **metrics}) + "\n")
        self._num_records += 1

    def _count_records(self) -> int:
        return len(self._read_lines()) if self.path.is_file() else 0

    def _keep_first_records(self, count: int) -> None:
        if self.path.is_file():
            lines = self._read_lines()[:count]
            _replace_atomically(self.path, lambda file: file.write("".join(lines)))

    def _read_lines(self) -> list[str]:
        with open(self.path, encoding="utf-8") as file:
            return [line for line in file if line.strip()]
