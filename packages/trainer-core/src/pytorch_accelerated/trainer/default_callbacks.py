"""The callbacks a Trainer uses unless told otherwise: without them the loop is hard to use."""

from __future__ import annotations

import math
from numbers import Number
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ._arguments import check_positive_int
from .callbacks import StopTrainingError, TrainerCallback

if TYPE_CHECKING:
    from .trainer import Trainer


class MoveModulesToDeviceCallback(TrainerCallback):
    """Moves every ``nn.Module`` attribute of the trainer other than the model (a loss with
    weights, a metric) to the trainer's device; the model itself is placed by accelerate."""

    def _move_modules(self, trainer: Trainer) -> None:
        for name, value in vars(trainer).items():
            if isinstance(value, torch.nn.Module) and name != "model":
                value.to(trainer.device)

    def on_training_run_start(self, trainer, **kwargs):
        self._move_modules(trainer)

    def on_evaluation_run_start(self, trainer, **kwargs):
        self._move_modules(trainer)


class TerminateOnNaNCallback(TrainerCallback):
    """Stops training, on every process, once the training loss is NaN or infinite.

    Each step's loss is kept (detached, on its device, never read on its own); every
    ``check_every_n_steps`` steps and at the end of each epoch the kept losses are checked with
    one read, so the check adds no host-device synchronisation per step (a read costs ~10 us
    even on the CPU) and a run stops at most that many steps after its first non-finite loss.
    Losses kept but not yet checked are part of each process's training state.
    """

    per_process_state = True

    def __init__(self, check_every_n_steps: int = 50):
        check_positive_int("check_every_n_steps", check_every_n_steps)
        self.check_every_n_steps = check_every_n_steps
        self._unchecked_losses: list[torch.Tensor] = []
        self._found_non_finite = False

    def on_train_epoch_start(self, trainer, **kwargs):
        self._unchecked_losses.clear()
        self._found_non_finite = False

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self._unchecked_losses.append(batch_output["loss"].detach())
        if len(self._unchecked_losses) >= self.check_every_n_steps:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, **kwargs):
        self._check(trainer)

    def state_dict(self):
        return {"found_non_finite": self._has_non_finite_loss()}

    def load_state_dict(self, state_dict):
        self._unchecked_losses.clear()
        self._found_non_finite = state_dict["found_non_finite"]

    def _has_non_finite_loss(self) -> bool:
        """Whether a kept loss is not finite (one read); forgets the kept losses."""
        if self._unchecked_losses:
            losses = torch.cat([loss.reshape(-1).float() for loss in self._unchecked_losses])
            self._found_non_finite = self._found_non_finite or not bool(torch.isfinite(losses).all())
            self._unchecked_losses.clear()
        return self._found_non_finite

    def _check(self, trainer: Trainer) -> None:
        if trainer.any_process(self._has_non_finite_loss()):
            raise StopTrainingError(
                f"The training loss became NaN or infinite (at or before update step "
                f"{trainer.completed_update_steps} of the run, epoch {trainer.run_history.current_epoch}). "
                "Lower the learning rate, clip gradients (train(..., gradient_clip_norm=1.0)), "
                "check the inputs for NaNs, or remove TerminateOnNaNCallback to keep going."
            )


class ProgressBarCallback(TrainerCallback):
    """One tqdm progress bar per training and per evaluation epoch, on the main process only
    (a resumed epoch's bar starts where the saved run stopped), redrawn at most every
    ``refresh_interval_s`` seconds: a redraw costs ~0.1-0.3 ms, tqdm's default 0.1 s interval
    a few microseconds on every step of a fast loop."""

    def __init__(self, refresh_interval_s: float = 0.5):
        if not refresh_interval_s >= 0:
            raise ValueError(f"refresh_interval_s must be a number of seconds >= 0, got {refresh_interval_s!r}.")
        self.refresh_interval_s = refresh_interval_s
        self._bar: tqdm | None = None

    def _open(self, trainer: Trainer, total: int | None, description: str, initial: int = 0) -> None:
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=description,
            disable=not trainer.is_local_process_zero,
            leave=False,
            dynamic_ncols=True,
            mininterval=self.refresh_interval_s,
        )

    def _advance(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_epoch_start(self, trainer, **kwargs):
        self._open(
            trainer,
            _length_or_none(trainer.train_dataloader),
            f"epoch {trainer.run_history.current_epoch} train",
            initial=trainer.completed_epoch_batches,
        )

    def on_train_step_end(self, trainer, **kwargs):
        if self._bar is not None:  # _advance(), one call less on every step
            self._bar.update(1)

    def on_train_epoch_end(self, trainer, **kwargs):
        self._close()

    def on_eval_epoch_start(self, trainer, **kwargs):
        self._open(trainer, _length_or_none(trainer.eval_dataloader), "eval")

    def on_eval_step_end(self, trainer, **kwargs):
        self._advance()

    def on_eval_epoch_end(self, trainer, **kwargs):
        self._close()

    def on_stop_training_error(self, trainer, **kwargs):
        self._close()


class PrintMetricsCallback(TrainerCallback):
    """Prints, on the main process, one line per epoch with the metrics recorded during it
    (including those of evaluations run by callbacks mid-epoch), and the metrics of each
    ``evaluate`` run made outside training."""

    def __init__(self):
        self._printed_counts: dict[str, int] = {}
        self._in_training_run = False

    def on_training_run_start(self, trainer, **kwargs):
        self._in_training_run = True
        self._mark_all_printed(trainer)
        config = trainer.run_config
        if trainer.resumed_from is not None:
            trainer.print(
                f"Resuming training run from {trainer.resumed_from}: epoch {trainer.run_history.current_epoch}, "
                f"after update step {trainer.completed_update_steps} of {config.num_training_steps}"
            )
            return
        trainer.print(
            f"Starting training run: {config.num_epochs} epoch(s), {config.num_training_steps} update step(s), "
            f"{config.num_processes} process(es) on {trainer.device.type}, mixed precision: {config.mixed_precision}"
        )

    def on_training_run_epoch_end(self, trainer, **kwargs):
        trainer.print(f"epoch {trainer.run_history.current_epoch}: {self._new_metrics_line(trainer)}")

    def on_evaluation_run_start(self, trainer, **kwargs):
        if not self._in_training_run:
            self._mark_all_printed(trainer)

    def on_evaluation_run_end(self, trainer, **kwargs):
        if not self._in_training_run:
            trainer.print(f"evaluation: {self._new_metrics_line(trainer)}")

    def on_stop_training_error(self, trainer, stop_training_error, **kwargs):
        trainer.print(f"Training stopped early: {stop_training_error}")

    def on_training_run_end(self, trainer, **kwargs):
        self._in_training_run = False
        trainer.print("Finished training run")

    def state_dict(self):
        return {"printed_counts": dict(self._printed_counts)}

    def load_state_dict(self, state_dict):
        self._printed_counts = dict(state_dict["printed_counts"])

    def _mark_all_printed(self, trainer: Trainer) -> None:
        history = trainer.run_history
        self._printed_counts = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}

    def _new_metrics_line(self, trainer: Trainer) -> str:
        """The metrics written since they were last shown, formatted, and mark them as shown."""
        history = trainer.run_history
        parts = []
        for name in history.get_metric_names():
            count = len(history.get_metric_values(name))
            if count > self._printed_counts.get(name, 0):
                parts.append(f"{name}: {format_metric_value(history.get_latest_metric(name))}")
            self._printed_counts[name] = count
        return " | ".join(parts) if parts else "(no metrics)"


def format_metric_value(value) -> str:
    """A short, readable rendering of a metric value (float, int, scalar tensor or other)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Number):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0 or not math.isfinite(value) or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"
    return f"{value:.4e}"


def _length_or_none(dataloader) -> int | None:
    try:
        return len(dataloader)
    except TypeError:
        return None


DEFAULT_CALLBACKS: tuple[type[TrainerCallback], ...] = (
    MoveModulesToDeviceCallback,
    TerminateOnNaNCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
)
"""The callbacks a Trainer gets by default (classes: each Trainer makes its own instances).
Pass ``callbacks=()`` for none, or your own list, e.g. ``(*DEFAULT_CALLBACKS, MyCallback())``."""
