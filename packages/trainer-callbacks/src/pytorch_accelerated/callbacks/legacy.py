"""Callbacks of pytorch-accelerated 0.1.61 that this project replaced, kept with their meaning so
that scripts written for it run unchanged (MIGRATING.md says what replaced each)."""

from __future__ import annotations

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, ProgressBarCallback, TrainerCallback


class LogMetricsCallback(TrainerCallback):
    """Logs the latest value of the run history's metrics: those whose name contains ``train`` at
    the end of each training epoch, the others at the end of each evaluation epoch. By default it
    prints them (once per node); subclasses override :meth:`log_metrics` to log elsewhere.

    Successor: ``PrintMetricsCallback`` (a default callback) prints one line per epoch, and
    ``MetricsLoggerCallback`` (its ``write``) is the base of loggers to other platforms.
    """

    def on_train_epoch_end(self, trainer, **kwargs):
        self._log_latest(trainer, lambda name: "train" in name)

    def on_eval_epoch_end(self, trainer, **kwargs):
        self._log_latest(trainer, lambda name: "train" not in name)

    def _log_latest(self, trainer, selected) -> None:
        history = trainer.run_history
        names = [name for name in history.get_metric_names() if selected(name)]
        self.log_metrics(trainer, {name: history.get_latest_metric(name) for name in names})

    def log_metrics(self, trainer, metrics: dict) -> None:
        for name, value in metrics.items():
            trainer.print(f"\n{name}: {value}")


class PrintProgressCallback(TrainerCallback):
    """Prints a message when a training or evaluation run starts and ends, and when each
    training and evaluation epoch starts (once per node)."""

    def on_training_run_start(self, trainer, **kwargs):
        trainer.print("\nStarting training run")

    def on_train_epoch_start(self, trainer, **kwargs):
        trainer.print(f"\nStarting epoch {trainer.run_history.current_epoch}")

    def on_eval_epoch_start(self, trainer, **kwargs):
        trainer.print("\nStarting eval epoch")

    def on_training_run_end(self, trainer, **kwargs):
        trainer.print("Finishing training run")

    def on_evaluation_run_start(self, trainer, **kwargs):
        trainer.print("\nStarting evaluation run")

    def on_evaluation_run_end(self, trainer, **kwargs):
        trainer.print("Finishing evaluation run")


def get_default_callbacks(progress_bar: bool = True) -> tuple[type[TrainerCallback], ...]:
    """The Trainer's default callbacks (``DEFAULT_CALLBACKS``), without the progress bar if asked."""
    if progress_bar:
        return DEFAULT_CALLBACKS
    return tuple(callback for callback in DEFAULT_CALLBACKS if callback is not ProgressBarCallback)


__all__ = ["LogMetricsCallback", "PrintProgressCallback", "get_default_callbacks"]
