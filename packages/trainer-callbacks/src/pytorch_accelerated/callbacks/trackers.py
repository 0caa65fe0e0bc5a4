"""One callback that logs a run's metrics and settings to accelerate's experiment trackers."""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import tracking
from accelerate import utils as accelerate_utils
from accelerate.tracking import GeneralTracker

from pytorch_accelerated.trainer import raised_on_every_process

from .loggers import MetricsLoggerCallback
from .run_folders import RunFolder

OnUnreachable = Literal["warn", "error"]

#: accelerate's tracker names, each with the check that its package is installed and the
#: trainer-callbacks extra that installs it.
TRACKER_PACKAGES: dict[str, tuple[Callable[[], bool], str]] = {
    "tensorboard": (accelerate_utils.is_tensorboard_available, "tensorboard"),
    "wandb": (accelerate_utils.is_wandb_available, "wandb"),
    "mlflow": (accelerate_utils.is_mlflow_available, "mlflow"),
    "comet_ml": (accelerate_utils.is_comet_ml_available, "comet_ml"),
    "aim": (accelerate_utils.is_aim_available, "aim"),
    "clearml": (accelerate_utils.is_clearml_available, "clearml"),
    "dvclive": (accelerate_utils.is_dvclive_available, "dvclive"),
    "swanlab": (accelerate_utils.is_swanlab_available, "swanlab"),
    "trackio": (accelerate_utils.is_trackio_available, "trackio"),
}

#: How long the reachability probe of a tracking server waits, and the bounds set (unless the
#: environment sets its own) on MLflow's requests, whose defaults (a 120 s timeout, 7 retries with
#: back-off) block a run for many minutes when the server goes away.
PROBE_TIMEOUT_S = 5.0
MLFLOW_REQUEST_BOUNDS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2"}


class TrackerCallback(MetricsLoggerCallback):
    """Logs the run's metrics to experiment trackers, through accelerate's tracker layer.

    ``trackers`` are named as accelerate names them (``"tensorboard"``, ``"wandb"``, ``"mlflow"``,
    ``"comet_ml"``, ``"aim"``, ``"clearml"``, ``"dvclive"``, ``"swanlab"``, ``"trackio"``, or
    ``"all"``: every one installed), or are ``accelerate.tracking.GeneralTracker`` instances of
    your own; one or a list. A named tracker whose package is not installed raises an ImportError
    naming the extra that installs it, here, when the callback is created.

    On the main process only: each training run starts the trackers (``project_name`` is the
    project, or MLflow's experiment; ``init_kwargs={"wandb": {...}}`` go to each tracker's
    constructor), stores the run's settings once (``trainer.run_config``, the optimizer's class
    and defaults, the scheduler's class, and your ``config`` dict, which wins on a clash) with
    ``store_init_configuration`` (TensorBoard hparams, MLflow params, W&B config), logs every
    record of :class:`MetricsLoggerCallback` against the global update step (the epoch is a scalar
    of its own, ``epoch``), and ends the trackers on every way out of ``train()``: at its end, on a
    StopTrainingError, and on a crash (an MLflow run then ends FAILED, KILLED on Ctrl-C; a W&B run
    with exit code 1). An ``evaluate()`` after training opens them again; MLflow and W&B go on
    with the training's run, the others start a new one. A resumed run goes on with the MLflow
    and W&B runs it started.

    Folders: each training run writes into a fresh ``logging_dir/version_<n>`` (``if_exists=
    "new_version"``, the default; ``"append"`` writes into ``logging_dir`` itself), chosen by the
    main process at the run's start and kept by a resumed run: TensorBoard and Aim write under
    ``<run folder>/project_name``; W&B's files go under the run folder (unless
    ``init_kwargs["wandb"]["dir"]`` says otherwise); MLflow logs to
    ``init_kwargs["mlflow"]["tracking_uri"]``, else to ``MLFLOW_TRACKING_URI``, else to a local
    file store in ``logging_dir/mlruns``, shared by the runs (nothing is sent to a server unless
    you name one).

    A tracking server that is down (MLflow over http(s)) is found out before step 1, within
    about 5 s: ``on_unreachable="warn"`` (the default) warns and trains without that tracker,
    ``"error"`` raises ConnectionError on every process. With ``"warn"``, a tracker that fails
    later (its server went away mid-run) is warned about once and dropped; training goes on.
    MLflow's own request timeout and retries are bounded (10 s, 2 retries) unless the environment
    sets ``MLFLOW_HTTP_REQUEST_TIMEOUT`` / ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``.

    By default (``log_every_n_steps="auto"``) the training loss and the learning rate are logged
    per update, about 20 points in a short run and every 50 updates in a long one, read only at
    the updates logged. Values that are not numbers go to the trackers that show them: on
    TensorBoard a tensor or array of 2 or 3 dimensions (``(3, H, W)``, ``(H, W)``, ``(H, W, 3)``)
    as an image, of 4 as a batch of images, of 1 as a histogram, a string as text; the others are
    skipped with one warning per name. :meth:`get_tracker` reaches each tracker for anything else.
    """

    def __init__(
        self,
        trackers: str | GeneralTracker | list[str | GeneralTracker],
        project_name: str = "pytorch_accelerated",
        logging_dir: str | os.PathLike = "runs",
        config: Mapping[str, Any] | None = None,
        init_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
        log_every_n_steps: int | Literal["auto"] | None = "auto",
        on_unreachable: OnUnreachable = "warn",
        if_exists: Literal["new_version", "append"] = "new_version",
        log_learning_rate: bool = True,
    ):
        super().__init__(log_every_n_steps, log_learning_rate)
        self._folder = RunFolder(logging_dir, if_exists, owner=type(self).__name__)
        if on_unreachable not in ("warn", "error"):
            raise ValueError(f"on_unreachable must be 'warn' or 'error', got {on_unreachable!r}.")
        self.project_name = project_name
        self.logging_dir = Path(logging_dir)
        self.config = dict(config or {})
        self.on_unreachable = on_unreachable
        self.trackers = self._resolve_trackers(trackers)
        self.init_kwargs = self._checked_init_kwargs(init_kwargs or {})
        self.run_ids: dict[str, str] = {}  # the run each tracker that can go on with one started
        self._config_stored = False
        self._left_out: set[str] = set()  # trackers found unreachable for this training run
        self._started: list[GeneralTracker] = []
        # the latest step logged and its rows: a resumed run hides from TensorBoard what the
        # interrupted run logged from that step on (it logs it again), so these are logged again too
        self._last_step: int | None = None
        self._last_step_rows: list[dict[str, Any]] = []
        self._hide_from: int | None = None  # set by load_state_dict: the step a resumed writer purges from
        self._trainer = None  # the trainer of the current run or evaluation, for get_tracker
        self._is_main = True

    # ------------------------------------------------------------------ set-up

    def _resolve_trackers(self, trackers) -> list[str | GeneralTracker]:
        """The trackers as accelerate's ``filter_trackers`` resolves them, after naming the extra
        of every named tracker whose package is missing (accelerate would leave it out silently)."""
        listed = list(trackers) if isinstance(trackers, (list, tuple)) else [trackers]
        for entry in listed:
            if isinstance(entry, str) and entry in TRACKER_PACKAGES:
                is_available, extra = TRACKER_PACKAGES[entry]
                if not is_available():
                    raise ImportError(
                        f"{type(self).__name__} needs {extra}: pip install 'trainer-callbacks[{extra}]'"
                    )
        resolved = [
            entry if isinstance(entry, GeneralTracker) else str(getattr(entry, "value", entry))
            for entry in tracking.filter_trackers(listed, self.logging_dir)
        ]
        if not resolved:
            raise ValueError(f"No tracker to log to: {trackers!r} names none that is installed.")
        return resolved

    def _checked_init_kwargs(self, init_kwargs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        names = {tracker_name(entry) for entry in self.trackers}
        unknown = sorted(set(init_kwargs) - names)
        if unknown:
            raise ValueError(
                f"init_kwargs names trackers this callback does not log to: {unknown}; it logs to"
                f" {sorted(names)}."
            )
        return {name: dict(kwargs) for name, kwargs in init_kwargs.items()}

    def run_folder(self, trainer) -> Path:
        """The folder under which the trackers that write locally write this run."""
        return self._folder.path

    def get_tracker(self, name: str, unwrap: bool = False):
        """The tracker ``name`` of the current run, as accelerate's ``Accelerator.get_tracker`` returns it:
        its ``GeneralTracker``, or with ``unwrap=True`` the tracker's own object (TensorBoard's
        ``SummaryWriter``, the ``wandb`` run, the ``mlflow`` module), for images, histograms, tables
        and the rest of its API. On the other processes, which start no tracker, an empty
        ``GeneralTracker`` whose methods do nothing (guard unwrapped calls with
        ``trainer.is_world_process_zero``). Call it during a training run or an ``evaluate()``, from a
        callback's events.

        Args:
            name: the tracker's name (``"tensorboard"``, ``"wandb"``, ... or your tracker's ``name``).
            unwrap: return the tracker's own object rather than accelerate's wrapper.
        """
        names = [tracker_name(entry) for entry in self.trackers]
        if name not in names:
            raise ValueError(f"{type(self).__name__} has no tracker {name!r}; its trackers: {names}.")
        if not self._is_main:
            return GeneralTracker(_blank=True)
        if not self._is_open and self._trainer is not None:
            self._open(self._trainer)  # a resumed run opens the trackers when it first writes
        tracker = next((started for started in self._started if tracker_name(started) == name), None)
        if tracker is None:
            why = "was dropped (see the warning)" if name in self._left_out else "runs only during a run"
            raise RuntimeError(
                f"{type(self).__name__}: the {name} tracker {why}: call get_tracker from a callback's event "
                "during train() or evaluate()."
            )
        return tracker.tracker if unwrap else tracker

    # ------------------------------------------------------------------ events

    def on_training_run_start(self, trainer, **kwargs):
        self.run_ids = {}  # every training run starts new tracker runs (a resumed one gets its own back)
        self._config_stored = False
        self._left_out = self._unreachable_trackers(trainer)
        self._last_step, self._last_step_rows, self._hide_from = None, [], None  # a resumed run's: its state
        self._folder.start_run(trainer)
        self._trainer, self._is_main = trainer, trainer.is_world_process_zero
        super().on_training_run_start(trainer, **kwargs)

    def on_evaluation_run_start(self, trainer, **kwargs):
        self._trainer, self._is_main = trainer, trainer.is_world_process_zero
        super().on_evaluation_run_start(trainer, **kwargs)

    def on_training_run_end(self, trainer, **kwargs):
        super().on_training_run_end(trainer, **kwargs)
        self._trainer = None

    def on_evaluation_run_end(self, trainer, **kwargs):
        super().on_evaluation_run_end(trainer, **kwargs)
        if not self._in_training_run:
            self._trainer = None

    def on_training_run_error(self, trainer, error, **kwargs):
        self._in_training_run = False
        if self._is_open:
            self._is_open = False
            self._finish(failed_status="KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")

    # ------------------------------------------------------------------ MetricsLoggerCallback's contract

    def open(self, trainer) -> None:
        self._started = []
        for entry in self.trackers:
            if tracker_name(entry) not in self._left_out:
                tracker = self._guarded(entry, "start", lambda: self._start(entry, trainer))
                if tracker is not None:
                    self._started.append(tracker)
        self._hide_from = None  # once, by the resumed run's first writer
        if not self._config_stored:
            configuration = self.run_configuration(trainer)
            for tracker in list(self._started):
                store = tracker.store_init_configuration
                self._guarded(tracker, "store the run's settings", lambda: store(configuration))
            self._config_stored = True

    def write(self, metrics, *, epoch, step, per_step):
        values = {**metrics, "epoch": epoch}
        for tracker in list(self._started):
            self._guarded(tracker, "log", lambda: tracker.log(values, step=step))
        if self._last_step is None or step > self._last_step:
            self._last_step, self._last_step_rows = step, []
        if step == self._last_step:
            self._last_step_rows.append(values)

    def write_non_scalars(self, values, *, epoch, step):
        for name, value in values.items():
            shown = False
            for tracker in list(self._started):
                if tracker.name == "tensorboard":
                    show = functools.partial(show_on_tensorboard, tracker.tracker, name, value, step)
                    shown = self._guarded(tracker, "log", show)
            if not shown:
                why = "none of its trackers shows it (TensorBoard: 2-4 dimensions as images, 1 as histograms)"
                self.skip_with_warning(name, value, why)

    def close(self) -> None:
        self._finish(failed_status=None)

    def state_dict(self):
        return {
            **super().state_dict(),
            **self._folder.state_dict(),
            "run_ids": dict(self.run_ids),
            "config_stored": self._config_stored,
            "last_step": self._last_step,
            "last_step_rows": list(self._last_step_rows),
        }

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.run_ids = dict(state_dict.get("run_ids", {}))
        self._folder.load_state_dict(state_dict)
        self._config_stored = state_dict.get("config_stored", True)
        if "last_step" in state_dict:  # (states of trainer-callbacks 0.4.0 have none: nothing is hidden)
            self._last_step, self._last_step_rows = state_dict["last_step"], state_dict["last_step_rows"]
            self._hide_from = self._last_step if self._last_step is not None else 0

    # ------------------------------------------------------------------ what is logged

    def run_configuration(self, trainer) -> dict[str, bool | int | float | str]:
        """The run's settings, as every tracker can store them: the run config, the optimizer's
        class and defaults (``optimizer_lr``, ...), the scheduler's class, then ``config``."""
        values: dict[str, Any] = {}
        if trainer.run_config is not None:
            values.update(trainer.run_config.to_dict())
        # accelerate's wrapper holds it
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        if optimizer is not None:
            values["optimizer"] = type(optimizer).__name__
            values.update({f"optimizer_{key}": value for key, value in optimizer.defaults.items()})
        scheduler = getattr(trainer, "scheduler", None)
        if scheduler is not None:
            values["scheduler"] = type(getattr(scheduler, "scheduler", scheduler)).__name__
        values.update(self.config)
        return {key: as_setting(value) for key, value in values.items()}

    # ------------------------------------------------------------------ the trackers

    def _start(self, entry: str | GeneralTracker, trainer) -> GeneralTracker:
        if isinstance(entry, GeneralTracker):
            tracker = entry
        else:
            tracker_class = tracking.LOGGER_TYPE_TO_CLASS[entry]
            kwargs = self._tracker_kwargs(entry, trainer)
            if tracker_class.requires_logging_directory:
                tracker = tracker_class(self.project_name, str(self.run_folder(trainer)), **kwargs)
            else:
                tracker = tracker_class(self.project_name, **kwargs)
        tracker.start()
        if entry == "tensorboard" and self._hide_from is not None:
            for values in self._last_step_rows:  # hidden by the purge with what came after them
                tracker.log(values, step=self._last_step)
        run_id = _run_id_of(tracker)
        if run_id is not None:
            self.run_ids[tracker_name(entry)] = run_id
        return tracker

    def _tracker_kwargs(self, name: str, trainer) -> dict[str, Any]:
        """``init_kwargs[name]``, with what this callback adds: the run to go on with, the folder."""
        kwargs = dict(self.init_kwargs.get(name, {}))
        run_id = self.run_ids.get(name)
        if name == "mlflow":
            _use_mlflow_tracking_uri(mlflow_tracking_uri(kwargs.pop("tracking_uri", None), self.logging_dir))
            if run_id is not None:
                kwargs["run_id"] = run_id
        elif name == "tensorboard" and self._hide_from is not None:
            # a reader (TensorBoard, its EventAccumulator) hides what the interrupted run logged from here on
            kwargs.setdefault("purge_step", self._hide_from)
        elif name == "wandb":
            folder = Path(kwargs.setdefault("dir", str(self.run_folder(trainer))))
            folder.mkdir(parents=True, exist_ok=True)
            if run_id is not None:
                kwargs.update(id=run_id, resume="allow")
        return kwargs

    def _finish(self, failed_status: str | None) -> None:
        started, self._started = self._started, []
        for tracker in started:
            if failed_status is None:
                self._guarded(tracker, "finish", lambda: _finish_tracker(tracker, None))
                continue
            try:  # after a crash: end every tracker, and let the crash be the error train() raises
                _finish_tracker(tracker, failed_status)
            except Exception as error:
                warnings.warn(
                    f"{type(self).__name__}: the {tracker_name(tracker)} tracker failed to end its run after"
                    f" the training run failed ({type(error).__name__}: {error}).",
                    stacklevel=2,
                )

    def _guarded(self, tracker: str | GeneralTracker, action: str, call: Callable[[], Any]):
        """``call()``; with ``on_unreachable="warn"``, a tracker that fails is warned about and dropped
        for the rest of the run instead of stopping training."""
        try:
            return call()
        except Exception as error:
            if self.on_unreachable == "error":
                raise
            name = tracker_name(tracker)
            self._left_out.add(name)
            self._started = [started for started in self._started if started is not tracker]
            warnings.warn(
                f"{type(self).__name__}: the {name} tracker failed to {action} ({type(error).__name__}:"
                f" {error}); training goes on without it. Pass on_unreachable='error' to stop instead.",
                stacklevel=2,
            )
            return None

    def _unreachable_trackers(self, trainer) -> set[str]:
        """The trackers whose server does not answer, found before step 1 (warned about), or a
        ConnectionError on every process with ``on_unreachable="error"``."""
        problems: dict[str, str] = {}
        if trainer.is_world_process_zero and "mlflow" in self.trackers:
            uri = mlflow_tracking_uri(
                self.init_kwargs.get("mlflow", {}).get("tracking_uri"), self.logging_dir
            )
            problem = server_problem(uri)
            if problem is not None:
                problems["mlflow"] = f"the MLflow tracking server {uri} is unreachable ({problem})"
        if self.on_unreachable == "error" and trainer.any_process(bool(problems)):
            reason = "; ".join(problems.values()) or "a tracking server is unreachable from the main process"
            raise raised_on_every_process(
                ConnectionError(
                    f"{type(self).__name__}: {reason}. Start the server or fix its URI, "
                    "or pass on_unreachable='warn' to train without that tracker."
                )
            )
        for message in problems.values():
            warnings.warn(
                f"{type(self).__name__}: {message}; training goes on without it. "
                "Start the server or fix its URI, or pass on_unreachable='error' to stop instead.",
                stacklevel=2,
            )
        return set(problems)


def show_on_tensorboard(writer, name: str, value, step: int) -> bool:
    """Log ``value`` with TensorBoard's ``writer`` as what it looks like: an image (2 dimensions, or 3
    with 1, 3 or 4 channels first or last), images (4 dimensions, NCHW), a histogram (1 dimension)
    or text (a string). False for anything else."""
    if isinstance(value, str):
        writer.add_text(name, value, global_step=step)
        return True
    if not hasattr(value, "ndim"):
        return False
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
    if value.ndim == 1:
        writer.add_histogram(name, value, global_step=step)
    elif value.ndim == 2:
        writer.add_image(name, value, global_step=step, dataformats="HW")
    elif value.ndim == 3 and (value.shape[0] in (1, 3, 4) or value.shape[-1] in (1, 3, 4)):
        channels_first = value.shape[0] in (1, 3, 4)
        writer.add_image(name, value, global_step=step, dataformats="CHW" if channels_first else "HWC")
    elif value.ndim == 4:
        writer.add_images(name, value, global_step=step)
    else:
        return False
    writer.flush()
    return True


def tracker_name(entry: str | GeneralTracker) -> str:
    return entry if isinstance(entry, str) else str(entry.name)


def as_setting(value: Any) -> bool | int | float | str:
    """A setting as every tracker stores it (TensorBoard's hparams take bool, int, float, str)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def mlflow_tracking_uri(given: str | os.PathLike | None, folder: Path) -> str:
    """The tracking URI MLflow logs to: the one given (a path as a ``file:`` URI), else
    ``MLFLOW_TRACKING_URI``, else a file store in ``folder/mlruns``."""
    if given is None:
        given = os.environ.get("MLFLOW_TRACKING_URI") or folder / "mlruns"
    if isinstance(given, str) and ":" in given:
        return given
    return Path(given).resolve().as_uri()


def server_problem(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the http(s) server at ``uri`` does not answer within ``timeout_s`` (None when it answers,
    with any HTTP status, or ``uri`` is no http(s) URI)."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as error:
        return str(getattr(error, "reason", error))


def _use_mlflow_tracking_uri(uri: str) -> None:
    import mlflow

    if uri.startswith("file:"):
        # recent MLflow refuses file stores otherwise
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    elif uri.startswith(("http://", "https://")):
        for variable, bound in MLFLOW_REQUEST_BOUNDS.items():
            os.environ.setdefault(variable, bound)
    mlflow.set_tracking_uri(uri)


def _run_id_of(tracker: GeneralTracker) -> str | None:
    """The id of the run a tracker started, for the trackers that can go on with one."""
    if tracker.name == "mlflow":
        return tracker.active_run.info.run_id
    if tracker.name == "wandb":
        return tracker.run.id
    return None


def _finish_tracker(tracker: GeneralTracker, failed_status: str | None) -> None:
    """End a tracker's run; after a crash, marked as failed where the tracker has a way to say so."""
    if failed_status is not None and tracker.name == "mlflow":
        import mlflow

        mlflow.end_run(status=failed_status)
    elif failed_status is not None and tracker.name == "wandb":
        tracker.run.finish(exit_code=1)
    else:
        tracker.finish()


class TensorBoardLoggerCallback(TrackerCallback):
    """:class:`TrackerCallback` to TensorBoard alone, writing its event files into ``log_dir``
    (needs the ``tensorboard`` extra). Each run adds its own event file there, so nothing written
    before is lost (it does not version ``log_dir``: ``if_exists="append"``); a resumed run adds one too."""

    def __init__(
        self, log_dir: str | os.PathLike, log_every_n_steps: int | Literal["auto"] | None = "auto", **kwargs
    ):
        self.log_dir = Path(log_dir)
        # accelerate's TensorBoard tracker writes into logging_dir/project_name
        super().__init__(
            "tensorboard",
            project_name=self.log_dir.name,
            logging_dir=self.log_dir.parent,
            log_every_n_steps=log_every_n_steps,
            **{"if_exists": "append", **kwargs},
        )


class MLflowLoggerCallback(TrackerCallback):
    """:class:`TrackerCallback` to MLflow alone (needs the ``mlflow`` extra, ``mlflow-skinny``): one
    MLflow run per training run, in the experiment ``experiment_name``, named ``run_name``, with
    ``tags``. ``tracking_uri`` defaults to a local file store in ``./mlruns`` (resolved when the
    callback is created); a path is turned into a ``file:`` URI, anything with a scheme
    (``http://...``, ``sqlite:///...``) is used as is. A resumed training run goes on logging to the
    MLflow run it started (:attr:`run_id`)."""

    def __init__(
        self,
        experiment_name: str = "pytorch_accelerated",
        run_name: str | None = None,
        tracking_uri: str | os.PathLike | None = None,
        log_every_n_steps: int | Literal["auto"] | None = "auto",
        tags: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tracking_uri = mlflow_tracking_uri(
            tracking_uri if tracking_uri is not None else "mlruns", Path.cwd()
        )
        self.tags = {key: str(value) for key, value in (tags or {}).items()}
        mlflow_kwargs = {"tracking_uri": self.tracking_uri, "run_name": run_name, "tags": self.tags}
        super().__init__(
            "mlflow",
            project_name=experiment_name,
            init_kwargs={"mlflow": mlflow_kwargs},
            log_every_n_steps=log_every_n_steps,
            **{"if_exists": "append", **kwargs},
        )

    @property
    def run_id(self) -> str | None:
        """The MLflow run of the latest training run (None before one started)."""
        return self.run_ids.get("mlflow")

    def load_state_dict(self, state_dict):
        if "run_id" in state_dict:  # saved by trainer-callbacks 0.3's MLflowLoggerCallback
            state_dict = {
                **state_dict,
                "run_ids": {"mlflow": state_dict["run_id"]} if state_dict["run_id"] else {},
            }
        super().load_state_dict(state_dict)
