"""MetricSchedulerCallback: ReduceLROnPlateau stepped with the metric it watches, inside real runs."""

import functools

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

from pytorch_accelerated.callbacks import (
    MetricSchedulerCallback,
    StepBasedEvaluationCallback,
    TrainerCallback,
)
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import (
    check_exact_resume,
    make_tiny_dataset,
    make_tiny_model,
    run_tiny_training,
)


class LrAtEpochEnd(TrainerCallback):
    def __init__(self):
        self.lrs = []

    def on_training_run_epoch_end(self, trainer, **kwargs):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def test_a_plateau_scheduler_as_create_scheduler_fn_is_refused_at_once():
    """A plateau scheduler as ``create_scheduler_fn`` is refused before the first step."""
    with pytest.raises(TypeError, match="MetricSchedulerCallback") as error:
        run_tiny_training(create_scheduler_fn=functools.partial(ReduceLROnPlateau, patience=1))
    assert "monitor='eval_loss_epoch'" in str(error.value)


def test_the_scheduler_steps_once_per_epoch_with_the_epochs_metric():
    plateau = functools.partial(ReduceLROnPlateau, factor=0.5, patience=0, threshold=0.2)
    lrs = LrAtEpochEnd()
    result = run_tiny_training(callbacks=[MetricSchedulerCallback(plateau), lrs], num_epochs=5, lr=0.05)
    losses = result.metrics["eval_loss_epoch"]

    # the same scheduler, stepped by hand with the same values
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    by_hand = plateau(reference)
    expected = []
    for loss in losses:
        by_hand.step(loss)
        expected.append(reference.param_groups[0]["lr"])
    assert lrs.lrs == expected
    assert min(expected) < 0.05  # the scheduler did reduce the lr


def test_a_metric_of_step_based_evaluations_steps_it_after_each_evaluation():
    callback = MetricSchedulerCallback(
        functools.partial(ReduceLROnPlateau, patience=0), monitor="step_eval_loss"
    )
    result = run_tiny_training(
        callbacks=[StepBasedEvaluationCallback(eval_every_n_steps=3), callback], num_epochs=2
    )
    evaluations = len(result.metrics["step_eval_loss"])
    assert evaluations == 16 // 3  # 8 updates per epoch, 2 epochs
    assert callback.scheduler.last_epoch == evaluations


def test_a_metric_never_recorded_is_named_at_the_first_epoch_end():
    callback = MetricSchedulerCallback(functools.partial(ReduceLROnPlateau), monitor="eval_accuracy")
    with pytest.raises(KeyError, match="eval_accuracy.*eval_loss_epoch"):
        run_tiny_training(callbacks=[callback], num_epochs=1)


def test_an_eval_metric_without_an_eval_dataset_is_named_before_step_1():
    """An eval metric in a run without an eval dataset is named before the first step."""
    callback = MetricSchedulerCallback(functools.partial(ReduceLROnPlateau), monitor="eval_loss_epoch")
    with pytest.raises(
        ValueError, match="MetricSchedulerCallback watches 'eval_loss_epoch'.*eval_dataset"
    ) as error:
        run_tiny_training(callbacks=[callback, LrAtEpochEnd()], num_epochs=1, with_eval=False)
    assert error.traceback[-1].name == "check_metric_can_be_recorded"
    assert callback.scheduler is None  # refused at run start, before the scheduler or any step


class FailAtFirstEpochEnd(TrainerCallback):
    def on_train_epoch_end(self, trainer, **kwargs):
        raise RuntimeError("boom")


def test_an_evaluation_after_a_run_that_failed_does_not_step_the_scheduler():
    callback = MetricSchedulerCallback(
        functools.partial(ReduceLROnPlateau, patience=0), monitor="test_eval_loss"
    )
    model = make_tiny_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=[callback, FailAtFirstEpochEnd()],
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train(make_tiny_dataset(), num_epochs=1, per_device_batch_size=8)
    trainer.evaluate(make_tiny_dataset(seed=1), metric_prefix="test_")
    assert callback.scheduler.last_epoch == 0  # evaluations outside training never step it


def test_a_resumed_run_steps_the_scheduler_as_the_uninterrupted_run(tmp_path):
    # threshold=0.5: no epoch after the first improves enough, so the lr halves every epoch from the
    # second on; a resumed scheduler that forgot its best value would keep the lr once
    """A resumed run steps the scheduler exactly as the uninterrupted run."""

    def make_callbacks():
        return [
            MetricSchedulerCallback(
                functools.partial(ReduceLROnPlateau, factor=0.5, patience=0, threshold=0.5)
            )
        ]

    states = check_exact_resume(make_callbacks, tmp_path, num_epochs=3)
    assert len(states) > 5
