"""Callbacks that write a run's metrics to a CSV file, a JSON Lines file, TensorBoard or MLflow."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import time
import warnings
from numbers import Real
from pathlib import Path
from typing import Any

import torch

from pytorch_accelerated.trainer import TrainerCallback, list_training_states

from .extras import require_extra
from .run_folders import IfExists, RunPath, check_if_exists

#: The name under which per-step training losses are logged.
STEP_LOSS_METRIC = "train_loss_step"


def as_number(value) -> int | float | None:
    """A metric value as a Python number, or None when it is not a scalar (such values are not logged)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else None
    if isinstance(value, Real):
        return value.item() if hasattr(value, "item") else value  # numpy scalars
    return None


def metric_counts(run_history) -> dict[str, int]:
    """How many values each metric of ``run_history`` holds, by name."""
    return {name: len(run_history.get_metric_values(name)) for name in run_history.get_metric_names()}


class MetricsLoggerCallback(TrainerCallback):
    """Base class of the loggers: decides what to log and when; a subclass writes it.

    On the main process only, :meth:`write` receives:

    - at the end of every epoch (``on_training_run_epoch_end``), the latest value of each metric
      recorded during that epoch, with ``epoch`` the epoch number;
    - at the end of each ``evaluate()`` called outside training, the metrics it recorded, with
      ``epoch`` the last epoch logged (0 before any training);
    - with ``log_every_n_steps=n``, after every n-th optimizer update, ``train_loss_step``: the
      update's training loss (the mean over its accumulation window's batches, on the main
      process's batches), with ``per_step=True``. The loss stays on the device between updates
      and is read once per n updates, so logging adds no host-device synchronisation per step.

    ``step`` is always ``trainer.completed_update_steps``. A run stopped with StopTrainingError
    still logs the metrics of its last epoch. Non-scalar metric values are skipped.

    Subclasses implement :meth:`write`, and :meth:`open` / :meth:`close` if they hold a file or a
    writer: it is opened at the start of each training run (and of each ``evaluate()`` outside
    training) and closed at its end, also when the run was stopped. A resumed run opens it when
    it first writes, after :meth:`load_state_dict` has restored what was logged before the state
    was saved.
    """

    def __init__(self, log_every_n_steps: int | None = None):
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1 or None, got {log_every_n_steps}.")
        self.log_every_n_steps = log_every_n_steps
        self._logged_counts: dict[str, int] = {}
        self._last_logged_epoch = 0
        self._in_training_run = False
        self._is_open = False
        self._window_loss: torch.Tensor | None = None
        self._window_batches = 0

    # ------------------------------------------------------------------ for subclasses

    def open(self, trainer) -> None:
        """Get ready to write (main process only)."""

    def write(self, metrics: dict[str, int | float], *, epoch: int, step: int, per_step: bool) -> None:
        """Write one record of metrics (main process only)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`open` acquired."""

    # ------------------------------------------------------------------ events

    def on_training_run_start(self, trainer, **kwargs):
        self._in_training_run = True
        self._window_loss, self._window_batches = None, 0
        self._start_logging(trainer, open_now=trainer.resumed_from is None)

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        if self._logs_next_update(trainer):
            loss = batch_output["loss"].detach().float()
            self._window_loss = loss if self._window_loss is None else self._window_loss + loss
            self._window_batches += 1

    def on_optimizer_step_end(self, trainer, **kwargs):
        if self._window_batches:
            loss = (self._window_loss / self._window_batches).item()
            self._window_loss, self._window_batches = None, 0
            self._write(trainer, {STEP_LOSS_METRIC: loss}, trainer.run_history.current_epoch, per_step=True)

    def on_training_run_epoch_end(self, trainer, **kwargs):
        self._log_new_metrics(trainer)

    def on_stop_training_error(self, trainer, **kwargs):
        # The stop may have come before this callback's on_training_run_epoch_end ran.
        self._log_new_metrics(trainer)
        self._close()

    def on_training_run_end(self, trainer, **kwargs):
        self._in_training_run = False
        self._close()

    def on_evaluation_run_start(self, trainer, **kwargs):
        if not self._in_training_run:
            self._start_logging(trainer)

    def on_evaluation_run_end(self, trainer, **kwargs):
        if not self._in_training_run:
            self._log_new_metrics(trainer)
            self._close()

    # ------------------------------------------------------------------ helpers

    def _logs_next_update(self, trainer) -> bool:
        n = self.log_every_n_steps
        return n is not None and (trainer.completed_update_steps + 1) % n == 0 and trainer.is_world_process_zero

    def _start_logging(self, trainer, open_now: bool = True) -> None:
        if trainer.is_world_process_zero:
            self._logged_counts = metric_counts(trainer.run_history)
            if open_now:
                self._open(trainer)

    def _log_new_metrics(self, trainer) -> None:
        """Write the latest value of every metric recorded since the last call."""
        if not trainer.is_world_process_zero:
            return
        history = trainer.run_history
        counts = metric_counts(history)
        new_metrics = {}
        for name, count in counts.items():
            if count > self._logged_counts.get(name, 0):
                value = as_number(history.get_latest_metric(name))
                if value is not None:
                    new_metrics[name] = value
        self._logged_counts = counts
        if self._in_training_run:
            self._last_logged_epoch = history.current_epoch
        self._write(trainer, new_metrics, self._last_logged_epoch, per_step=False)

    def _write(self, trainer, metrics: dict, epoch: int, per_step: bool) -> None:
        if metrics:
            self._open(trainer)
            self.write(metrics, epoch=epoch, step=trainer.completed_update_steps, per_step=per_step)

    def _open(self, trainer) -> None:
        if not self._is_open:
            self.open(trainer)
            self._is_open = True

    def _close(self) -> None:
        if self._is_open:
            self._is_open = False
            self.close()

    def state_dict(self):
        return {"logged_counts": dict(self._logged_counts), "last_logged_epoch": self._last_logged_epoch}

    def load_state_dict(self, state_dict):
        self._logged_counts = dict(state_dict["logged_counts"])
        self._last_logged_epoch = state_dict["last_logged_epoch"]


class _FileLoggerCallback(MetricsLoggerCallback):
    """A logger that writes one file of records, in a fresh ``version_<n>`` folder by default, or
    by an explicit policy into a file that exists already (``run_folders.py``: the rule). A resumed
    run continues the file with the records it held when the state was saved (records written
    after that, by the run that was interrupted, are written again)."""

    def __init__(self, path: str | os.PathLike, log_every_n_steps: int | None, if_exists: IfExists):
        super().__init__(log_every_n_steps)
        check_if_exists(if_exists, type(self).__name__)
        self._run_path = RunPath(path, if_exists)
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
        if trainer.resumed_from is None:  # a resumed run's state says where it wrote
            self._run_path.choose(trainer)
        super().on_training_run_start(trainer, **kwargs)

    def _refuse_existing_file(self) -> None:
        if self.if_exists == "error" and self.path.is_file() and self.path.stat().st_size > 0:
            raise FileExistsError(
                f"{self.path} already exists and is not empty, and {type(self).__name__} will not overwrite it: "
                "pass if_exists='append' to add to it, if_exists='overwrite' to replace it, "
                "if_exists='new_version' to write a fresh version_<n> folder beside it, or choose another path."
            )

    def open(self, trainer) -> None:
        self._run_path.choose(trainer, agree=False)  # an evaluate() before any training: the main process alone
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._records_to_keep is not None:
            self._back_up_later_records(self._records_to_keep, trainer.resumed_from)
            self._keep_first_records(self._records_to_keep)
            self._records_to_keep, self._started_file = None, True
        append = self._started_file or self.if_exists == "append"
        if not append:
            self._refuse_existing_file()
        self._num_records = self._count_records() if append else 0
        self._file = open(self.path, "a" if append else "w", newline="", encoding="utf-8")
        self._started_file = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def on_training_run_error(self, trainer, error, **kwargs):
        # as at a run's end: the file closed, and an evaluate() after the caught error logs to it
        self._in_training_run = False
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
            backup.unlink(missing_ok=True)  # a partial copy is no backup, and would push the next one to <n+1>
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                message = (
                    f"No space left on device backing up {self.path} to {backup} before cutting it back to the "
                    f"resumed state's records: it needs about {self.path.stat().st_size} bytes; free some space"
                )
                raise OSError(error.errno, message) from error
            raise
        warnings.warn(
            f"{self.path} holds {found - count} record(s) written after the training state this run resumes from "
            f"({resumed_from}); the file goes on from that state's {count} record(s), and the whole earlier file "
            f"is kept in {backup}.",
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

    A metric that first appears later (say ``evaluation_loss`` from an ``evaluate()`` after
    training, or ``train_loss_step`` rows from ``log_every_n_steps``) adds a column: the file is
    rewritten with the wider header (atomically) and earlier rows leave it empty. The file thus
    always has one header and reads with ``csv.DictReader`` or ``pandas.read_csv``. Each row is
    flushed as it is written.

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
        self, path: str | os.PathLike, log_every_n_steps: int | None = None, if_exists: IfExists = "new_version"
    ):
        super().__init__(path, log_every_n_steps, if_exists)
        self._fieldnames: list[str] = []
        self._fieldnames_to_keep: list[str] | None = None

    def open(self, trainer) -> None:
        super().open(trainer)
        self._fieldnames = _csv_header(self.path)

    def write(self, metrics, *, epoch, step, per_step):
        row = {"epoch": epoch, "step": step, **metrics}
        new_columns = [name for name in row if name not in self._fieldnames]
        if new_columns:
            self._file.close()
            self._rewrite([*self._fieldnames, *new_columns], self._read_rows())
            self._file = open(self.path, "a", newline="", encoding="utf-8")
        csv.DictWriter(self._file, self._fieldnames).writerow(row)
        self._file.flush()
        self._num_records += 1

    def state_dict(self):
        pending = self._records_to_keep is not None
        return {**super().state_dict(), "fieldnames": list(self._fieldnames_to_keep if pending else self._fieldnames)}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._fieldnames_to_keep = list(state_dict["fieldnames"])

    def _count_records(self) -> int:
        return len(self._read_rows()) if self.path.is_file() else 0

    def _keep_first_records(self, count: int) -> None:
        if not self.path.is_file():
            return
        fieldnames = self._fieldnames_to_keep if self._fieldnames_to_keep is not None else _csv_header(self.path)
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
            rendered = io.StringIO()  # what the new file holds: the old one's size says nothing of an empty log
            write(rendered)
            needed = len(rendered.getvalue().encode("utf-8"))
            message = f"No space left on device rewriting {path}: it needs about {needed} bytes; free some space"
            raise OSError(error.errno, message) from error
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


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
        self, path: str | os.PathLike, log_every_n_steps: int | None = None, if_exists: IfExists = "new_version"
    ):
        super().__init__(path, log_every_n_steps, if_exists)

    def write(self, metrics, *, epoch, step, per_step):
        self._file.write(json.dumps({"epoch": epoch, "step": step, **metrics}) + "\n")
        self._file.flush()
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


class TensorBoardLoggerCallback(MetricsLoggerCallback):
    """Writes metrics as TensorBoard scalars to ``log_dir`` (needs the ``tensorboard`` extra).

    Epoch metrics (and ``evaluate()`` metrics) are plotted against the epoch, ``train_loss_step``
    against the optimizer update. Each run adds its own event file to ``log_dir``, so nothing
    written before is lost; give each experiment its own ``log_dir`` to compare them in TensorBoard.
    A resumed run adds one too: values logged between the saved state and the interruption then
    appear twice (once from each run).
    """

    def __init__(self, log_dir: str | os.PathLike, log_every_n_steps: int | None = None):
        require_extra("tensorboard", "tensorboard", type(self).__name__)
        super().__init__(log_every_n_steps)
        self.log_dir = Path(log_dir)
        self._writer = None

    def open(self, trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, metrics, *, epoch, step, per_step):
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, global_step=step if per_step else epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class MLflowLoggerCallback(MetricsLoggerCallback):
    """Logs metrics to MLflow (needs the ``mlflow`` extra, ``mlflow-skinny``), one MLflow run per
    training run, with the run's settings (``trainer.run_config``) as parameters.

    ``tracking_uri`` defaults to a local file store in ``./mlruns`` (resolved when the callback is
    created); a path is turned into a ``file:`` URI, anything with a scheme (``http://...``,
    ``sqlite:///...``) is used as is. Nothing is sent to a server unless you pass its URI. Recent
    MLflow versions refuse file stores unless ``MLFLOW_ALLOW_FILE_STORE=true``, so for a file store
    the callback sets that environment variable in this process, unless you set it yourself.

    Epoch metrics are logged with the epoch as MLflow's ``step``; ``train_loss_step`` with the
    optimizer update. Metrics of an ``evaluate()`` after training go to that training's MLflow
    run. The MLflow run ends (FINISHED) at the end of the training run, also when stopped early.
    A resumed training run goes on logging to the MLflow run it started.
    """

    def __init__(
        self,
        experiment_name: str = "pytorch_accelerated",
        run_name: str | None = None,
        tracking_uri: str | os.PathLike | None = None,
        log_every_n_steps: int | None = None,
        tags: dict[str, Any] | None = None,
    ):
        require_extra("mlflow", "mlflow", type(self).__name__)
        super().__init__(log_every_n_steps)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tracking_uri = _as_tracking_uri(tracking_uri if tracking_uri is not None else "mlruns")
        self.tags = {key: str(value) for key, value in (tags or {}).items()}
        self.run_id: str | None = None
        self._client = None

    def on_training_run_start(self, trainer, **kwargs):
        self.run_id = None  # every training run gets a new MLflow run
        super().on_training_run_start(trainer, **kwargs)

    def open(self, trainer) -> None:
        if self.run_id is None:
            self.run_id = self._create_run(trainer)

    def write(self, metrics, *, epoch, step, per_step):
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        x = step if per_step else epoch
        self._get_client().log_batch(
            self.run_id, metrics=[Metric(name, float(value), timestamp, x) for name, value in metrics.items()]
        )

    def close(self) -> None:
        self._get_client().set_terminated(self.run_id, "FINISHED")

    def state_dict(self):
        return {**super().state_dict(), "run_id": self.run_id}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.run_id = state_dict["run_id"]

    def _create_run(self, trainer) -> str:
        from mlflow.entities import Param

        client = self._get_client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(self.experiment_name)
        run_id = client.create_run(experiment_id, run_name=self.run_name, tags=self.tags).info.run_id
        if trainer.run_config is not None:
            params = [Param(key, str(value)) for key, value in trainer.run_config.to_dict().items()]
            client.log_batch(run_id, params=params)
        return run_id

    def _get_client(self):
        if self._client is None:
            from mlflow import MlflowClient

            if self.tracking_uri.startswith("file:"):
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client


def _as_tracking_uri(location: str | os.PathLike) -> str:
    """A URI as is; a local path as an absolute ``file:`` URI (so a later chdir changes nothing)."""
    if isinstance(location, str) and ":" in location:
        return location
    return Path(location).resolve().as_uri()
