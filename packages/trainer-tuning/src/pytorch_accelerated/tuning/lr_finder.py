"""The learning-rate range test: train a copy for a few updates while the lr grows exponentially,
and suggest the lr where the loss falls fastest."""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback

from ._copies import optimizer_over, random_state_kept, torch_optimizer


@dataclass
class LRFinderResult:
    """The curve of a range test, one point per optimizer update, and the suggested lr."""

    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    suggestion: float | None
    stopped_early: bool = False
    plot_path: Path | None = field(default=None)

    def plot(self, path: str | os.PathLike) -> Path:
        """Save the smoothed loss against the lr (log scale), with the suggestion marked, as a PNG.
        Needs matplotlib (``pip install 'trainer-tuning[plot]'``); draws on the Agg canvas without pyplot."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "LRFinderResult.plot needs matplotlib: pip install 'trainer-tuning[plot]'"
            ) from error
        figure = Figure(figsize=(6, 4))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(self.lrs, self.losses, alpha=0.3, label="loss")
        axes.plot(self.lrs, self.smoothed_losses, label="smoothed loss")
        if self.suggestion is not None:
            axes.axvline(
                self.suggestion, color="red", linestyle="--", label=f"suggestion: {self.suggestion:.2e}"
            )
        axes.set_xscale("log")
        axes.set_xlabel("learning rate")
        axes.set_ylabel("training loss")
        axes.legend()
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        self.plot_path = path
        return path


def find_lr(
    trainer: Trainer,
    train_dataset,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    per_device_batch_size: int = 8,
    smoothing: float = 0.05,
    divergence_threshold: float = 4.0,
    skip_start: int = 5,
    skip_end: int = 2,
    plot_path: str | os.PathLike | None = None,
    collate_fn: Callable | None = None,
    trainer_class: type[Trainer] | None = None,
    **train_kwargs: Any,
) -> LRFinderResult:
    """Run the learning-rate range test on a copy of ``trainer``'s model and optimizer, and return
    the curve and a suggested lr. ``trainer`` is left exactly as it was: its model, optimizer
    state and Python/numpy/torch random generators are unchanged (nothing of it is trained).

    For ``num_steps`` optimizer updates on ``train_dataset``, every parameter group's lr grows
    exponentially from ``start_lr`` to ``end_lr``; the training loss of each update (averaged over
    the processes, so every process has the same curve) is smoothed with an exponential moving
    average (``smoothing`` is the new value's weight, bias-corrected). The test stops early once
    the smoothed loss exceeds ``divergence_threshold`` times its minimum, or is not finite.

    The suggestion is the lr of the steepest descent of the smoothed loss: the point where its
    gradient with respect to ``log10(lr)`` is most negative, ignoring the first ``skip_start`` and
    last ``skip_end`` points (noisy, and diverging); ``None`` if fewer points remain. Pick an lr
    near it or somewhat below, not the minimum of the curve (where the loss is about to diverge).

    The copy is trained by a new trainer of ``trainer_class`` (``type(trainer)`` by default, so that
    overridden hooks are used; it is built as ``trainer_class(model, loss_func, optimizer,
    callbacks, accelerator_kwargs=...)``) with no callbacks, the same loss function and
    ``accelerator_kwargs``; ``train_kwargs`` go to its ``train`` (``gradient_accumulation_steps``,
    ``train_dataloader_kwargs``, ...). On several processes, call it on every process. The loss is
    read from the device at every update (the test decides each update whether to stop).
    ``plot_path`` saves :meth:`LRFinderResult.plot` there (main process only).
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"Need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}.")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}.")
    if not 0 < smoothing <= 1:
        raise ValueError(f"smoothing must be in (0, 1], got {smoothing}.")
    original = trainer.get_model(keep_torch_compile=False)
    with random_state_kept():
        model = copy.deepcopy(original)
        optimizer = optimizer_over(torch_optimizer(trainer), original, model)
        for group in optimizer.param_groups:
            group["lr"] = start_lr
            group["initial_lr"] = start_lr
        growth = (end_lr / start_lr) ** (1 / (num_steps - 1))
        range_test = _RangeTest(smoothing, divergence_threshold)
        trainer_class = trainer_class or type(trainer)
        copy_trainer = trainer_class(
            model,
            trainer.loss_func,
            optimizer,
            callbacks=[range_test],
            accelerator_kwargs=trainer.accelerator_kwargs,
        )
        copy_trainer.train(
            train_dataset,
            num_epochs=num_steps,  # enough: max_num_train_steps ends the test
            max_num_train_steps=num_steps,
            per_device_batch_size=per_device_batch_size,
            collate_fn=collate_fn,
            create_scheduler_fn=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: growth**step),
            **train_kwargs,
        )
    result = LRFinderResult(
        lrs=range_test.lrs,
        losses=range_test.losses,
        smoothed_losses=range_test.smoothed,
        suggestion=steepest_descent(range_test.lrs, range_test.smoothed, skip_start, skip_end),
        stopped_early=range_test.stopped_early,
    )
    if plot_path is not None and trainer.is_world_process_zero:
        result.plot(plot_path)
    trainer.wait_for_everyone()
    return result


def steepest_descent(
    lrs: list[float], smoothed_losses: list[float], skip_start: int = 5, skip_end: int = 2
) -> float | None:
    """The lr where ``smoothed_losses`` falls fastest against ``log10(lr)``, ignoring the first
    ``skip_start`` and last ``skip_end`` points; None when fewer than two points remain."""
    end = len(lrs) - skip_end
    if end - skip_start < 2:
        return None
    log_lrs = np.log10(np.asarray(lrs[skip_start:end], dtype=np.float64))
    slopes = np.gradient(np.asarray(smoothed_losses[skip_start:end], dtype=np.float64), log_lrs)
    return float(lrs[skip_start + int(np.argmin(slopes))])


class _RangeTest(TrainerCallback):
    """Records the lr and the loss (averaged over processes) of every update; stops on divergence."""

    def __init__(self, smoothing: float, divergence_threshold: float):
        self.smoothing = smoothing
        self.divergence_threshold = divergence_threshold
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.stopped_early = False
        self._window: list[torch.Tensor] = []
        self._average = 0.0

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self._window.append(batch_output["loss"].detach().float())

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))

    def on_optimizer_step_end(self, trainer, optimizer, **kwargs):
        loss = torch.stack(self._window).mean()
        self._window = []
        if trainer.num_processes > 1:
            loss = trainer.reduce(loss, "mean")
        value = loss.item()
        self.losses.append(value)
        self._average = (1 - self.smoothing) * self._average + self.smoothing * value
        smoothed = self._average / (1 - (1 - self.smoothing) ** len(self.losses))
        self.smoothed.append(smoothed)
        if not math.isfinite(smoothed) or smoothed > self.divergence_threshold * min(self.smoothed):
            self.stopped_early = True
            raise StopTrainingError(f"the loss diverged at lr {self.lrs[-1]:.3g}")
