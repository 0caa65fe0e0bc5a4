"""Users' mistakes caught with a clear error (or a warning) before the first step where they can be
known, instead of silently wrong training or an error from deep inside torch or accelerate."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, Dataset, SequentialSampler, TensorDataset

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer import _checks, _forward_inputs
from pytorch_accelerated.trainer.testing import EventRecorder, make_tiny_dataset, make_tiny_model

from ..launching import REPO_ROOT, run_launch, tail, torchrun_command
from .helpers import make_trainer, parameters_of


def trained_nothing(trainer: Trainer, before) -> bool:
    return all(torch.equal(a, b) for a, b in zip(parameters_of(trainer.get_model()), before))


# ------------------------------------------------------------------ the model, loss and optimizer


def test_an_optimizer_over_another_models_parameters_is_an_error():
    model, other = make_tiny_model(), make_tiny_model()
    with pytest.raises(ValueError, match="holds none of the model's parameters"):
        Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(other.parameters(), lr=0.1), callbacks=())


def test_trainable_parameters_outside_the_optimizer_are_named_in_a_warning(recwarn):
    """Parameters that require grad outside every param group are named in one warning."""
    model = make_tiny_model()
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)  # the first layer is left out
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=())
    trainer.train(make_tiny_dataset(16), num_epochs=2)
    left_out = [w for w in recwarn if "in no param group" in str(w.message)]
    assert len(left_out) == 1
    assert "0.weight, 0.bias" in str(left_out[0].message)
    assert left_out[0].filename == __file__  # it points at the train() call


def test_frozen_parameters_outside_the_optimizer_are_fine(recwarn):
    model = make_tiny_model()
    model[0].requires_grad_(False)
    optimizer = torch.optim.SGD(model[2].parameters(), lr=0.1)
    Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=()).train(
        make_tiny_dataset(16), num_epochs=1
    )
    assert not [w for w in recwarn if "param group" in str(w.message)]


def test_a_compiled_model_with_an_optimizer_over_its_parameters_is_fine(recwarn):
    model = make_tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    compiled = torch.compile(model)  # not run here: creating the Trainer compiles nothing
    Trainer(compiled, torch.nn.CrossEntropyLoss(), optimizer, callbacks=())
    _checks.warn_of_parameters_outside_the_optimizer(optimizer, model)
    assert not [w for w in recwarn if "param group" in str(w.message)]


@pytest.mark.parametrize(
    "arguments, error",
    [
        (
            lambda m: (lambda x: x, torch.nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), lr=0.1)),
            "must be a torch.nn.Module",
        ),
        (
            lambda m: (torch.nn.Linear, torch.nn.CrossEntropyLoss(), torch.optim.SGD(m.parameters(), lr=0.1)),
            r"model=Linear\(...\)",
        ),
        (
            lambda m: (m, torch.nn.CrossEntropyLoss, torch.optim.SGD(m.parameters(), lr=0.1)),
            r"loss_func=CrossEntropyLoss\(\)",
        ),
        (
            lambda m: (m, torch.nn.CrossEntropyLoss(), torch.optim.SGD),
            r"optimizer=SGD\(model.parameters\(\), lr=...\)",
        ),
        (lambda m: (m, torch.nn.CrossEntropyLoss(), None), "optimizer is None: pass an optimizer"),
    ],
    ids=["model-not-a-module", "model-class", "loss-class", "optimizer-class", "optimizer-none"],
)
def test_wrong_kinds_of_model_loss_and_optimizer_are_named(arguments, error):
    with pytest.raises(TypeError, match=error):
        Trainer(*arguments(make_tiny_model()), callbacks=())


def test_a_scheduler_instance_as_create_scheduler_fn_fails_before_a_step():
    """A scheduler instance as ``create_scheduler_fn`` is an error before any step."""
    recorder = EventRecorder()
    trainer = make_trainer(callbacks=[recorder])
    scheduler = torch.optim.lr_scheduler.StepLR(trainer.optimizer, step_size=1)
    with pytest.raises(
        TypeError, match=r"create_scheduler_fn is a StepLR instance; pass a callable.*functools.partial"
    ):
        trainer.train(make_tiny_dataset(16), num_epochs=1, create_scheduler_fn=scheduler)
    assert "on_train_step_start" not in recorder.events


def test_a_partial_of_a_scheduler_class_still_works():
    trainer = make_trainer()
    create = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lambda step: 0.5)
    trainer.train(make_tiny_dataset(16), num_epochs=1, create_scheduler_fn=create)
    assert trainer.scheduler is not None


@pytest.mark.parametrize("name", ["gradient_clip_norm", "gradient_clip_value"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1.0"])
def test_a_gradient_clip_not_a_positive_number_fails_before_any_step(name, value):
    """A gradient clip that is not a positive number is an error before any step."""
    trainer = make_trainer()
    before = parameters_of(trainer.model)
    with pytest.raises(ValueError, match=f"{name} must be a positive number or None"):
        trainer.train(make_tiny_dataset(16), num_epochs=1, **{name: value})
    assert trained_nothing(trainer, before)


def test_a_positive_gradient_clip_still_trains():
    trainer = make_trainer()
    trainer.train(make_tiny_dataset(16), num_epochs=1, gradient_clip_norm=0.5)
    trainer.train(make_tiny_dataset(16), num_epochs=1, gradient_clip_value=1)


# ------------------------------------------------------------------ datasets and dataloaders


def test_an_empty_training_set_is_named():
    with pytest.raises(ValueError, match=r"train_dataset is empty \(len 0\)"):
        make_trainer().train(make_tiny_dataset(0), num_epochs=1)


def test_an_empty_evaluation_set_is_named_in_train_before_any_step():
    trainer = make_trainer()
    before = parameters_of(trainer.model)
    with pytest.raises(ValueError, match=r"eval_dataset is empty \(len 0\)"):
        trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset=make_tiny_dataset(0))
    assert trained_nothing(trainer, before)


def test_evaluate_on_an_empty_dataset_is_an_error_not_nan():
    with pytest.raises(ValueError, match=r"evaluation dataset is empty \(len 0\)"):
        make_trainer().evaluate(make_tiny_dataset(0))


def test_an_evaluation_dataloader_without_batches_is_an_error_not_nan():
    with pytest.raises(ValueError, match="evaluation dataloader has no batches.*drop_last"):
        make_trainer().evaluate(
            make_tiny_dataset(3), per_device_batch_size=4, dataloader_kwargs={"drop_last": True}
        )


class InputsOnly(Dataset):
    """A dataset of bare tensors: no targets."""

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return make_tiny_dataset(16)[index][0]


@pytest.mark.parametrize(
    ("dataset", "what"),
    [
        pytest.param(
            TensorDataset(make_tiny_dataset(16).tensors[0]), "lists of one item", id="inputs-only-dataset"
        ),
        pytest.param(InputsOnly(), "tensors", id="bare-tensors"),
    ],
)
def test_batches_without_targets_are_named_at_the_first_step(dataset, what):
    # before: "cross_entropy_loss(): argument 'target' (position 2) must be Tensor, not NoneType", from inside
    # torch
    trainer = make_trainer()
    before = parameters_of(trainer.model)
    message = (
        rf"The batches have no targets: they are {what} \(the inputs only.*TensorDataset\(inputs, targets\)"
    )
    with pytest.raises(ValueError, match=message):
        trainer.train(dataset, num_epochs=1, per_device_batch_size=4)
    assert trained_nothing(trainer, before)


def test_a_conflicting_batch_size_in_the_dataloader_kwargs_is_refused():
    # before: it trained on batches of 4 while run_config, the trackers and the placeholders said 8
    """A batch size in the dataloader kwargs other than ``per_device_batch_size`` is refused."""
    trainer = make_trainer()
    before = parameters_of(trainer.model)
    data = make_tiny_dataset(16)
    with pytest.raises(
        ValueError, match=r"set batch_size=4, and per_device_batch_size is 8.*Pass per_device_batch_size=4"
    ):
        trainer.train(data, num_epochs=1, per_device_batch_size=8, train_dataloader_kwargs={"batch_size": 4})
    assert trained_nothing(trainer, before)
    with pytest.raises(ValueError, match=r"set batch_size=2, and per_device_batch_size is 8"):
        trainer.train(
            data, num_epochs=1, eval_dataset=make_tiny_dataset(8), eval_dataloader_kwargs={"batch_size": 2}
        )
    trainer.train(data, num_epochs=1, per_device_batch_size=4, train_dataloader_kwargs={"batch_size": 4})
    assert trainer.run_config.train_per_device_batch_size == trainer.train_dataloader.batch_size == 4


class IndexedDataset(Dataset):
    """Returns (features, target, index) so that a test can see which samples each step saw."""

    def __init__(self, num_samples):
        self.inner = make_tiny_dataset(num_samples)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        inputs, target = self.inner[index]
        return inputs, target, index


class SeenIndices(TrainerCallback):
    def __init__(self):
        self.train, self.eval = [], []

    def on_train_step_end(self, trainer, batch, **kwargs):
        self.train.append(batch[2].tolist())

    def on_eval_step_end(self, trainer, batch, **kwargs):
        self.eval.append(batch[2].tolist())


class Reversed(torch.utils.data.Sampler):
    def __init__(self, length):
        self.length = length

    def __iter__(self):
        return iter(range(self.length - 1, -1, -1))

    def __len__(self):
        return self.length


def test_a_sampler_in_the_dataloader_kwargs_decides_the_order():
    seen = SeenIndices()
    make_trainer(callbacks=[seen]).train(
        IndexedDataset(8),
        num_epochs=1,
        eval_dataset=IndexedDataset(6),
        per_device_batch_size=4,
        train_dataloader_kwargs={"sampler": Reversed(8)},
        eval_dataloader_kwargs={"sampler": Reversed(6)},
    )
    assert seen.train == [[7, 6, 5, 4], [3, 2, 1, 0]]
    assert seen.eval == [[5, 4, 3, 2], [1, 0]]


def test_a_batch_sampler_in_the_dataloader_kwargs_decides_the_batches():
    seen = SeenIndices()
    trainer = make_trainer(callbacks=[seen])
    batches = [[0, 1, 2], [3], [4, 5, 6, 7]]
    trainer.train(
        IndexedDataset(8),
        num_epochs=1,
        eval_dataset=IndexedDataset(5),
        train_dataloader_kwargs={"batch_sampler": batches},
        eval_dataloader_kwargs={
            "batch_sampler": BatchSampler(SequentialSampler(range(5)), 2, drop_last=False)
        },
    )
    assert seen.train == batches
    assert seen.eval == [[0, 1], [2, 3], [4]]
    assert trainer.run_config.train_dataloader_len == 3


# ------------------------------------------------------------------ what the batch-loss hooks return


class LossTrainer(Trainer):
    """Returns ``make_loss(loss)`` from the hook named ``hook`` on the steps in ``on_steps``."""

    def __init__(self, *args, hook, make_loss, on_steps=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hook, self.make_loss, self.on_steps, self.steps = hook, make_loss, on_steps, 0

    def _changed(self, hook, batch_output):
        if hook == self.hook:
            self.steps += 1
            if self.on_steps is None or self.steps in self.on_steps:
                batch_output["loss"] = self.make_loss(batch_output["loss"])
        return batch_output

    def calculate_train_batch_loss(self, batch):
        return self._changed("calculate_train_batch_loss", super().calculate_train_batch_loss(batch))

    def calculate_eval_batch_loss(self, batch):
        return self._changed("calculate_eval_batch_loss", super().calculate_eval_batch_loss(batch))


def unreduced(loss):
    return loss.expand(4)


@pytest.mark.parametrize(
    "hook, make_loss, error",
    [
        (
            "calculate_train_batch_loss",
            unreduced,
            r"calculate_train_batch_loss returned a 'loss' of shape \(4,\).*reduce it",
        ),
        (
            "calculate_train_batch_loss",
            lambda loss: loss.item(),
            "calculate_train_batch_loss returned a 'loss' of type float",
        ),
        (
            "calculate_train_batch_loss",
            torch.Tensor.detach,
            "calculate_train_batch_loss returned a 'loss' that does not require grad",
        ),
        (
            "calculate_eval_batch_loss",
            unreduced,
            r"calculate_eval_batch_loss returned a 'loss' of shape \(4,\)",
        ),
    ],
    ids=["train-not-scalar", "train-float", "train-no-grad", "eval-not-scalar"],
)
def test_a_batch_loss_that_is_not_a_scalar_tensor_names_the_hook(hook, make_loss, error):
    model = make_tiny_model()
    trainer = LossTrainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=(),
        hook=hook,
        make_loss=make_loss,
    )
    with pytest.raises((TypeError, ValueError), match=error):
        trainer.train(
            make_tiny_dataset(16), num_epochs=1, eval_dataset=make_tiny_dataset(8), per_device_batch_size=4
        )


def test_the_batch_loss_is_checked_on_the_first_step_of_a_run_only(monkeypatch):
    calls = []
    check = _checks.check_batch_loss
    monkeypatch.setattr(_checks, "check_batch_loss", lambda *a, **k: (calls.append(a[1]), check(*a, **k)))
    trainer = make_trainer()
    for _ in range(2):
        trainer.train(
            make_tiny_dataset(16), num_epochs=3, eval_dataset=make_tiny_dataset(8), per_device_batch_size=4
        )
    # per run: one training step and the first step of each evaluation epoch
    assert calls == (["calculate_train_batch_loss"] + ["calculate_eval_batch_loss"] * 3) * 2


def test_a_loss_that_goes_wrong_after_the_first_step_is_left_to_torch():
    """The check costs nothing per step: after the first, a bad loss meets torch's own error."""
    model = make_tiny_model()
    trainer = LossTrainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=(),
        hook="calculate_train_batch_loss",
        make_loss=torch.Tensor.detach,
        on_steps={2},
    )
    with pytest.raises(RuntimeError, match="does not require grad") as raised:
        trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=4)
    assert "calculate_train_batch_loss" not in str(raised.value)


# ------------------------------------------------------------------ mixed precision


def test_fp16_on_a_cpu_is_an_error_naming_bf16_instead_of_running_fp32():
    with pytest.raises(ValueError, match=r"mixed_precision='fp16' cannot run on this cpu.*'bf16', or 'no'"):
        make_trainer(accelerator_kwargs={"mixed_precision": "fp16", "cpu": True})
    # a failed Trainer leaves nothing behind: the next one, with a setting that runs, trains
    make_trainer(accelerator_kwargs={"mixed_precision": "bf16", "cpu": True}).train(
        make_tiny_dataset(8), num_epochs=1
    )


def test_trainers_with_different_mixed_precision_in_one_process():
    first = make_trainer(accelerator_kwargs={"mixed_precision": "bf16"})
    first.train(make_tiny_dataset(16), num_epochs=1)
    assert first.run_config.mixed_precision == "bf16"
    second = make_trainer(accelerator_kwargs={"mixed_precision": "no"})
    second.train(make_tiny_dataset(16), num_epochs=1)
    assert second.run_config.mixed_precision == "no"
    default = make_trainer()  # no setting: accelerate's default, not the last Trainer's
    assert default.accelerator.mixed_precision == "no"
    third = make_trainer(accelerator_kwargs={"mixed_precision": "bf16"})
    third.train(make_tiny_dataset(16), num_epochs=1)
    assert third.run_config.mixed_precision == "bf16"
    # the first Trainer's accelerate state was replaced: it says so instead of training in another precision
    with pytest.raises(RuntimeError, match="created with mixed_precision='no'.*create this Trainer again"):
        second.train(make_tiny_dataset(16), num_epochs=1)
    third.train(make_tiny_dataset(16), num_epochs=1)
    assert third.run_config.mixed_precision == "bf16"


def test_trainers_with_the_same_mixed_precision_share_the_state():
    first = make_trainer(accelerator_kwargs={"mixed_precision": "bf16"})
    second = make_trainer(accelerator_kwargs={"mixed_precision": "bf16"})
    assert first.accelerator.state.__dict__ is second.accelerator.state.__dict__
    first.train(make_tiny_dataset(16), num_epochs=1)
    second.train(make_tiny_dataset(16), num_epochs=1)


# ------------------------------------------------------------------ dict batches


class DictDataset(Dataset):
    def __init__(self, num_samples, input_key="x"):
        self.inner, self.input_key = make_tiny_dataset(num_samples), input_key

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        inputs, target = self.inner[index]
        return {self.input_key: inputs, "labels": target, "sample_id": index}


class NamedInputModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_tiny_model()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


class KwargsModel(NamedInputModel):
    def forward(self, x, **kwargs):
        self.received = sorted(kwargs)
        return super().forward(x)


def dict_trainer(model):
    return Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=()
    )


def test_a_plain_model_trains_on_dict_batches_and_names_dropped_keys_once(recwarn, monkeypatch):
    """A plain model with a ``loss_func`` trains on dict batches and the dropped keys are named once."""
    inspected = []
    signature = _forward_inputs.inspect.signature
    monkeypatch.setattr(
        _forward_inputs.inspect, "signature", lambda f: (inspected.append(f), signature(f))[1]
    )
    model = NamedInputModel()
    trainer = dict_trainer(model)
    trainer.train(DictDataset(16), num_epochs=2, eval_dataset=DictDataset(8), per_device_batch_size=4)
    predictions = trainer.predict(DictDataset(5))
    assert predictions.shape == (5, 3)
    assert model.calls == 2 * (4 + 2) + 1
    assert len(inspected) == 1  # once per model, not per step
    dropped = [str(w.message) for w in recwarn if "not passed to the model" in str(w.message)]
    assert dropped == [
        "NamedInputModel.forward takes no argument named ['sample_id']: these batch keys are not "
        "passed to the model. Remove them from the batch (or give forward **kwargs) to silence this."
    ]


def test_a_forward_with_kwargs_gets_every_key(recwarn):
    model = KwargsModel()
    dict_trainer(model).train(DictDataset(8), num_epochs=1, per_device_batch_size=4)
    assert model.received == ["labels", "sample_id"]
    assert not [w for w in recwarn if "not passed to the model" in str(w.message)]


def test_a_dict_batch_missing_forward_arguments_names_them_before_a_step():
    """A dict batch without the forward arguments names them before any step."""
    model = make_tiny_model()  # Sequential.forward(input)
    with pytest.raises(
        TypeError, match=r"keys \['labels', 'sample_id', 'x'\].*Sequential.forward needs \['input'\]"
    ):
        dict_trainer(model).train(DictDataset(8), num_epochs=1, per_device_batch_size=4)


def test_a_dict_batch_keyed_like_the_forward_argument_reaches_the_model():
    """A dict batch keyed like the forward argument reaches a single-input model."""
    model = make_tiny_model()
    dict_trainer(model).train(DictDataset(8, input_key="input"), num_epochs=1, per_device_batch_size=4)


# ------------------------------------------------------------------ on two processes

SCENARIO = Path(__file__).resolve().with_name("mistakes_distributed_scenario.py")


def test_on_two_processes_samplers_shard_and_trainers_change_precision(tmp_path):
    """On two processes samplers shard and trainers change mixed precision."""
    out = tmp_path / "out"
    command = torchrun_command(SCENARIO.relative_to(REPO_ROOT), out)
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]
    # accelerate keeps a custom batch sampler and gives each process every other of its batches
    assert [r["batch_sampler_batches"] for r in results] == [[[0, 1, 2], [6, 7]], [[3, 4, 5], [8, 9]]]
    # a seeded sampler draws the same order on each process: every sample is seen exactly once
    seen = sorted(index for r in results for batch in r["random_sampler_batches"] for index in batch)
    assert seen == list(range(12))
    for r in results:
        assert "already shards every dataloader" in r["distributed_sampler_error"]
        assert r["mixed_precision_runs"] == ["bf16", "no"]
        assert r["process_group_alive"]
