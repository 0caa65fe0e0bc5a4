"""Callbacks that change how a run proceeds: step-based evaluation, batch limits, SyncBatchNorm."""

from __future__ import annotations

import torch

from pytorch_accelerated.trainer import TrainerCallback


class StepBasedEvaluationCallback(TrainerCallback):
    """Runs ``trainer.evaluate()`` every ``eval_every_n_steps`` optimizer updates, recording
    ``evaluation_loss`` (and whatever metric callbacks record); the model goes back to training
    mode afterwards. Needs ``eval_dataset`` in ``train``."""

    def __init__(self, eval_every_n_steps: int):
        if eval_every_n_steps < 1:
            raise ValueError(f"eval_every_n_steps must be >= 1, got {eval_every_n_steps}.")
        self.eval_every_n_steps = eval_every_n_steps

    def on_training_run_start(self, trainer, **kwargs):
        if trainer.eval_dataloader is None:
            raise ValueError("StepBasedEvaluationCallback needs an eval_dataset: pass train(..., eval_dataset=...).")

    def on_optimizer_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps % self.eval_every_n_steps == 0:
            trainer.evaluate()


class LimitBatchesCallback(TrainerCallback):
    """Ends each training epoch after ``num_batches`` batches (at the end of that accumulation
    window), for quick debugging runs."""

    def __init__(self, num_batches: int):
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}.")
        self.num_batches = num_batches
        self._batches_seen = 0

    def on_train_epoch_start(self, trainer, **kwargs):
        self._batches_seen = 0

    def on_train_step_end(self, trainer, **kwargs):
        self._batches_seen += 1
        if self._batches_seen >= self.num_batches:
            trainer.request_epoch_end()


class LimitEvalStepsCallback(TrainerCallback):
    """Ends each evaluation epoch after ``num_eval_steps`` batches, for quick debugging runs."""

    def __init__(self, num_eval_steps: int):
        if num_eval_steps < 1:
            raise ValueError(f"num_eval_steps must be >= 1, got {num_eval_steps}.")
        self.num_eval_steps = num_eval_steps
        self._steps_seen = 0

    def on_eval_epoch_start(self, trainer, **kwargs):
        self._steps_seen = 0

    def on_eval_step_end(self, trainer, **kwargs):
        self._steps_seen += 1
        if self._steps_seen >= self.num_eval_steps:
            trainer.request_epoch_end()


class ConvertSyncBatchNormCallback(TrainerCallback):
    """Replaces the model's BatchNorm layers with ``SyncBatchNorm`` when the Trainer is created,
    so that batch statistics are computed over every process's batch. The parameters stay the
    same objects, so the optimizer needs no change. Place it in the Trainer's callbacks. On one
    process SyncBatchNorm computes exactly what BatchNorm does."""

    def on_init_end(self, trainer, **kwargs):
        trainer.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)
