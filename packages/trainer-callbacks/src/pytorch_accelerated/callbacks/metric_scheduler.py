"""Metric-driven learning-rate schedulers (``ReduceLROnPlateau``), stepped with the metric they watch."""

from __future__ import annotations

from typing import Any, Callable

from pytorch_accelerated.trainer import TrainerCallback

from .watching import check_metric_can_be_recorded, warn_if_undeclared


class MetricSchedulerCallback(TrainerCallback):
    """Owns a scheduler whose ``step`` takes a metric, such as ``torch.optim.lr_scheduler.ReduceLROnPlateau``,
    and steps it with the metric ``monitor``.

    The rule: the scheduler steps once for every new value of ``monitor``, when the epoch that
    recorded it ends (``on_training_run_epoch_end``, after every callback has recorded the epoch's
    metrics), or, for a value recorded by an evaluation inside an epoch (``step_eval_loss`` from
    ``StepBasedEvaluationCallback``), when that evaluation ends. So ``"eval_loss_epoch"`` steps it
    once per epoch, and ``"step_eval_loss"`` once per step-based evaluation. Evaluations outside
    training never step it. An ``eval_*`` monitor in a run without an ``eval_dataset`` is a
    ``ValueError`` when the run starts, and a ``monitor`` that neither the Trainer nor a callback
    declares (``trainer.recorded_metric_names()``) a warning then; a run that ends an epoch without a
    value of ``monitor`` ever recorded raises ``KeyError`` naming the metrics that are recorded.

    ``create_scheduler_fn(optimizer)`` builds the scheduler when each training run starts (e.g.
    ``functools.partial(ReduceLROnPlateau, mode="min", factor=0.5, patience=2)``). It may be used
    alongside the trainer's own per-update ``create_scheduler_fn`` (a warmup, say), but both then
    set the learning rate. Its state (the scheduler's, and how many values it has seen) is saved
    in training states, so a resumed run steps it exactly as the uninterrupted run did.
    """

    def __init__(self, create_scheduler_fn: Callable, monitor: str = "eval_loss_epoch"):
        if not callable(create_scheduler_fn):
            raise TypeError(
                "create_scheduler_fn must build the scheduler from the optimizer, e.g. "
                "functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=2)."
            )
        self.create_scheduler_fn = create_scheduler_fn
        self.monitor = monitor
        self.scheduler = None
        self._num_values_seen = 0
        self._in_training_run = False
        self._warned_undeclared = False

    def on_training_run_start(self, trainer, **kwargs):
        check_metric_can_be_recorded(self.monitor, trainer, type(self).__name__)
        if not self._warned_undeclared:
            self._warned_undeclared = warn_if_undeclared(self.monitor, trainer, type(self).__name__)
        # torch's schedulers count the steps of the optimizer they change: give them the torch one
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        self.scheduler = self.create_scheduler_fn(optimizer)
        self._num_values_seen = len(trainer.run_history.get_metric_values(self.monitor))
        self._in_training_run = True

    def on_evaluation_run_end(self, trainer, **kwargs):
        if self._in_training_run:
            self._step_with_new_values(trainer)

    def on_training_run_epoch_end(self, trainer, **kwargs):
        values = self._step_with_new_values(trainer)
        if not values:
            trainer.run_history.get_latest_metric(self.monitor)  # raises KeyError naming the recorded metrics

    def on_training_run_end(self, trainer, **kwargs):
        self._in_training_run = False

    def on_training_run_error(self, trainer, error, **kwargs):
        self._in_training_run = False  # or a later evaluate() outside training would step the scheduler

    def _step_with_new_values(self, trainer) -> list:
        values = trainer.run_history.get_metric_values(self.monitor)
        for value in values[self._num_values_seen :]:
            self.scheduler.step(float(value))
        self._num_values_seen = len(values)
        return values

    def state_dict(self) -> dict[str, Any]:
        if self.scheduler is None:
            return {}
        return {"scheduler": self.scheduler.state_dict(), "num_values_seen": self._num_values_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict["scheduler"])
        self._num_values_seen = state_dict["num_values_seen"]
