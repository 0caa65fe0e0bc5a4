"""Callbacks that watch one metric and act when it stops improving."""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

from pytorch_accelerated.trainer import StopTrainingError, TrainerCallback, format_metric_value

from .exporting import SAFETENSORS_FILENAME, save_model_safetensors
from .extras import require_extra
from .loggers import note_weights_from
from .run_folders import CHECKPOINT_IF_EXISTS_CHOICES, IfExists, RunPath


def check_metric_can_be_recorded(metric: str, trainer, owner: str) -> None:
    """At a run's start: an ``eval_*`` metric needs an ``eval_dataset``; a run without one never records
    it."""
    if metric.startswith("eval_") and trainer.eval_dataset is None:
        raise ValueError(
            f"{owner} watches {metric!r}, an evaluation metric, but this run has no eval_dataset, so "
            "it is never recorded: pass train(..., eval_dataset=...), or watch a training metric such as "
            "'train_loss_epoch'."
        )


def warn_if_undeclared(metric: str, trainer, owner: str) -> bool:
    """At a run's start: one warning (main process) where neither the Trainer nor a callback declares
    that it records ``metric`` (``trainer.recorded_metric_names()``); not an error, as a callback or hook
    may record any name undeclared. Returns whether ``metric`` is undeclared."""
    declared = sorted(set(trainer.recorded_metric_names()))
    if any(_matches(metric, name) for name in declared):
        return False
    if trainer.is_world_process_zero:
        close = difflib.get_close_matches(metric, [name for name in declared if "*" not in name], n=1)
        warnings.warn(
            f"{owner} watches {metric!r}, but neither the Trainer nor a callback of this run declares "
            f"that it records it; declared metrics: {declared}."
            f"{f' Did you mean {close[0]!r}?' if close else ''} Unless something records it by the end "
            "of the first epoch and its evaluation, the run fails there. If a callback or Trainer "
            "subclass of your own records it, ignore this warning, or declare the name in its "
            "recorded_metric_names().",
            stacklevel=_user_stacklevel(),
        )
    return True


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the caller's first frame outside pytorch_accelerated: the user's ``train`` line
    (Python 3.12's ``skip_file_prefixes``, which 3.11 lacks)."""
    import pytorch_accelerated

    library = tuple(os.path.join(folder, "") for folder in pytorch_accelerated.__path__)
    frame, level = sys._getframe(2), 2  # the caller of the function that warns
    while frame is not None and frame.f_code.co_filename.startswith(library):
        frame, level = frame.f_back, level + 1
    return level


def _matches(metric: str, declared: str) -> bool:
    """Whether ``metric`` is the ``declared`` name, in which a ``*`` stands for any text."""
    if "*" not in declared:
        return metric == declared
    pattern = re.escape(declared).replace(r"\*", ".*")  # not fnmatch: a name may hold '[' or '?'
    return re.fullmatch(pattern, metric) is not None


#: How far apart two metric values may be and still count as equal, relative to their size: metrics are
#: computed in float32 (about 7 digits), so 0.914 - 0.904 is 0.0099999 once they are Python floats.
FLOAT32_TOLERANCE = 4 * 2.0**-23


class MetricWatcher:
    """Tracks the best value of a metric; an improvement must beat the best by ``threshold`` or more
    (by any amount with ``threshold=0``), to float32's precision."""

    def __init__(self, watch_metric: str, greater_is_better: bool, threshold: float = 0.0):
        if threshold < 0:
            raise ValueError(f"The improvement threshold must be >= 0, got {threshold}.")
        self.watch_metric = watch_metric
        self.greater_is_better = greater_is_better
        self.threshold = threshold
        self.best: float | None = None
        self._warned_undeclared = False

    def check_can_be_recorded(self, trainer, owner: str) -> None:
        """At the run's start: an ``eval_*`` metric needs an ``eval_dataset``, which the run lacks; a
        metric that nothing declares it records is warned about once (it fails after the first epoch)."""
        check_metric_can_be_recorded(self.watch_metric, trainer, owner)
        if not self._warned_undeclared:
            self._warned_undeclared = warn_if_undeclared(self.watch_metric, trainer, owner)

    def read(self, trainer, owner: str) -> float:
        """The metric's latest value as a float; a clear error if the run does not record it (known
        once an epoch and its evaluation are over: any callback may record any name until then)."""
        if not trainer.run_history.get_metric_values(self.watch_metric):
            recorded = sorted(trainer.run_history.get_metric_names())
            close = difflib.get_close_matches(self.watch_metric, recorded, n=1)
            raise ValueError(
                f"{owner} watches {self.watch_metric!r}, which this run has not recorded; recorded metrics: "
                f"{recorded}.{f' Did you mean {close[0]!r}?' if close else ''} An eval_dataset gives "
                "eval_loss_epoch, a metrics callback gives eval_<name>."
            )
        return float(trainer.run_history.get_latest_metric(self.watch_metric))

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by the threshold."""
        return self.improves_on(value, self.best)

    def improves_on(self, value: float, reference: float | None) -> bool:
        """Whether ``value`` beats ``reference`` (None: none yet) by the threshold, to float32's precision."""
        if math.isnan(value):
            return False
        if reference is None:
            return True
        margin = value - reference if self.greater_is_better else reference - value
        noise = FLOAT32_TOLERANCE * max(abs(value), abs(reference))
        return margin > noise and margin >= self.threshold - noise

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]


class EarlyStoppingCallback(TrainerCallback):
    """Stops training, on every process, when ``watch_metric`` has not improved by at least
    ``early_stopping_threshold`` (to float32's precision: 0.904 -> 0.914 is an improvement of 0.01)
    for ``early_stopping_patience`` consecutive epochs.

    The metric is read at ``on_training_run_epoch_end``, after every callback has recorded the
    epoch's metrics, so its place in the callback list does not matter. Each ``train()`` call starts
    afresh; ``reset_on_train=False`` carries the best value and the patience used up into the next.

    A metric that neither the Trainer nor a callback declares (``trainer.recorded_metric_names()``)
    gets one warning when the run starts, naming the declared ones (a callback may still record it);
    a metric not recorded by the end of the first epoch is a ``ValueError`` there. The same holds
    for :class:`SaveBestModelCallback`.
    """

    def __init__(
        self,
        early_stopping_patience: int = 1,
        early_stopping_threshold: float = 0.01,
        watch_metric: str = "eval_loss_epoch",
        greater_is_better: bool = False,
        reset_on_train: bool = True,
    ):
        if early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {early_stopping_patience}.")
        self.early_stopping_patience = early_stopping_patience
        self.watcher = MetricWatcher(watch_metric, greater_is_better, early_stopping_threshold)
        self.reset_on_train = reset_on_train
        self.epochs_without_improvement = 0

    def on_training_run_start(self, trainer, **kwargs):
        self.watcher.check_can_be_recorded(trainer, type(self).__name__)
        if self.reset_on_train:
            self.watcher.best = None
            self.epochs_without_improvement = 0

    def on_training_run_epoch_end(self, trainer, **kwargs):
        value = self.watcher.read(trainer, type(self).__name__)
        if self.watcher.is_improvement(value):
            self.watcher.best = value
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1
        out_of_patience = self.epochs_without_improvement >= self.early_stopping_patience
        if trainer.any_process(out_of_patience):
            by = f" by at least {self.watcher.threshold}" if self.watcher.threshold else ""
            raise StopTrainingError(
                f"Early stopping: {self.watcher.watch_metric} has not improved{by} for "
                f"{self.epochs_without_improvement} epoch(s); best: {format_metric_value(self.watcher.best)}"
            )

    def state_dict(self):
        return {**self.watcher.state_dict(), "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state_dict):
        self.watcher.load_state_dict(state_dict)
        self.epochs_without_improvement = state_dict["epochs_without_improvement"]


class SaveBestModelCallback(TrainerCallback):
    """Saves a checkpoint whenever ``watch_metric`` improves, and loads the best one back at the
    end of the run (``load_saved_checkpoint=True``).

    Checkpoints are written with ``Trainer.save_checkpoint``: on the main process, atomically, so
    the previous best survives a failed write. The metric value and epoch are stored with it, and
    the optimizer's and scheduler's states unless ``save_optimizer`` / ``save_scheduler`` is False.
    Each ``train()`` call looks for its own best; ``reset_on_train=False`` keeps the best of earlier
    calls, so a later call saves (and loads back) only a better one.

    With ``save_top_k=k`` (Lightning's name; -1 for every epoch) the ``k`` best epochs each keep a
    checkpoint, named after ``save_path`` as Lightning names them: ``best_model-epoch=3-step=120.pt``;
    an epoch enters when it beats the worst kept (by ``improvement_threshold``), which is then
    deleted. ``best_k_checkpoints`` maps each kept file to its value, ``best_checkpoint_path`` is
    the best. With ``export_safetensors=True`` (extra ``safetensors``) the best weights are also
    written as ``model.safetensors`` beside the checkpoint (:func:`save_model_safetensors`), each
    time the best changes: what transformers and the Hub load.

    No run replaces another's checkpoint: by default (``if_exists="new_version"``) ``best_model.pt``
    is saved as ``version_0/best_model.pt``, the next run's as ``version_1/best_model.pt`` (the
    folder of ``save_path`` gets the ``version_<n>`` folders); ``save_path`` says which once the
    run has started. ``if_exists="overwrite"`` saves to the path given, replacing what is there;
    ``"error"`` refuses to start when it holds a file. A resumed run goes on saving where it saved.
    Once the best is loaded back, loggers label later ``evaluate()`` values with its epoch and step.
    """

    def __init__(
        self,
        save_path: str | Path = "best_model.pt",
        watch_metric: str = "eval_loss_epoch",
        greater_is_better: bool = False,
        load_saved_checkpoint: bool = True,
        save_optimizer: bool = True,
        improvement_threshold: float = 0.0,
        reset_on_train: bool = True,
        save_scheduler: bool = True,
        if_exists: IfExists = "new_version",
        save_top_k: int = 1,
        export_safetensors: bool = False,
    ):
        if save_top_k != -1 and save_top_k < 1:
            raise ValueError(f"save_top_k must be >= 1, or -1 to keep every epoch's; got {save_top_k}.")
        if export_safetensors:
            require_extra("safetensors", "safetensors", f"{type(self).__name__}(export_safetensors=True)")
        self._run_path = RunPath(save_path, if_exists, type(self).__name__, CHECKPOINT_IF_EXISTS_CHOICES)
        self.watcher = MetricWatcher(watch_metric, greater_is_better, improvement_threshold)
        self.load_saved_checkpoint = load_saved_checkpoint
        self.save_optimizer = save_optimizer
        self.save_scheduler = save_scheduler
        self.reset_on_train = reset_on_train
        self.save_top_k = save_top_k
        self.export_safetensors = export_safetensors
        self.saved_this_run = False
        self._kept: list[_Kept] = []  # the checkpoints kept, best first (one with save_top_k=1)

    @property
    def save_path(self) -> Path:
        """Where the best checkpoint is saved (its ``version_<n>`` folder once the first run has started);
        with ``save_top_k`` > 1 the folder and name the checkpoints are named after."""
        return self._run_path.path

    @save_path.setter
    def save_path(self, path: str | Path) -> None:
        self._run_path = RunPath(path, self._run_path.if_exists, self._run_path.owner, self._run_path.choices)

    @property
    def best_checkpoint_path(self) -> Path | None:
        """The checkpoint of the best epoch (None before one is saved)."""
        return self._file(self._kept[0]) if self._kept else None

    @property
    def best_k_checkpoints(self) -> dict[Path, float]:
        """Every checkpoint kept, best first, with its value of ``watch_metric``."""
        return {self._file(kept): kept.value for kept in self._kept}

    @property
    def safetensors_path(self) -> Path:
        """The best weights with ``export_safetensors=True``: ``model.safetensors``, beside the checkpoint."""
        return self.save_path.parent / SAFETENSORS_FILENAME

    def on_training_run_start(self, trainer, **kwargs):
        self.watcher.check_can_be_recorded(trainer, type(self).__name__)
        self._run_path.start_run(trainer)
        if self.reset_on_train:
            self.watcher.best = None
            self.saved_this_run = False
            self._kept = []

    def on_training_run_epoch_end(self, trainer, **kwargs):
        value = self.watcher.read(trainer, type(self).__name__)
        worst = self._kept[-1].value if self._kept and len(self._kept) == self.save_top_k else None
        if trainer.any_process(self.watcher.improves_on(value, worst)):
            epoch, step = trainer.run_history.current_epoch, trainer.completed_update_steps
            kept = _Kept(self._file_name(epoch, step), value, epoch, step)
            trainer.save_checkpoint(
                self._file(kept),
                checkpoint_kwargs={self.watcher.watch_metric: value, "epoch": epoch},
                save_optimizer=self.save_optimizer,
                save_scheduler=self.save_scheduler,
            )
            self._keep(trainer, kept)
            self.saved_this_run = True

    def on_training_run_end(self, trainer, **kwargs):
        if self.load_saved_checkpoint and self.saved_this_run:
            best = self._kept[0]
            trainer.print(
                f"Loading the best checkpoint ({self.watcher.watch_metric}:"
                f" {format_metric_value(best.value)}) from {self._file(best)}"
            )
            trainer.load_checkpoint(
                self._file(best), load_optimizer=self.save_optimizer, load_scheduler=self.save_scheduler
            )
            note_weights_from(trainer, epoch=best.epoch, step=best.step)

    def _keep(self, trainer, kept: _Kept) -> None:
        """Rank the new checkpoint among those kept, delete the one it pushes out, export a new best."""
        is_best = self.watcher.is_improvement(kept.value)
        ranked = [other for other in self._kept if other.name != kept.name]
        ranked.insert(sum(not self.watcher.improves_on(kept.value, other.value) for other in ranked), kept)
        if is_best:
            self.watcher.best = kept.value
            ranked.remove(kept)
            ranked.insert(0, kept)
        limit = len(ranked) if self.save_top_k == -1 else self.save_top_k
        self._kept, dropped = ranked[:limit], ranked[limit:]
        if trainer.is_world_process_zero:
            for old in dropped:
                if old.name != kept.name:
                    self._file(old).unlink(missing_ok=True)
        if is_best and self.export_safetensors:
            save_model_safetensors(trainer, self.safetensors_path.parent)

    def _file_name(self, epoch: int, step: int) -> str:
        """``save_path``'s name with ``save_top_k=1``, else one per epoch, named as Lightning names them."""
        path = self._run_path.requested
        return path.name if self.save_top_k == 1 else f"{path.stem}-epoch={epoch}-step={step}{path.suffix}"

    def _file(self, kept: _Kept) -> Path:
        return self.save_path.with_name(kept.name)

    def state_dict(self):
        return {
            **self.watcher.state_dict(),
            **self._run_path.state_dict(),
            "saved_this_run": self.saved_this_run,
            "kept": [list(kept) for kept in self._kept],
        }

    def load_state_dict(self, state_dict):
        self.watcher.load_state_dict(state_dict)
        self._run_path.load_state_dict(state_dict)
        self.saved_this_run = state_dict["saved_this_run"]
        self._kept = [_Kept(*kept) for kept in state_dict.get("kept", [])]
        if not self._kept and self.saved_this_run:  # a state of trainer-callbacks 0.4.0: its one best
            self._kept = [_Kept(self._run_path.requested.name, self.watcher.best, 0, 0)]


class _Kept(NamedTuple):
    """A checkpoint kept: its file's name (in ``save_path``'s folder), value, epoch and update step."""

    name: str
    value: float
    epoch: int
    step: int
