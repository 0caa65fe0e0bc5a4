"""pytorch-accelerated 0.1.61's calls that keep their meaning here, on real runs: loading a training
state by hand (``Trainer.load_training_state``), ``save_training_state``'s ``checkpoint_kwargs``,
``SaveTrainingStateCallback(save_at_end=...)``, ``TerminateOnNaNCallback.check_for_nan_after_batch``,
and the helpers of 0.1.61's ``utils`` whose own tests cannot be collected here (their module imports
``LimitBatches``, which is not kept)."""

from pathlib import Path

import pytest
import torch

from pytorch_accelerated.callbacks import SaveTrainingStateCallback
from pytorch_accelerated.schedulers import CosineLrScheduler
from pytorch_accelerated.trainer import (
    CheckpointError,
    StopTrainingError,
    TerminateOnNaNCallback,
    TrainerCallback,
    list_training_states,
)
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, make_tiny_dataset, make_tiny_model
from pytorch_accelerated.utils import (
    DataLoaderSlice,
    local_process_zero_first,
    local_process_zero_only,
    remove_padding,
    world_process_zero_only,
)

from tests.core.helpers import SGD_MOMENTUM, make_trainer

FIXTURES_0161 = Path(__file__).parent / "checkpoints_0161"


def train(trainer, num_epochs=2, eval_dataset=None):
    """6 updates per epoch, with a cosine schedule sized for the run."""
    trainer.train(
        make_tiny_dataset(48),
        num_epochs=num_epochs,
        eval_dataset=eval_dataset,
        per_device_batch_size=8,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=0.5),
    )
    return trainer


def parts(trainer):
    return {
        "weights": trainer.get_model().state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
    }


class LoadTrainingStateAtStart(TrainerCallback):
    """0.1.61's hand resume: a new run that starts from a saved state's weights, optimizer and schedule."""

    def __init__(self, path):
        self.path = path
        self.metadata, self.loaded = None, None

    def on_training_run_start(self, trainer, **kwargs):
        self.metadata = trainer.load_training_state(self.path)
        self.loaded = {name: _copy(value) for name, value in parts(trainer).items()}


def _copy(state):
    return torch.utils._pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, state)


# ---------------------------------------------------------------------------------------- training states


@pytest.fixture
def saved_state(tmp_path):
    """A state saved after a 2-epoch run (12 updates), with 0.1.61-style metadata, and the run's parts."""
    trainer = train(make_trainer(optimizer_kwargs=SGD_MOMENTUM))
    metadata = {"checkpoint_type": "wsd_pre_decay", "step": 12}
    path = trainer.save_training_state(tmp_path / "state", checkpoint_kwargs=metadata)
    return path, _copy(parts(trainer))


def test_load_training_state_loads_the_parts_and_returns_the_metadata(saved_state):
    """``load_training_state`` loads a state's parts into a new run and returns its metadata."""
    path, saved = saved_state
    loader = LoadTrainingStateAtStart(path)
    trainer = make_trainer([loader], model=make_tiny_model(seed=5), optimizer_kwargs=SGD_MOMENTUM)
    trainer = train(trainer, num_epochs=1)

    assert_bitwise_equal(loader.loaded, saved, "what load_training_state loaded")
    assert loader.metadata == {
        "current_epoch": 3,
        "completed_update_steps": 12,
        "checkpoint_type": "wsd_pre_decay",
        "step": 12,
    }
    # the parts, not the position: a new run of one epoch, whose schedule goes on from the saved one
    assert trainer.completed_update_steps == 6 and trainer.scheduler.num_updates == 18


def test_load_training_state_refuses_another_model_and_loads_nothing(saved_state):
    """``load_training_state`` refuses another model or optimizer and loads nothing."""
    path, _ = saved_state
    other_model = make_trainer(model=make_tiny_model(hidden=8), optimizer_kwargs=SGD_MOMENTUM)
    before = _copy(other_model.get_model().state_dict())
    with pytest.raises(CheckpointError, match=r"not for this model: .*0.weight is \(16, 4\) there and \(8"):
        other_model.load_training_state(path)
    assert_bitwise_equal(other_model.get_model().state_dict(), before, "the model after a refused state")
    with pytest.raises(CheckpointError, match="holds the state of a SGD .* trainer's optimizer is a Adam"):
        make_trainer(optimizer_class=torch.optim.Adam).load_training_state(path)


def test_load_training_state_names_a_0161_folder_it_does_not_read():
    """``load_training_state`` names a 0.1.61 training state folder it does not read."""
    trainer = make_trainer(model=torch.nn.Linear(4, 2), optimizer_kwargs=SGD_MOMENTUM)
    with pytest.raises(CheckpointError, match=r"saved by pytorch-accelerated 0.1.61 .*model.safetensors"):
        trainer.load_training_state(FIXTURES_0161 / "training_state_cosine")


def test_save_training_state_checkpoint_kwargs_must_be_plain_data(tmp_path):
    trainer = train(make_trainer(optimizer_kwargs=SGD_MOMENTUM), num_epochs=1)
    with pytest.raises(CheckpointError, match=r"checkpoint_kwargs\['when'\] holds a function"):
        trainer.save_training_state(tmp_path / "state", checkpoint_kwargs={"when": lambda: 0})
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("save_at_end, last", [(True, "step-00000012-end"), (False, "step-00000010")])
def test_save_training_state_callback_saves_at_the_end_unless_told_not_to(tmp_path, save_at_end, last):
    saver = SaveTrainingStateCallback(
        tmp_path / "states",
        save_every_n_steps=5,
        save_at_end=save_at_end,
        max_checkpoints=None,  # all, to list
    )
    train(make_trainer([saver], optimizer_kwargs=SGD_MOMENTUM))
    assert [path.name for path in list_training_states(tmp_path / "states")] == [
        "step-00000000-start",
        "step-00000005",
        "step-00000010",
        *([last] if save_at_end else []),
    ]


def test_save_training_state_callback_takes_its_options_by_keyword_only():
    assert SaveTrainingStateCallback().save_dir == Path("training_states"), "0.1.61's default folder"
    with pytest.raises(TypeError, match="positional"):
        SaveTrainingStateCallback("states", 2)  # 0.1.61's second argument was save_every_n_epochs, here steps


# ---------------------------------------------------------------------------------------- NaN check


class AlsoCheckEvaluationLosses(TerminateOnNaNCallback):
    """0.1.61 also checked evaluation losses: a subclass can, with its per-batch check."""

    def on_eval_step_end(self, trainer, batch_output, **kwargs):
        self.check_for_nan_after_batch(batch_output, step="validation")


def test_check_for_nan_after_batch_stops_a_run_from_a_subclass():
    callback = TerminateOnNaNCallback()
    callback.check_for_nan_after_batch({"loss": torch.tensor(1.5)})  # a finite loss: nothing happens
    with pytest.raises(StopTrainingError, match="NaN loss in training step"):
        callback.check_for_nan_after_batch({"loss": torch.tensor(float("inf"))}, step="training")

    inputs, labels = make_tiny_dataset(16, seed=1).tensors
    nan_eval_data = torch.utils.data.TensorDataset(torch.full_like(inputs, float("nan")), labels)
    trainer = make_trainer([AlsoCheckEvaluationLosses()], optimizer_kwargs=SGD_MOMENTUM)
    trainer = train(trainer, num_epochs=3, eval_dataset=nan_eval_data)
    epochs_trained = len(trainer.run_history.get_metric_values("train_loss_epoch"))
    assert epochs_trained == 1, "stopped in the first evaluation"


# ---------------------------------------------------------------------------------------- 0.1.61's utils


PAD = -1


@pytest.mark.parametrize("shape", [(6,), (4, 2), (2, 2, 2), (3, 4, 2, 5)])
def test_remove_padding_drops_the_rows_that_are_padding_only(shape):
    padded = torch.arange(torch.Size(shape).numel()).reshape(shape)
    padded[-1] = PAD
    if len(shape) > 1:
        padded[0, ..., 0] = PAD  # a row partly padded is kept
    assert torch.equal(remove_padding(padded, PAD), padded[:-1])


@pytest.mark.parametrize(
    "decorator", [world_process_zero_only, local_process_zero_only, local_process_zero_first]
)
def test_the_process_decorators_run_the_function_on_one_process(decorator):
    assert decorator(lambda: 42)() == 42


def test_dataloader_slice_yields_its_first_batches():
    loader = torch.utils.data.DataLoader(make_tiny_dataset(40), batch_size=8)
    first_two = DataLoaderSlice(loader, 2)
    assert len(first_two) == 2
    assert [batch[0].tolist() for batch in first_two] == [batch[0].tolist() for batch in list(loader)[:2]]
