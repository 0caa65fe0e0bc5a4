"""Step-based evaluation, batch limits and SyncBatchNorm conversion in real runs."""

import pytest
import torch

from pytorch_accelerated.callbacks import (
    ConvertSyncBatchNormCallback,
    LimitBatchesCallback,
    LimitEvalStepsCallback,
    StepBasedEvaluationCallback,
    TrainerCallback,
)
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, run_tiny_training


class ModeAfterUpdate(TrainerCallback):
    def __init__(self):
        self.modes = []

    def on_optimizer_step_end(self, trainer, **kwargs):
        self.modes.append(trainer.model.training)


def test_step_based_evaluation_runs_every_n_updates_then_training_goes_on():
    """Step-based evaluation evaluates every n updates and returns to training."""
    modes = ModeAfterUpdate()
    result = run_tiny_training(
        callbacks=[StepBasedEvaluationCallback(eval_every_n_steps=3), modes], num_epochs=2
    )
    # 8 updates per epoch, 16 in all: evaluations after updates 3, 6, 9, 12, 15
    records = result.trainer.run_history.get_metric_records("step_eval_loss")
    assert [(r.step, r.epoch, r.evaluation) for r in records] == [
        (3, 1, "step"),
        (6, 1, "step"),
        (9, 2, "step"),
        (12, 2, "step"),
        (15, 2, "step"),
    ]
    assert "eval_loss" not in result.metrics  # kept apart from evaluate() and from validation:
    assert [r.evaluation for r in result.trainer.run_history.get_metric_records("eval_loss_epoch")] == [
        "validation"
    ] * 2
    assert all(modes.modes)


def test_step_based_evaluation_needs_an_eval_set():
    with pytest.raises(ValueError, match="needs an eval_dataset"):
        run_tiny_training(callbacks=[StepBasedEvaluationCallback(2)], with_eval=False, num_epochs=1)


def test_limit_batches_and_eval_steps():
    result = run_tiny_training(callbacks=[LimitBatchesCallback(3), LimitEvalStepsCallback(2)], num_epochs=2)
    assert result.events.count("on_train_step_end") == 6
    assert result.events.count("on_eval_step_end") == 4
    assert result.trainer.completed_update_steps == 6


def test_limit_batches_finishes_the_accumulation_window():
    result = run_tiny_training(
        callbacks=[LimitBatchesCallback(3)], num_epochs=1, gradient_accumulation_steps=2
    )
    assert result.events.count("on_train_step_end") == 4
    assert result.trainer.completed_update_steps == 2


@pytest.mark.parametrize(
    "callback_class, argument",
    [(LimitBatchesCallback, 0), (LimitEvalStepsCallback, 0), (StepBasedEvaluationCallback, 0)],
)
def test_limits_reject_non_positive_values(callback_class, argument):
    with pytest.raises(ValueError, match=">= 1"):
        callback_class(argument)


def test_sync_batchnorm_conversion_keeps_parameters_and_trains():
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3)
    )
    parameters = list(model.parameters())
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=[ConvertSyncBatchNormCallback()]
    )
    assert isinstance(trainer.model[1], torch.nn.SyncBatchNorm)
    assert list(trainer.model.parameters()) == parameters
    before = trainer.model[1].weight.detach().clone()
    trainer.train(make_tiny_dataset(32), num_epochs=1)
    assert not torch.equal(before, trainer.get_model()[1].weight.detach())


def test_a_limited_mid_epoch_evaluation_does_not_end_the_training_epoch():
    result = run_tiny_training(
        callbacks=[StepBasedEvaluationCallback(2), LimitEvalStepsCallback(1)], num_epochs=1
    )
    assert result.trainer.completed_update_steps == 8  # the whole epoch, despite the evaluations ending early
    assert len(result.metrics["step_eval_loss"]) == 4


# ---------------------------------------------------------------------------------------- issue 27


class CountsBatches(TrainerCallback):
    """The training and evaluation batches of each epoch, and each training batch's inputs."""

    def __init__(self):
        self.train, self.eval, self.inputs = [], [], []

    def on_train_epoch_start(self, trainer, **kwargs):
        self.train.append(0)
        self.inputs.append([])

    def on_train_step_end(self, trainer, batch, **kwargs):
        self.train[-1] += 1
        self.inputs[-1].append(batch[0].clone())

    def on_eval_epoch_start(self, trainer, **kwargs):
        self.eval.append(0)

    def on_eval_step_end(self, trainer, **kwargs):
        self.eval[-1] += 1


def test_fast_dev_run_runs_one_batch_of_each_loop_then_stops():
    """``fast_dev_run`` runs one batch of training and of each evaluation, then stops."""
    from pytorch_accelerated.callbacks import FastDevRun
    from pytorch_accelerated.trainer import DEFAULT_CALLBACKS

    counts = CountsBatches()
    result = run_tiny_training(callbacks=[*DEFAULT_CALLBACKS, counts, FastDevRun()], num_epochs=5)
    assert (counts.train, counts.eval) == ([1], [1]), "one epoch: one training batch, one evaluation batch"
    assert "on_stop_training_error" in result.events and result.trainer.completed_update_steps == 1
    result.trainer.evaluate()
    assert counts.eval == [1, 1], "an evaluate() afterwards: one batch too"


def test_overfit_batches_repeats_the_same_batches_and_drives_the_loss_down():
    """``overfit_batches`` trains the same batches every epoch and drives the loss down."""
    from pytorch_accelerated.callbacks import OverfitBatches

    counts = CountsBatches()
    result = run_tiny_training(
        callbacks=[counts, OverfitBatches(2)],
        num_epochs=30,
        lr=0.3,
        train_dataloader_kwargs={"shuffle": False},
    )
    assert counts.train == [2] * 30 and counts.eval == [2] * 30
    assert all(torch.equal(a, b) for epoch in counts.inputs for a, b in zip(epoch, counts.inputs[0]))
    losses = result.metrics["train_loss_epoch"]
    assert losses[-1] < 0.2 * losses[0], f"two batches learnt by heart: {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_overfit_batches_refuses_a_shuffling_dataloader_before_step_1():
    """``overfit_batches`` refuses a shuffling dataloader before the first step."""
    from pytorch_accelerated.callbacks import OverfitBatches

    counts = CountsBatches()
    with pytest.raises(
        ValueError, match=r"pass train\(\.\.\., train_dataloader_kwargs=\{'shuffle': False\}\)"
    ):
        run_tiny_training(callbacks=[counts, OverfitBatches(2)], num_epochs=2)
    assert counts.train == []
