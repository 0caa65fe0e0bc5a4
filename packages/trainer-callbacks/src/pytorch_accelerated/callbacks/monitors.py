"""Callbacks that record training facts into the run history: learning rates and throughput."""

from __future__ import annotations

import time

import torch

from pytorch_accelerated.trainer import TrainerCallback

from .loggers import learning_rates


class LearningRateMonitorCallback(TrainerCallback):
    """Records the learning rate of every parameter group into the run history, for every
    ``log_every_n_steps``-th optimizer update: as ``lr`` for an optimizer with one parameter group,
    otherwise as ``lr_group_0``, ``lr_group_1``, ...

    The value recorded is the one the update uses (read just before the optimizer step, after any
    scheduler step of the previous update), recorded at that update's step (the first update is
    step 1). The run history then holds one value per recorded update: the loggers log each one
    at its step, and ``PlotMetricsCallback`` draws them at their update. Learning rates are Python
    floats (or CPU tensors), so this adds no host-device synchronisation.
    """

    def __init__(self, log_every_n_steps: int = 1):
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}.")
        self.log_every_n_steps = log_every_n_steps

    def recorded_metric_names(self, trainer):
        return list(learning_rates(trainer.optimizer))

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        update = trainer.completed_update_steps + 1
        if update % self.log_every_n_steps:
            return
        for name, learning_rate in learning_rates(optimizer).items():
            trainer.run_history.update_metric(name, learning_rate, step=update)


class ThroughputMonitorCallback(TrainerCallback):
    """Records, for every training epoch, ``train_samples_per_second``, ``train_steps_per_second``
    (optimizer updates per second) and ``train_epoch_time_seconds`` into the run history.

    The time is the wall-clock time (``time.perf_counter``) from the start to the end of the
    training epoch, as this process saw it. Samples are counted from each step's
    ``batch_output["batch_size"]`` (an int, so no host-device synchronisation per step); on several
    processes they are summed over all processes with one reduction at the end of the epoch, made
    on every process. The few samples that distributed training repeats to even out the last
    batches count too.

    With ``log_every_n_steps=n``, also every n-th optimizer update, the rates over the last n
    updates (or since the epoch's start): ``train_samples_per_second_step`` and
    ``train_steps_per_second_step``, at that update's step. These are read without communication:
    the samples are this process's times the number of processes.
    """

    def __init__(self, log_every_n_steps: int | None = None):
        if log_every_n_steps is not None and log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1 or None, got {log_every_n_steps}.")
        self.log_every_n_steps = log_every_n_steps
        self._start_time = 0.0
        self._start_update = 0
        self._num_samples = 0
        self._interval = (0.0, 0, 0)  # (time, update, samples) where the current interval started

    def recorded_metric_names(self, trainer):
        per_epoch = ["train_samples_per_second", "train_steps_per_second", "train_epoch_time_seconds"]
        per_step = ["train_samples_per_second_step", "train_steps_per_second_step"]
        return per_epoch + (per_step if self.log_every_n_steps is not None else [])

    def on_train_epoch_start(self, trainer, **kwargs):
        self._start_time = time.perf_counter()
        self._start_update = trainer.completed_update_steps
        self._num_samples = 0
        self._interval = (self._start_time, self._start_update, 0)

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self._num_samples += int(batch_output["batch_size"])

    def on_optimizer_step_end(self, trainer, **kwargs):
        n, update = self.log_every_n_steps, trainer.completed_update_steps
        if n is None or update % n:
            return
        now = time.perf_counter()
        start_time, start_update, start_samples = self._interval
        elapsed = now - start_time
        history = trainer.run_history
        history.update_metric(
            "train_samples_per_second_step",
            (self._num_samples - start_samples) * trainer.num_processes / elapsed,
        )
        history.update_metric("train_steps_per_second_step", (update - start_update) / elapsed)
        self._interval = (now, update, self._num_samples)

    def on_train_epoch_end(self, trainer, **kwargs):
        elapsed = time.perf_counter() - self._start_time
        num_samples = self._samples_on_all_processes(trainer)
        num_updates = trainer.completed_update_steps - self._start_update
        history = trainer.run_history
        history.update_metric("train_samples_per_second", num_samples / elapsed)
        history.update_metric("train_steps_per_second", num_updates / elapsed)
        history.update_metric("train_epoch_time_seconds", elapsed)

    def _samples_on_all_processes(self, trainer) -> int:
        if trainer.num_processes == 1:
            return self._num_samples
        count = torch.tensor(self._num_samples, dtype=torch.int64, device=trainer.device)
        return int(trainer.reduce(count, "sum").item())
