"""The callbacks a Trainer uses unless told otherwise: without them the loop is hard to use."""

from __future__ import annotations

import functools
import math
import shutil
import sys
import threading
from numbers import Number
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm
from tqdm.autonotebook import tqdm as _chosen_tqdm
from tqdm.std import tqdm as _terminal_tqdm

from ._arguments import check_positive_int
from .callbacks import StopTrainingError, TrainerCallback
from .running_loss import RunningLoss


class MoveModulesToDeviceCallback(TrainerCallback):
    """Moves every ``nn.Module`` attribute of the trainer other than the model (a loss with
    weights, a metric) to the trainer's device; the model itself is placed by accelerate."""

    def _move_modules(self, trainer) -> None:
        for name, value in vars(trainer).items():
            if isinstance(value, torch.nn.Module) and name != "model":
                value.to(trainer.device)

    def on_training_run_start(self, trainer, **kwargs):
        self._move_modules(trainer)

    def on_evaluation_run_start(self, trainer, **kwargs):
        self._move_modules(trainer)


class TerminateOnNaNCallback(TrainerCallback):
    """Stops training, on every process, once the training loss is NaN or infinite.

    The loop adds each step's loss to its running loss of the epoch, a sum kept on the device,
    which a non-finite loss makes non-finite for the rest of the epoch. Every
    ``check_every_n_steps`` steps and at the end of each epoch that one number is checked with one
    read, so the check adds no host-device synchronisation (a read costs ~10 us even on the CPU)
    and no tensor operation to a step, and a run stops at most that many steps after its first
    non-finite loss. (A sum beyond float32's range, about 3.4e38, counts as infinite too: only
    losses that have diverged get there.)
    """

    per_process_state = True

    def __init__(self, check_every_n_steps: int = 50):
        check_positive_int("check_every_n_steps", check_every_n_steps)
        self.check_every_n_steps = check_every_n_steps
        self._steps_since_check = 0
        self._found_non_finite = False
        self._running_loss: RunningLoss | None = None

    def on_train_epoch_start(self, trainer, **kwargs):
        self._steps_since_check = 0
        self._found_non_finite = False
        self._running_loss = trainer.running_train_loss

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self._steps_since_check += 1
        if self._steps_since_check >= self.check_every_n_steps:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, **kwargs):
        self._check(trainer)

    def check_for_nan_after_batch(self, batch_output: dict, step: str | None = None) -> None:
        """Raise :class:`StopTrainingError` if one batch's loss is NaN or infinite (0.1.61's check, one
        host-device read; the loop does not call it: it checks the running loss as described above).

        Args:
            batch_output: what ``calculate_train_batch_loss`` or ``calculate_eval_batch_loss`` returned.
            step: the stage named in the message, e.g. ``"training"`` or ``"validation"``.
        """
        if not bool(torch.isfinite(batch_output["loss"]).all()):
            raise StopTrainingError(f"Stopping training due to NaN loss in {step} step")

    def state_dict(self):
        return {"found_non_finite": self._has_non_finite_loss()}

    def load_state_dict(self, state_dict):
        self._steps_since_check = 0
        self._found_non_finite = state_dict["found_non_finite"]

    def _has_non_finite_loss(self) -> bool:
        """Whether a loss of the epoch so far was not finite (one read)."""
        self._steps_since_check = 0
        if not self._found_non_finite and self._running_loss is not None:
            self._found_non_finite = not self._running_loss.is_finite()
        return self._found_non_finite

    def _check(self, trainer) -> None:
        if trainer.any_process(self._has_non_finite_loss()):
            raise StopTrainingError(
                "The training loss became NaN or infinite (at or before update step "
                f"{trainer.completed_update_steps} of the run, epoch {trainer.run_history.current_epoch}). "
                "Lower the learning rate, clip gradients (train(..., gradient_clip_norm=1.0)), "
                "check the inputs for NaNs, or remove TerminateOnNaNCallback to keep going."
            )


class _Bar(tqdm):
    """tqdm as the progress bar uses it: the running training loss read only when the bar is
    drawn, and, for output that is not a terminal, one plain line per redraw (no carriage returns).

    Its own thread lock and no monitor thread: tqdm's defaults create a multiprocessing lock (an
    import and a semaphore) and start a thread with the first bar of a process, about a
    millisecond that the first epoch paid; only the main process draws bars here."""

    _lock = threading.RLock()
    monitor_interval = 0

    def __init__(
        self, *args, read_postfix: Callable[[], str] | None = None, plain_lines: bool = False, **kwargs
    ):
        self._read_postfix = read_postfix
        self._plain_lines = plain_lines
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        values = super().format_dict
        postfix = self._read_postfix() if self._read_postfix is not None else ""
        if postfix:
            values["postfix"] = postfix
        return values

    def display(self, msg=None, pos=None):
        if not self._plain_lines:
            return super().display(msg, pos)
        if msg == "":
            return False  # tqdm clearing the line at close: nothing to clear in a file
        self.fp.write((self.__str__() if msg is None else msg) + "\n")
        self.fp.flush()
        return True


_PLAIN_LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} batches [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class ProgressBarCallback(TrainerCallback):
    """One progress bar per training and per evaluation epoch, on the main process only (a resumed
    epoch's bar starts where the saved run stopped).

    On a terminal or in a notebook, a tqdm bar redrawn at most every ``refresh_interval_s``; with output
    redirected to a file, a plain line every ``file_refresh_interval_s`` (none for a shorter epoch). The
    training bar shows ``loss=``, this process's running mean training loss of the epoch, and the latest
    value of each metric in ``metrics``: all read only when the bar is redrawn, never per step.

    Args:
        refresh_interval_s: seconds between redraws on a terminal.
        file_refresh_interval_s: seconds between lines in a file.
        metrics: names of recorded metrics to show beside the loss (``"eval_accuracy"``, ``"lr"``).
    """

    def __init__(
        self,
        refresh_interval_s: float = 0.5,
        file_refresh_interval_s: float = 30.0,
        metrics: Sequence[str] = (),
    ):
        for name, value in (
            ("refresh_interval_s", refresh_interval_s),
            ("file_refresh_interval_s", file_refresh_interval_s),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}.")
        if isinstance(metrics, str) or not all(isinstance(name, str) for name in metrics):
            raise TypeError(
                f"metrics must be a sequence of metric names, such as ('eval_accuracy',); got {metrics!r}."
            )
        self.refresh_interval_s = refresh_interval_s
        self.file_refresh_interval_s = file_refresh_interval_s
        self.metrics = tuple(metrics)
        self._bar: tqdm | None = None

    def _open(
        self, trainer, total: int | None, description: str, initial: int = 0, read_postfix=None
    ) -> None:
        live = _draws_live_bars(sys.stderr)
        interval = self.refresh_interval_s if live else self.file_refresh_interval_s
        self._bar = _Bar(
            total=total,
            initial=initial,
            desc=description,
            disable=not trainer.is_local_process_zero,
            leave=False,
            dynamic_ncols=live,
            mininterval=interval,
            delay=interval,  # an epoch shorter than one interval draws nothing: no line to clear
            bar_format=None if live else _PLAIN_LINE_FORMAT,
            read_postfix=read_postfix,
            plain_lines=not live,
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
            read_postfix=functools.partial(self._postfix, trainer),
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

    def _postfix(self, trainer) -> str:
        """``loss=0.4321 eval_accuracy=0.9100``: read when the bar is drawn."""
        loss = trainer.running_train_loss.mean()
        shown = [("loss", loss)] if loss is not None else []
        history = trainer.run_history
        recorded = set(history.get_metric_names())
        shown += [(name, history.get_latest_metric(name)) for name in self.metrics if name in recorded]
        return " ".join(f"{name}={format_metric_value(value)}" for name, value in shown)


def _draws_live_bars(stream) -> bool:
    """A terminal, or a notebook (tqdm.auto chose its widget): a bar redrawn in place."""
    if _chosen_tqdm is not _terminal_tqdm:  # tqdm.auto found a notebook
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class PrintMetricsCallback(TrainerCallback):
    """Prints, on the main process, the metrics recorded during each epoch (including those of
    evaluations run by callbacks mid-epoch), and the metrics of each ``evaluate`` run made
    outside training: on one line (``epoch 3: train_loss_epoch: 0.4123 | eval_loss_epoch: ...``)
    when it fits the terminal's width (``COLUMNS``, 100 for a file), else as a small aligned table
    under ``epoch 3:``, as many name/value columns a row as fit."""

    def __init__(self):
        self._printed_counts: dict[str, int] = {}
        self._in_training_run = False

    def on_training_run_start(self, trainer, **kwargs):
        self._in_training_run = True
        self._mark_all_printed(trainer)
        config = trainer.run_config
        if trainer.resumed_from is not None:
            trainer.print(
                f"Resuming training run from {trainer.resumed_from}: epoch"
                f" {trainer.run_history.current_epoch}, after update step {trainer.completed_update_steps} of"
                f" {config.num_training_steps}"
            )
            return
        trainer.print(
            f"Starting training run: {config.num_epochs} epoch(s), {config.num_training_steps} update"
            f" step(s), {config.num_processes} process(es) on {trainer.device.type}, mixed precision:"
            f" {config.mixed_precision}"
        )

    def on_training_run_epoch_end(self, trainer, **kwargs):
        trainer.print(
            format_metrics_summary(f"epoch {trainer.run_history.current_epoch}", self._new_metrics(trainer))
        )

    def on_evaluation_run_start(self, trainer, **kwargs):
        if not self._in_training_run:
            self._mark_all_printed(trainer)

    def on_evaluation_run_end(self, trainer, **kwargs):
        if not self._in_training_run:
            trainer.print(format_metrics_summary("evaluation", self._new_metrics(trainer)))

    def on_stop_training_error(self, trainer, stop_training_error, **kwargs):
        trainer.print(f"Training stopped early: {stop_training_error}")

    def on_training_run_end(self, trainer, **kwargs):
        self._in_training_run = False
        trainer.print("Finished training run")

    def state_dict(self):
        return {"printed_counts": dict(self._printed_counts)}

    def load_state_dict(self, state_dict):
        self._printed_counts = dict(state_dict["printed_counts"])

    def _mark_all_printed(self, trainer) -> None:
        history = trainer.run_history
        self._printed_counts = {
            name: len(history.get_metric_values(name)) for name in history.get_metric_names()
        }

    def _new_metrics(self, trainer) -> list[tuple[str, str]]:
        """The metrics written since they were last shown, formatted, and mark them as shown."""
        history = trainer.run_history
        metrics = []
        for name in history.get_metric_names():
            count = len(history.get_metric_values(name))
            if count > self._printed_counts.get(name, 0):
                metrics.append((name, format_metric_value(history.get_latest_metric(name))))
            self._printed_counts[name] = count
        return metrics


def format_metrics_summary(title: str, metrics: list[tuple[str, str]], width: int | None = None) -> str:
    """``title: a: 1.0000 | b: 2.0000`` when that fits in ``width`` characters (by default the
    terminal's), else ``title:`` over rows of aligned ``name value`` columns, indented."""
    if not metrics:
        return f"{title}: (no metrics)"
    width = width or shutil.get_terminal_size((100, 24)).columns
    line = f"{title}: " + " | ".join(f"{name}: {value}" for name, value in metrics)
    if len(line) <= width:
        return line
    name_width = max(len(name) for name, _ in metrics)
    value_width = max(len(value) for _, value in metrics)
    cells = [f"{name:<{name_width}}  {value:>{value_width}}" for name, value in metrics]
    gap, indent = "   ", "  "
    per_row = max(1, (width - len(indent) + len(gap)) // (name_width + 2 + value_width + len(gap)))
    rows = [
        indent + gap.join(cells[start : start + per_row]).rstrip() for start in range(0, len(cells), per_row)
    ]
    return "\n".join([f"{title}:", *rows])


def format_metric_value(value) -> str:
    """A short, readable rendering of a metric value: a number, a scalar tensor, or for anything larger
    (an image, a histogram's values) its shape or type, never its whole content.

    Args:
        value: the value recorded.
    """
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return f"tensor{list(value.shape)}"
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Number):
        text = str(value)
        return text if len(text) <= 40 and "\n" not in text else f"<{type(value).__name__}>"
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
