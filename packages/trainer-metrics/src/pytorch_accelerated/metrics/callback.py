""":class:`MetricsCallback`: torchmetrics metrics updated in the Trainer's loop, recorded per epoch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
from torchmetrics import Metric, MetricCollection

from pytorch_accelerated.trainer import TrainerCallback

from .inputs import INPUTS_FN_HINT, check_class_count, default_metric_inputs
from .recording import as_metric_dict, record_metrics

InputsFn = Callable[[Any, Mapping[str, Any], Metric], tuple]


class MetricsCallback(TrainerCallback):
    """Updates torchmetrics metrics on every evaluation step (and training step, with
    ``on_train=True``), and at the end of each epoch records them in the run history as
    ``eval_<name>`` / ``train_<name>``, then resets them.

    Values are exact over the whole dataset on any number of processes: each process updates
    with its own samples (never a padded duplicate) and torchmetrics gathers the states once,
    when computing at the epoch end; nothing is synchronised per step. The metrics are recorded
    at ``on_eval_epoch_end`` / ``on_train_epoch_end``, before ``on_training_run_epoch_end``, where
    callbacks such as early stopping read them, whatever the order of the callback list.

    Args:
        metrics: a dict of name to torchmetrics ``Metric``, or a ``MetricCollection``. These
            instances serve evaluation; training uses copies (``train_metrics``).
        inputs_fn: ``(batch, batch_output, metric) -> tuple`` of ``metric.update`` arguments,
            batch first; :func:`default_metric_inputs` by default.
        on_train: also update on training steps and record ``train_<name>``.

    The training metrics' running states are part of each process's training state, so a run
    resumed inside an epoch (``train(..., resume_from=...)``) records the same values.
    """

    per_process_state = True  # each process accumulates its own share of the epoch

    def __init__(
        self,
        metrics: Mapping[str, Metric] | MetricCollection,
        inputs_fn: InputsFn = default_metric_inputs,
        on_train: bool = False,
    ):
        self.eval_metrics = as_metric_dict(metrics)
        self.train_metrics = (
            {name: metric.clone() for name, metric in self.eval_metrics.items()} if on_train else {}
        )
        self.inputs_fn = inputs_fn
        # An evaluation may run inside another one's epoch end (an EMA callback evaluating its
        # weights): each running evaluation epoch has its own metrics, the innermost last.
        self._running_evals: list[dict[str, Metric]] = []
        self._evaluation_run_starts: list[int] = []
        self._check_eval_inputs = False  # on the first training step's outputs, before the first update

    def recorded_metric_names(self, trainer):
        """``eval_<name>`` for each evaluation set (``val_eval_<name>`` for a named one), ``train_<name>``
        with ``on_train``; ``<...>_<name>_*`` too: a metric that returns a dict records a name per key."""
        names = [f"eval_{name}" for name in self.eval_metrics]
        evaluation = [recorded for name in names for recorded in trainer.evaluation_metric_names(name)]
        training = [f"train_{name}" for name in self.train_metrics]
        return [pattern for name in evaluation + training for pattern in (name, f"{name}_*")]

    # ------------------------------------------------------------------ training steps

    def on_training_run_start(self, trainer, **kwargs):
        self._running_evals.clear()
        self._evaluation_run_starts.clear()
        self._prepare(trainer)
        self._check_eval_inputs = trainer.eval_dataset is not None

    def on_train_epoch_start(self, trainer, **kwargs):
        _reset(self.train_metrics)

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        if self._check_eval_inputs:
            self._check_eval_inputs = False
            self._check_eval_inputs_on(batch, batch_output)
        if self.train_metrics:
            num_real = _num_real_train_samples(trainer, batch_output["batch_size"])
            if num_real != 0:
                self._update(self.train_metrics, batch, batch_output, num_real)

    def on_train_epoch_end(self, trainer, **kwargs):
        if self.train_metrics:
            record_metrics(trainer.run_history, self.train_metrics, prefix="train_")

    def on_training_run_end(self, trainer, **kwargs):
        self._running_evals.clear()

    # ------------------------------------------------------------------ evaluation steps

    def on_evaluation_run_start(self, trainer, **kwargs):
        self._evaluation_run_starts.append(len(self._running_evals))
        self._prepare(trainer)

    def on_eval_epoch_start(self, trainer, **kwargs):
        if self._running_evals:
            metrics = {name: metric.clone() for name, metric in self.eval_metrics.items()}
        else:
            metrics = self.eval_metrics
        _reset(metrics)
        self._running_evals.append(metrics)

    def on_eval_step_end(self, trainer, batch, batch_output, **kwargs):
        self._update(self._running_evals[-1], batch, batch_output)

    def on_eval_epoch_end(self, trainer, **kwargs):
        record_metrics(trainer.run_history, self._running_evals.pop(), prefix="eval_")

    def on_evaluation_run_end(self, trainer, **kwargs):
        # drops the epoch of an evaluation that a StopTrainingError ended before its end
        if self._evaluation_run_starts:
            del self._running_evals[self._evaluation_run_starts.pop() :]

    # ------------------------------------------------------------------ training states

    def state_dict(self):
        return {"train_metrics": {name: _metric_state(metric) for name, metric in self.train_metrics.items()}}

    def load_state_dict(self, state_dict):
        for name, state in state_dict["train_metrics"].items():
            _load_metric_state(self.train_metrics[name], state)

    # ------------------------------------------------------------------ helpers

    def _prepare(self, trainer) -> None:
        for name, metric in (*self.eval_metrics.items(), *self.train_metrics.items()):
            metric.to(trainer.device)
            if trainer.num_processes > 1 and not metric.sync_on_compute:
                raise ValueError(
                    f"Metric {name!r} ({type(metric).__name__}) has sync_on_compute=False, so on "
                    f"{trainer.num_processes} processes it would report each process's share only; "
                    "create it with sync_on_compute=True."
                )

    def _check_eval_inputs_on(self, batch, batch_output) -> None:
        """Check the evaluation metrics' class counts on a training step's outputs: before the first
        update rather than after the first epoch (what they cannot tell waits for the evaluation)."""
        for name, metric in self.eval_metrics.items():
            try:
                inputs = self.inputs_fn(batch, batch_output, metric)
            except Exception:  # noqa: BLE001 - training outputs may differ (a detection model's losses)
                continue
            check_class_count(name, metric, inputs)

    def _update(self, metrics: dict[str, Metric], batch, batch_output, num_real: int | None = None) -> None:
        for name, metric in metrics.items():
            inputs = [
                _first(_detach(value), num_real) for value in self.inputs_fn(batch, batch_output, metric)
            ]
            if metric.update_count == 0:  # an epoch's first update: the inputs' shapes hold for the epoch
                check_class_count(name, metric, inputs)
            try:
                metric.update(*inputs)
            except (RuntimeError, ValueError, TypeError, IndexError) as error:
                raise ValueError(
                    f"Metric {name!r} ({type(metric).__name__}) could not be updated with "
                    f"inputs {_describe(inputs)}: {error}\n{INPUTS_FN_HINT}"
                ) from error


def _num_real_train_samples(trainer, batch_size: int) -> int | None:
    """How many of this process's samples in the current training batch are not padding, or None if all
    are."""
    real = trainer.num_real_samples(batch_size)
    return None if real == batch_size else real


def _metric_state(metric: Metric) -> dict[str, Any]:
    """What a metric has accumulated since its last reset, as tensors (or lists of tensors)."""
    values = {
        name: (
            value.detach().clone()
            if isinstance(value, torch.Tensor)
            else [item.detach().clone() for item in value]
        )
        for name, value in metric.metric_state.items()
    }
    return {"values": values, "update_count": metric.update_count}


def _load_metric_state(metric: Metric, state: dict[str, Any]) -> None:
    for name, value in state["values"].items():
        moved = (
            value.to(metric.device)
            if isinstance(value, torch.Tensor)
            else [item.to(metric.device) for item in value]
        )
        setattr(metric, name, moved)
    metric._update_count = state["update_count"]
    metric._computed = None


def _reset(metrics: dict[str, Metric]) -> None:
    for metric in metrics.values():
        metric.reset()


def _detach(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


def _first(value, count: int | None):
    """The first ``count`` samples of a batch-first input; all of it when ``count`` is None."""
    if count is None or (isinstance(value, torch.Tensor) and value.dim() == 0):
        return value
    return value[:count] if isinstance(value, (torch.Tensor, list)) else value


def _describe(inputs) -> str:
    parts = []
    for value in inputs:
        if isinstance(value, torch.Tensor):
            parts.append(f"{str(value.dtype).removeprefix('torch.')}{list(value.shape)}")
        else:
            parts.append(type(value).__name__)
    return "(" + ", ".join(parts) + ")"
