"""Callbacks that change how a run proceeds: step-based evaluation, batch limits (``FastDevRun``,
``OverfitBatches``), SyncBatchNorm."""

from __future__ import annotations

import torch

from pytorch_accelerated.trainer import StopTrainingError, TrainerCallback


class StepBasedEvaluationCallback(TrainerCallback):
    """Runs ``trainer.evaluate()`` every ``eval_every_n_steps`` optimizer updates, recording its
    values under ``metric_prefix``: ``step_eval_loss`` (and ``step_eval_<name>`` for what
    metric callbacks record), apart from the validation after each epoch (``eval_loss_epoch``,
    ``eval_<name>``); each value's record carries its update step and ``evaluation="step"``. The
    model goes back to training mode afterwards. Needs ``eval_dataset`` in ``train``."""

    def __init__(self, eval_every_n_steps: int, metric_prefix: str = "step_"):
        if eval_every_n_steps < 1:
            raise ValueError(f"eval_every_n_steps must be >= 1, got {eval_every_n_steps}.")
        self.eval_every_n_steps = eval_every_n_steps
        self.metric_prefix = metric_prefix

    def recorded_metric_names(self, trainer):
        return [f"{self.metric_prefix}*eval_*"]  # its evaluations' step_eval_loss, step_eval_<name>, ...

    def on_training_run_start(self, trainer, **kwargs):
        if trainer.eval_dataloader is None:
            raise ValueError(
                "StepBasedEvaluationCallback needs an eval_dataset: pass train(..., eval_dataset=...)."
            )

    def on_optimizer_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps % self.eval_every_n_steps == 0:
            trainer.evaluate(metric_prefix=self.metric_prefix)


class _EpochLengthLimit(TrainerCallback):
    """Counts the batches of an epoch and asks the trainer to end it once there are ``limit``."""

    def __init__(self, limit: int, name: str):
        if limit < 1:
            raise ValueError(f"{name} must be >= 1, got {limit}.")
        self.limit = limit
        self._batches_seen = 0

    def _start_epoch(self) -> None:
        self._batches_seen = 0

    def _count_batch(self, trainer) -> None:
        self._batches_seen += 1
        if self._batches_seen >= self.limit:
            trainer.request_epoch_end()

    def state_dict(self):
        return {"batches_seen": self._batches_seen}

    def load_state_dict(self, state_dict):
        self._batches_seen = state_dict["batches_seen"]


class LimitBatchesCallback(_EpochLengthLimit):
    """Ends each training epoch after ``num_batches`` batches (at the end of that accumulation
    window), for quick debugging runs."""

    def __init__(self, num_batches: int):
        super().__init__(num_batches, "num_batches")

    def on_train_epoch_start(self, trainer, **kwargs):
        self._start_epoch()

    def on_train_step_end(self, trainer, **kwargs):
        self._count_batch(trainer)


class LimitEvalStepsCallback(_EpochLengthLimit):
    """Ends each evaluation epoch after ``num_eval_steps`` batches, for quick debugging runs."""

    def __init__(self, num_eval_steps: int):
        super().__init__(num_eval_steps, "num_eval_steps")

    def on_eval_epoch_start(self, trainer, **kwargs):
        self._start_epoch()

    def on_eval_step_end(self, trainer, **kwargs):
        self._count_batch(trainer)


class ConvertSyncBatchNormCallback(TrainerCallback):
    """Replaces the model's BatchNorm layers with ``SyncBatchNorm`` when the Trainer is created,
    so that batch statistics are computed over every process's batch. The parameters stay the
    same objects, so the optimizer needs no change. Place it in the Trainer's callbacks. On one
    process SyncBatchNorm computes exactly what BatchNorm does."""

    def on_init_end(self, trainer, **kwargs):
        trainer.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(trainer.model)


class _LimitedBatches(TrainerCallback):
    """The first ``num_batches`` batches of each training and evaluation epoch, and their state."""

    def __init__(self, num_batches: int):
        self._train = LimitBatchesCallback(num_batches)
        self._eval = LimitEvalStepsCallback(num_batches)
        self.num_batches = num_batches

    def on_train_epoch_start(self, trainer, **kwargs):
        self._train.on_train_epoch_start(trainer)

    def on_train_step_end(self, trainer, **kwargs):
        self._train.on_train_step_end(trainer)

    def on_eval_epoch_start(self, trainer, **kwargs):
        self._eval.on_eval_epoch_start(trainer)

    def on_eval_step_end(self, trainer, **kwargs):
        self._eval.on_eval_step_end(trainer)

    def state_dict(self):
        return {"train": self._train.state_dict(), "eval": self._eval.state_dict()}

    def load_state_dict(self, state_dict):
        self._train.load_state_dict(state_dict["train"])
        self._eval.load_state_dict(state_dict["eval"])


class FastDevRun(_LimitedBatches):
    """Lightning's ``fast_dev_run``: one epoch of ``num_batches`` training batches (to the end of
    their accumulation window) and ``num_batches`` batches of each evaluation, then the run stops,
    to find a bug in every part of a run in seconds. Add it to a run's callbacks:
    ``callbacks=(*DEFAULT_CALLBACKS, FastDevRun())``. Evaluations outside training are cut short too.
    The other callbacks run as usual (their files go to a fresh ``version_<n>`` folder).

    Args:
        num_batches: the batches of each training and evaluation epoch.
    """

    def __init__(self, num_batches: int = 1):
        super().__init__(num_batches)

    def on_training_run_epoch_end(self, trainer, **kwargs):
        raise StopTrainingError(
            f"FastDevRun: {self.num_batches} training and evaluation batch(es) ran through every part of the "
            "run; remove FastDevRun to train."
        )


class OverfitBatches(_LimitedBatches):
    """Lightning's ``overfit_batches``: every epoch trains on the same first ``num_batches`` batches
    (to the end of their accumulation window) and evaluates ``num_batches`` batches of each
    evaluation set, so that a model that can learn drives the training loss towards 0. The same
    batches need data in the same order every epoch: a shuffling training dataloader is refused
    when the run starts, naming ``train_dataloader_kwargs={"shuffle": False}`` (Lightning turns
    shuffling off itself; the Trainer builds its dataloader before any callback runs).

    Args:
        num_batches: the batches of each training and evaluation epoch.
    """

    def on_training_run_start(self, trainer, **kwargs):
        if _shuffles(trainer.train_dataloader):
            raise ValueError(
                f"OverfitBatches({self.num_batches}) trains on the same batches every epoch, but the "
                "training dataloader shuffles: pass train(..., train_dataloader_kwargs={'shuffle': False})."
            )


def _shuffles(dataloader) -> bool:
    """Whether a (prepared) dataloader draws a random order: a ``RandomSampler`` under its batch samplers."""
    samplers = [getattr(dataloader, "sampler", None)]
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    while batch_sampler is not None:
        samplers.append(getattr(batch_sampler, "sampler", None))
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
    return any(isinstance(sampler, torch.utils.data.RandomSampler) for sampler in samplers)
