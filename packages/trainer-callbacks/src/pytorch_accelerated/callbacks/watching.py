"""Callbacks that watch one metric and act when it stops improving."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

from pytorch_accelerated.trainer import StopTrainingError, TrainerCallback, format_metric_value

from .run_folders import CHECKPOINT_IF_EXISTS_CHOICES, IfExists, RunPath


def check_metric_can_be_recorded(metric: str, trainer, owner: str) -> None:
    """At a run's start: an ``eval_*`` metric needs an ``eval_dataset``; a run without one never records it."""
    if metric.startswith("eval_") and trainer.eval_dataset is None:
        raise ValueError(
            f"{owner} watches {metric!r}, an evaluation metric, but this run has no eval_dataset, so "
            "it is never recorded: pass train(..., eval_dataset=...), or watch a training metric such as "
            "'train_loss_epoch'."
        )


class MetricWatcher:
    """Tracks the best value of a metric; an improvement must beat the best by more than ``threshold``."""

    def __init__(self, watch_metric: str, greater_is_better: bool, threshold: float = 0.0):
        if threshold < 0:
            raise ValueError(f"The improvement threshold must be >= 0, got {threshold}.")
        self.watch_metric = watch_metric
        self.greater_is_better = greater_is_better
        self.threshold = threshold
        self.best: float | None = None

    def check_can_be_recorded(self, trainer, owner: str) -> None:
        """At the run's start: an ``eval_*`` metric needs an ``eval_dataset``, which the run lacks."""
        check_metric_can_be_recorded(self.watch_metric, trainer, owner)

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
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        margin = value - self.best if self.greater_is_better else self.best - value
        return margin > self.threshold

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict["best"]


class EarlyStoppingCallback(TrainerCallback):
    """Stops training, on every process, when ``watch_metric`` has not improved by more than
    ``early_stopping_threshold`` for ``early_stopping_patience`` consecutive epochs.

    The metric is read at ``on_training_run_epoch_end``, after every callback has recorded the
    epoch's metrics, so its place in the callback list does not matter. Each ``train()`` call starts
    afresh; ``reset_on_train=False`` carries the best value and the patience used up into the next.
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
            raise StopTrainingError(
                f"Early stopping: {self.watcher.watch_metric} has not improved by more than "
                f"{self.watcher.threshold} for {self.epochs_without_improvement} epoch(s); best: {format_metric_value(self.watcher.best)}"
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

    No run replaces another's checkpoint: by default (``if_exists="new_version"``) ``best_model.pt``
    is saved as ``version_0/best_model.pt``, the next run's as ``version_1/best_model.pt`` (the
    folder of ``save_path`` gets the ``version_<n>`` folders); ``save_path`` says which once the
    run has started. ``if_exists="overwrite"`` saves to the path given, replacing what is there;
    ``"error"`` refuses to start when it holds a file. A resumed run goes on saving where it saved.
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
    ):
        self._run_path = RunPath(save_path, if_exists, type(self).__name__, CHECKPOINT_IF_EXISTS_CHOICES)
        self.watcher = MetricWatcher(watch_metric, greater_is_better, improvement_threshold)
        self.load_saved_checkpoint = load_saved_checkpoint
        self.save_optimizer = save_optimizer
        self.save_scheduler = save_scheduler
        self.reset_on_train = reset_on_train
        self.saved_this_run = False

    @property
    def save_path(self) -> Path:
        """Where the best checkpoint is saved (its ``version_<n>`` folder once the first run has started)."""
        return self._run_path.path

    @save_path.setter
    def save_path(self, path: str | Path) -> None:
        self._run_path = RunPath(path, self._run_path.if_exists, self._run_path.owner, self._run_path.choices)

    def on_training_run_start(self, trainer, **kwargs):
        self.watcher.check_can_be_recorded(trainer, type(self).__name__)
        self._run_path.start_run(trainer)
        if self.reset_on_train:
            self.watcher.best = None
            self.saved_this_run = False

    def on_training_run_epoch_end(self, trainer, **kwargs):
        value = self.watcher.read(trainer, type(self).__name__)
        if trainer.any_process(self.watcher.is_improvement(value)):
            self.watcher.best = value
            trainer.save_checkpoint(
                self.save_path,
                checkpoint_kwargs={self.watcher.watch_metric: value, "epoch": trainer.run_history.current_epoch},
                save_optimizer=self.save_optimizer,
                save_scheduler=self.save_scheduler,
            )
            self.saved_this_run = True

    def on_training_run_end(self, trainer, **kwargs):
        if self.load_saved_checkpoint and self.saved_this_run:
            trainer.print(
                f"Loading the best checkpoint ({self.watcher.watch_metric}: {format_metric_value(self.watcher.best)}) from {self.save_path}"
            )
            trainer.load_checkpoint(self.save_path, load_optimizer=self.save_optimizer, load_scheduler=self.save_scheduler)

    def state_dict(self):
        return {**self.watcher.state_dict(), **self._run_path.state_dict(), "saved_this_run": self.saved_this_run}

    def load_state_dict(self, state_dict):
        self.watcher.load_state_dict(state_dict)
        self._run_path.load_state_dict(state_dict)
        self.saved_this_run = state_dict["saved_this_run"]
