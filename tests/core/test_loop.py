"""The loop's order of hooks and events, stopping, errors and the batch-output contract."""

import json

import pytest
import torch

from pytorch_accelerated.trainer import RunPosition, StopTrainingError, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import EventRecorder, make_tiny_dataset, run_tiny_training

from .helpers import make_trainer

HOOKS = [
    "training_run_start",
    "train_epoch_start",
    "calculate_train_batch_loss",
    "backward_step",
    "clip_gradients",
    "optimizer_step",
    "scheduler_step",
    "optimizer_zero_grad",
    "train_epoch_end",
    "eval_epoch_start",
    "calculate_eval_batch_loss",
    "eval_epoch_end",
    "training_run_epoch_end",
    "training_run_end",
]


def recording_trainer_class(log):
    """A Trainer subclass whose hooks append 'hook:<name>' to ``log`` before running."""

    def wrap(name):
        def hook(self, *args, **kwargs):
            log.append(f"hook:{name}")
            return getattr(Trainer, name)(self, *args, **kwargs)

        return hook

    return type("RecordingTrainer", (Trainer,), {name: wrap(name) for name in HOOKS})


class SharedLogRecorder(EventRecorder):
    def __init__(self, log):
        super().__init__()
        self.events = log


def _train_step(update, scheduler=True):
    step = [
        "on_train_step_start",
        "hook:calculate_train_batch_loss",
        "on_train_step_end",
        "hook:backward_step",
    ]
    if update:
        step += ["hook:clip_gradients", "on_before_optimizer_step", "hook:optimizer_step"]
        step += ["hook:scheduler_step"] if scheduler else []
        step += ["hook:optimizer_zero_grad", "on_optimizer_step_end", "on_save_point"]
    return step


def _epoch():
    # 5 training batches with accumulation 2: updates after batches 2, 4 and 5; 2 eval batches.
    train = ["hook:train_epoch_start", "on_train_epoch_start"]
    for update in (False, True, False, True, True):
        train += _train_step(update)
    train += ["hook:train_epoch_end", "on_train_epoch_end"]
    evaluation = ["hook:eval_epoch_start", "on_eval_epoch_start"]
    evaluation += ["on_eval_step_start", "hook:calculate_eval_batch_loss", "on_eval_step_end"] * 2
    evaluation += ["hook:eval_epoch_end", "on_eval_epoch_end"]
    return train + evaluation + ["hook:training_run_epoch_end", "on_training_run_epoch_end", "on_save_point"]


EXPECTED_TWO_EPOCH_RUN = (
    ["on_init_end", "hook:training_run_start", "on_training_run_start", "on_save_point"]
    + _epoch()
    + _epoch()
    + ["on_save_point", "hook:training_run_end", "on_training_run_end"]
)


def test_two_epoch_run_fires_hooks_then_events_in_the_pinned_order():
    log = []
    trainer = make_trainer(callbacks=[SharedLogRecorder(log)], trainer_class=recording_trainer_class(log))
    trainer.train(
        train_dataset=make_tiny_dataset(20),
        eval_dataset=make_tiny_dataset(8, seed=1),
        num_epochs=2,
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        create_scheduler_fn=lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=1),
    )
    assert log == EXPECTED_TWO_EPOCH_RUN


def test_callbacks_run_in_list_order():
    log = []

    class Named(TrainerCallback):
        def __init__(self, name):
            self.name = name

        def on_train_epoch_start(self, trainer, **kwargs):
            log.append(self.name)

    run_tiny_training(callbacks=[Named("a"), Named("b"), Named("c")], num_epochs=1)
    assert log == ["a", "b", "c"]


def test_callback_classes_are_instantiated_per_trainer():
    first, second = make_trainer(callbacks=[EventRecorder]), make_trainer(callbacks=[EventRecorder])
    assert first.callback_handler.callbacks[0] is not second.callback_handler.callbacks[0]


def test_stop_training_error_from_a_callback_ends_the_run_cleanly():
    class StopAfterFirstEpoch(TrainerCallback):
        def on_train_epoch_end(self, trainer, **kwargs):
            raise StopTrainingError("enough")

    result = run_tiny_training(callbacks=[StopAfterFirstEpoch()], num_epochs=5)
    events = result.events
    assert events.count("on_train_epoch_end") == 1
    assert events[-3:] == ["on_stop_training_error", "on_save_point", "on_training_run_end"]
    assert "on_eval_epoch_start" not in events


def test_stop_training_error_from_a_hook_passes_the_error_to_callbacks():
    seen = []

    class StopAtSecondEpoch(Trainer):
        def train_epoch_start(self):
            super().train_epoch_start()
            if self.run_history.current_epoch == 2:
                raise StopTrainingError("from a hook")

    class Catcher(TrainerCallback):
        def on_stop_training_error(self, trainer, stop_training_error, **kwargs):
            seen.append(str(stop_training_error))

    result = run_tiny_training(callbacks=[Catcher()], num_epochs=4, trainer_class=StopAtSecondEpoch)
    assert seen == ["from a hook"]
    assert result.metrics["train_loss_epoch"].__len__() == 1


def test_an_error_inside_a_callback_is_never_swallowed():
    class Broken(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            raise ZeroDivisionError("callback bug")

    with pytest.raises(ZeroDivisionError, match="callback bug"):
        run_tiny_training(callbacks=[Broken()], num_epochs=1)


def test_custom_events_reach_callbacks_that_define_them():
    received = []

    class FiresCustomEvent(Trainer):
        custom_events = ("on_custom_thing",)

        def train_epoch_end(self):
            self.callback_handler.call_event("on_custom_thing", self, value=self.run_history.current_epoch)

    class Listener(TrainerCallback):
        def on_custom_thing(self, trainer, value, **kwargs):
            received.append(value)

    result = run_tiny_training(
        callbacks=[Listener()],
        num_epochs=2,
        trainer_class=FiresCustomEvent,
        custom_events=["on_custom_thing"],
    )
    assert received == [1, 2]
    assert result.events.count("on_custom_thing") == 2


def test_extra_keys_of_the_batch_output_reach_step_end_callbacks():
    seen = []

    class WithExtras(Trainer):
        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            return {**output, "inputs_mean": batch[0].mean()}

    class Reader(TrainerCallback):
        def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
            seen.append(set(batch_output))

    run_tiny_training(callbacks=[Reader()], num_epochs=1, trainer_class=WithExtras)
    assert seen and all(keys == {"loss", "model_outputs", "batch_size", "inputs_mean"} for keys in seen)


def test_a_batch_loss_hook_missing_keys_gets_a_clear_error():
    class Forgetful(Trainer):
        def calculate_train_batch_loss(self, batch):
            return {"loss": super().calculate_train_batch_loss(batch)["loss"]}

    with pytest.raises(
        TypeError, match=r"must return a dict with the keys \['loss', 'model_outputs', 'batch_size'\]"
    ):
        run_tiny_training(num_epochs=1, trainer_class=Forgetful)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_epochs": 0}, "num_epochs must be a positive integer"),
        ({"per_device_batch_size": -1}, "per_device_batch_size must be a positive integer"),
        ({"gradient_accumulation_steps": 1.5}, "gradient_accumulation_steps must be a positive integer"),
        ({"max_num_train_steps": 0}, "max_num_train_steps must be a positive integer"),
        ({"gradient_clip_value": 1.0, "gradient_clip_norm": 1.0}, "not both"),
    ],
)
def test_bad_train_arguments_get_clear_errors(kwargs, message):
    arguments = {"train_dataset": make_tiny_dataset(8), "num_epochs": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_trainer().train(**arguments)


def test_an_empty_training_set_is_a_clear_error():
    with pytest.raises(ValueError, match="training dataloader is empty"):
        make_trainer().train(
            make_tiny_dataset(3),
            num_epochs=1,
            per_device_batch_size=4,
            train_dataloader_kwargs={"drop_last": True},
        )


def test_batches_reach_the_device_non_blocking_unless_configured_otherwise():
    """accelerate's loaders (several processes) copy pinned batches without waiting, as the Trainer's
    own copy does on one; a dataloader_config the user gives is kept as given."""
    from accelerate.utils import DataLoaderConfiguration

    assert make_trainer().accelerator.non_blocking
    own = make_trainer(accelerator_kwargs={"dataloader_config": DataLoaderConfiguration(non_blocking=False)})
    assert not own.accelerator.non_blocking


def test_accumulation_steps_in_accelerator_kwargs_are_refused():
    with pytest.raises(ValueError, match="Pass gradient_accumulation_steps to Trainer.train"):
        make_trainer(accelerator_kwargs={"gradient_accumulation_steps": 4})


def test_a_non_callback_is_refused_with_the_fix():
    with pytest.raises(TypeError, match="is not a TrainerCallback"):
        make_trainer(callbacks=[object()])


def test_train_learns_and_records_epoch_losses():
    result = run_tiny_training(num_epochs=6, lr=0.2)
    train_losses = result.metrics["train_loss_epoch"]
    assert len(train_losses) == 6 and len(result.metrics["eval_loss_epoch"]) == 6
    assert train_losses[-1] < train_losses[0] * 0.8
    assert result.run_history.current_epoch == 7


def test_reset_run_history_false_keeps_previous_metrics():
    result = run_tiny_training(num_epochs=1)
    trainer = result.trainer
    trainer.train(make_tiny_dataset(16), num_epochs=1, reset_run_history=False)
    assert len(trainer.run_history.get_metric_values("train_loss_epoch")) == 2


def test_loss_from_model_output_when_loss_func_is_none():
    class ModelWithLoss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, inputs, labels=None):
            logits = self.linear(inputs)
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    class DictDataset(torch.utils.data.Dataset):
        def __init__(self, n):
            self.data = make_tiny_dataset(n)

        def __len__(self):
            return len(self.data)

        def __getitem__(self, index):
            inputs, label = self.data[index]
            return {"inputs": inputs, "labels": label}

    model = ModelWithLoss()
    trainer = Trainer(
        model, loss_func=None, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=()
    )
    trainer.train(DictDataset(32), num_epochs=2, eval_dataset=DictDataset(10), per_device_batch_size=4)
    assert len(trainer.run_history.get_metric_values("eval_loss_epoch")) == 2
    predictions = trainer.predict(DictDataset(10), per_device_batch_size=3)
    assert predictions["logits"].shape == (10, 3)


def test_loss_func_none_with_a_model_without_loss_explains_the_fix():
    model = torch.nn.Linear(4, 3)
    trainer = Trainer(
        model, loss_func=None, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=()
    )
    with pytest.raises(ValueError, match="loss_func is None"):
        trainer.train(make_tiny_dataset(8), num_epochs=1)


def test_request_epoch_end_ends_training_at_the_window_end_eval_at_once():
    """``request_epoch_end`` ends training at the window end and evaluation at once."""

    class LimitTo(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            trainer.request_epoch_end()

        def on_eval_step_end(self, trainer, **kwargs):
            trainer.request_epoch_end()

    result = run_tiny_training(callbacks=[LimitTo()], num_epochs=2, gradient_accumulation_steps=3)
    assert result.trainer.completed_update_steps == 2  # one full window per epoch
    assert result.events.count("on_train_step_end") == 6
    assert result.events.count("on_eval_step_end") == 2


def test_evaluate_mid_run_restores_train_mode_and_the_runs_eval_set():
    modes = []

    class EvaluateOtherSet(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 2:
                trainer.evaluate(make_tiny_dataset(5, seed=9), per_device_batch_size=5)
                modes.append(trainer.model.training)

    result = run_tiny_training(callbacks=[EvaluateOtherSet()], num_epochs=2)
    assert modes == [True]
    assert len(result.metrics["eval_loss"]) == 1
    assert len(result.metrics["eval_loss_epoch"]) == 2
    assert len(result.trainer.eval_dataset) == 32  # the run's own eval set is back


class _PositionRecorder(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_optimizer_step_end(self, trainer, **kwargs):
        self.seen.append(
            (
                trainer.completed_update_steps,
                trainer.completed_epoch_batches,
                trainer.position.epochs_completed,
            )
        )


def test_the_run_position_is_one_object_read_through_properties(tmp_path):
    recorder = _PositionRecorder()
    trainer = run_tiny_training(
        callbacks=[recorder], num_epochs=2, num_samples=32, gradient_accumulation_steps=2
    ).trainer
    # 4 batches an epoch, an update every 2: the position counts batches of the epoch and updates of the run
    assert recorder.seen == [(1, 2, 0), (2, 4, 0), (3, 2, 1), (4, 4, 1)]
    assert trainer.position == RunPosition(completed_update_steps=4, epochs_completed=2)
    with pytest.raises(AttributeError):
        trainer.completed_update_steps = 0  # read-only: the loop advances trainer.position
    trainer.save_training_state(tmp_path / "state")
    saved = json.loads((tmp_path / "state" / "training_state.json").read_text())["position"]
    assert {key: saved[key] for key in trainer.position.state_dict()} == trainer.position.state_dict()


def test_a_run_resumed_with_more_steps_trains_them(tmp_path):
    trainer = make_trainer()
    data = make_tiny_dataset(80)  # 10 updates an epoch: max_num_train_steps=5 cuts the first
    trainer.train(data, num_epochs=3, per_device_batch_size=8, max_num_train_steps=5)
    trainer.save_training_state(tmp_path / "state")
    resumed = make_trainer()
    resumed.train(
        data, num_epochs=3, per_device_batch_size=8, max_num_train_steps=10, resume_from=tmp_path / "state"
    )
    assert resumed.completed_update_steps == 10, "extending a run by steps must train the extra updates"
    again = make_trainer()
    again.train(
        data, num_epochs=3, per_device_batch_size=8, max_num_train_steps=5, resume_from=tmp_path / "state"
    )
    assert again.completed_update_steps == 5 and again.run_history.get_metric_values("train_loss_epoch") == (
        trainer.run_history.get_metric_values("train_loss_epoch")
    ), "resumed with the same limit, the finished run records nothing more"
