"""Placeholders, scheduler stepping, skipped steps and max_num_train_steps."""

import functools
import math

import pytest
import torch
from accelerate import Accelerator

from pytorch_accelerated.trainer import Trainer, TrainerCallback, TrainerPlaceholderValues
from pytorch_accelerated.trainer.testing import make_tiny_dataset, run_tiny_training

from .helpers import LrRecorder, make_trainer


def test_placeholders_are_filled_from_the_run_config():
    captured = {}

    def make_scheduler(optimizer, **sizes):
        captured.update(sizes)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    run_tiny_training(
        num_epochs=3,
        num_samples=40,
        per_device_batch_size=4,
        gradient_accumulation_steps=3,
        create_scheduler_fn=functools.partial(
            make_scheduler,
            num_epochs=TrainerPlaceholderValues.NUM_EPOCHS,
            updates_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
            total=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
            train_len=TrainerPlaceholderValues.TRAIN_DATALOADER_LEN,
            eval_len=TrainerPlaceholderValues.EVAL_DATALOADER_LEN,
            untouched="kept",
        ),
    )
    assert captured == {
        "num_epochs": 3,
        "updates_per_epoch": 4,
        "total": 12,
        "train_len": 10,
        "eval_len": 5,
        "untouched": "kept",
    }


def test_a_one_cycle_schedule_sized_by_placeholders_completes_exactly():
    recorder = LrRecorder()
    result = run_tiny_training(
        callbacks=[recorder],
        num_epochs=3,
        num_samples=44,
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        create_scheduler_fn=functools.partial(
            torch.optim.lr_scheduler.OneCycleLR,
            max_lr=0.1,
            epochs=TrainerPlaceholderValues.NUM_EPOCHS,
            steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
        ),
    )
    # OneCycleLR raises if stepped past its total; here it ends exactly on its last step.
    scheduler = result.trainer.scheduler
    assert scheduler.last_epoch == scheduler.total_steps == 18
    assert recorder.after[-1] == pytest.approx(scheduler.get_last_lr()[0])
    assert recorder.after[-1] < 0.01
    with pytest.raises(ValueError):
        scheduler.step()  # one step more than its schedule


def test_max_num_train_steps_counts_optimizer_updates_and_stops_mid_epoch():
    recorder = LrRecorder()
    result = run_tiny_training(
        callbacks=[recorder],
        num_epochs=10,
        num_samples=40,
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        max_num_train_steps=7,
        create_scheduler_fn=functools.partial(
            torch.optim.lr_scheduler.LinearLR,
            start_factor=1.0,
            end_factor=0.0,
            total_iters=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
        ),
    )
    trainer = result.trainer
    assert trainer.completed_update_steps == 7 and len(recorder.after) == 7
    assert trainer.run_config.num_epochs == 2 and trainer.run_config.num_training_steps == 7
    assert result.events.count("on_train_epoch_end") == 2
    assert result.events.count("on_eval_epoch_end") == 2
    assert recorder.after[-1] == pytest.approx(0.0)


def test_num_epochs_stops_first_when_it_is_the_smaller_limit():
    result = run_tiny_training(num_epochs=2, num_samples=16, per_device_batch_size=4, max_num_train_steps=100)
    assert result.trainer.completed_update_steps == 8
    assert result.trainer.run_config.num_training_steps == 8


def test_the_scheduler_does_not_step_when_the_optimizer_step_was_skipped():
    # A real GradScaler on the CPU: an infinite loss makes it skip that update.
    class OverflowOnSecondUpdate(Trainer):
        def create_accelerator(self):
            accelerator = Accelerator()
            accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
            return accelerator

        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            if self.completed_update_steps == 1:
                output["loss"] = output["loss"] * float("inf")
            return output

    skipped = []

    class SkipReader(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            skipped.append(trainer.optimizer_step_was_skipped)

    trainer = make_trainer(callbacks=[SkipReader()], trainer_class=OverflowOnSecondUpdate)
    trainer.train(
        make_tiny_dataset(16),
        num_epochs=1,
        per_device_batch_size=4,
        create_scheduler_fn=lambda optimizer: torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=1, gamma=0.5
        ),
    )
    assert skipped == [False, True, False, False]
    assert trainer.scheduler.last_epoch == 3


def test_run_config_describes_the_run():
    result = run_tiny_training(num_epochs=2, num_samples=20, per_device_batch_size=4, gradient_clip_norm=1.0)
    config = result.trainer.run_config.to_dict()
    assert config["train_dataloader_len"] == 5 and config["eval_dataloader_len"] == math.ceil(10 / 4)
    assert config["num_processes"] == 1 and config["gradient_clip_norm"] == 1.0
    assert config["is_world_process_zero"] and config["mixed_precision"] == "no"


def test_torch_schedulers_see_the_optimizer_steps_and_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lr_scheduler.step\\(\\).*")
        run_tiny_training(
            num_epochs=1,
            create_scheduler_fn=functools.partial(
                torch.optim.lr_scheduler.OneCycleLR,
                max_lr=0.1,
                epochs=TrainerPlaceholderValues.NUM_EPOCHS,
                steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
            ),
        )
