"""Optuna pruning: report a metric to a trial after every epoch and stop the run when the pruner says so."""

from __future__ import annotations

import importlib

from pytorch_accelerated.trainer import StopTrainingError, TrainerCallback


def _require_optuna():
    try:
        return importlib.import_module("optuna")
    except ImportError as error:
        raise ImportError(
            "OptunaPruningCallback needs optuna: pip install 'trainer-tuning[optuna]'"
        ) from error


class OptunaPruningCallback(TrainerCallback):
    """Reports ``monitor`` to an Optuna ``trial`` at the end of every epoch (``trial.report(value,
    step=epoch)``, at ``on_training_run_epoch_end``, after every callback has recorded the epoch's
    metrics), and when ``trial.should_prune()``, ends the run cleanly and then raises
    ``optuna.TrialPruned`` out of ``trainer.train``, so that Optuna records the trial as pruned.

    Ending cleanly: the callback raises ``StopTrainingError``, so the run's end events run as after
    early stopping (loggers close their files, checkpoints are written); then, from
    ``on_training_run_end``, it raises ``optuna.TrialPruned``. It must therefore be the last callback
    (checked when the run starts), so that every other callback's ``on_training_run_end`` has run.
    ``callback.pruned`` tells whether it pruned. For one process: on several, create the trial on
    each (or report from the main process only) so that they decide alike.
    """

    def __init__(self, trial, monitor: str = "eval_loss_epoch"):
        self._optuna = _require_optuna()
        self.trial = trial
        self.monitor = monitor
        self.pruned = False
        self._message = ""

    def on_training_run_start(self, trainer, **kwargs):
        if trainer.callback_handler.callbacks[-1] is not self:
            raise ValueError(
                "OptunaPruningCallback must be the last callback: it raises optuna.TrialPruned from "
                "on_training_run_end, which would skip the end-of-run events of the callbacks after it."
            )
        self.pruned = False

    def on_training_run_epoch_end(self, trainer, **kwargs):
        epoch = trainer.run_history.current_epoch
        value = float(trainer.run_history.get_latest_metric(self.monitor))
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned = True
            self._message = (
                f"Optuna pruned trial {self.trial.number} at epoch {epoch} ({self.monitor}: {value:.6g})"
            )
            raise StopTrainingError(self._message)

    def on_training_run_end(self, trainer, **kwargs):
        if self.pruned:
            raise self._optuna.TrialPruned(self._message)
