"""The default callbacks: device placement, non-finite loss, progress bar, printed metrics."""

import pytest
import torch

from pytorch_accelerated.trainer import (
    DEFAULT_CALLBACKS,
    MoveModulesToDeviceCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    Trainer,
    format_metric_value,
)
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from .helpers import make_trainer


def test_a_default_trainer_has_one_fresh_instance_of_each_default_callback():
    model = make_tiny_model()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    assert [type(cb) for cb in trainer.callback_handler] == list(DEFAULT_CALLBACKS)
    assert [type(cb) for cb in make_trainer(callbacks=()).callback_handler] == []


def test_default_callbacks_train_and_print_a_readable_line_per_epoch(capsys):
    model = make_tiny_model()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(make_tiny_dataset(32), num_epochs=2, eval_dataset=make_tiny_dataset(16), per_device_batch_size=8)
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1: train_loss_epoch: ") and " | eval_loss_epoch: " in lines[0]
    assert "Starting training run: 2 epoch(s), 8 update step(s)" in out.out
    assert "epoch 1 train" in out.err  # the tqdm bar


def test_print_metrics_callback_prints_evaluation_results(capsys):
    trainer = make_trainer(callbacks=[PrintMetricsCallback()])
    trainer.evaluate(make_tiny_dataset(8))
    assert capsys.readouterr().out.startswith("evaluation: eval_loss: ")


def test_terminate_on_nan_stops_with_a_clear_message(capsys):
    class ExplodingLoss(Trainer):
        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            if self.completed_update_steps >= 2:
                output["loss"] = output["loss"] * float("nan")
            return output

    trainer = make_trainer(callbacks=[TerminateOnNaNCallback(check_every_n_steps=1), PrintMetricsCallback()], trainer_class=ExplodingLoss)
    trainer.train(make_tiny_dataset(64), num_epochs=3, per_device_batch_size=4)
    assert trainer.completed_update_steps == 2  # checked every step: stopped before the first bad update
    out = capsys.readouterr().out
    assert "Training stopped early: The training loss became NaN or infinite" in out
    assert "gradient_clip_norm" in out

    # by default the kept losses are read every 50 steps and at each epoch's end (16 steps here)
    trainer = make_trainer(callbacks=[TerminateOnNaNCallback()], trainer_class=ExplodingLoss)
    trainer.train(make_tiny_dataset(64), num_epochs=3, per_device_batch_size=4)
    assert trainer.completed_update_steps == 16


def test_terminate_on_nan_with_an_interval_checks_at_the_interval_and_epoch_end():
    class NanAtStepThree(Trainer):
        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            if self.completed_update_steps == 3:
                output["loss"] = output["loss"] * float("inf")
            return output

    trainer = make_trainer(callbacks=[TerminateOnNaNCallback(check_every_n_steps=5)], trainer_class=NanAtStepThree)
    trainer.train(make_tiny_dataset(64), num_epochs=1, per_device_batch_size=4)
    # the 4th step's loss is infinite; the check at the end of the 5th step stops before its update
    assert trainer.completed_update_steps == 4


def test_terminate_on_nan_rejects_a_bad_interval():
    for bad in (0, None, 2.5):
        with pytest.raises(ValueError, match="check_every_n_steps"):
            TerminateOnNaNCallback(check_every_n_steps=bad)


def test_move_modules_to_device_moves_other_modules_but_not_the_model():
    moved = []

    class Spy(torch.nn.Module):
        def _apply(self, fn, recurse=True):
            moved.append(True)
            return super()._apply(fn, recurse)

    trainer = make_trainer(callbacks=[MoveModulesToDeviceCallback()])
    trainer.extra_metric = Spy()
    trainer.train(make_tiny_dataset(8), num_epochs=1)
    trainer.evaluate(make_tiny_dataset(8))
    assert len(moved) == 2


def test_the_progress_bar_shows_one_bar_per_epoch_and_closes_it(capsys):
    trainer = make_trainer(callbacks=[ProgressBarCallback()])
    trainer.train(make_tiny_dataset(16), num_epochs=2, eval_dataset=make_tiny_dataset(8), per_device_batch_size=4)
    err = capsys.readouterr().err
    assert "epoch 1 train" in err and "epoch 2 train" in err and "eval" in err
    assert trainer.callback_handler.callbacks[0]._bar is None


@pytest.mark.parametrize(
    "value, text",
    [(0.123456, "0.1235"), (3, "3"), (torch.tensor(0.5), "0.5000"), (1e-6, "1.0000e-06"), (float("nan"), "nan"), ("x", "x")],
)
def test_format_metric_value(value, text):
    assert format_metric_value(value) == text


def test_print_metrics_puts_mid_epoch_evaluations_in_the_epoch_line(capsys):
    class EvaluateOnce(MoveModulesToDeviceCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 1:
                trainer.evaluate()

    trainer = make_trainer(callbacks=[EvaluateOnce(), PrintMetricsCallback()])
    trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset=make_tiny_dataset(8), per_device_batch_size=8)
    out = capsys.readouterr().out
    assert "evaluation:" not in out
    epoch_line = next(line for line in out.splitlines() if line.startswith("epoch 1:"))
    assert "train_loss_epoch" in epoch_line and "eval_loss" in epoch_line and "eval_loss_epoch" in epoch_line
