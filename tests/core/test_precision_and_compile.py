"""Mixed precision and torch.compile through the same loop, with no change to training code."""

import pytest
import torch

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from .helpers import make_trainer


class OutputDtypes(TrainerCallback):
    def __init__(self):
        self.dtypes = set()

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.dtypes.add(batch_output["model_outputs"].dtype)


def test_bf16_mixed_precision_runs_the_forward_pass_under_autocast():
    class ForwardDtype(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_tiny_model()
            self.seen = set()

        def forward(self, x):
            out = self.inner(x)
            self.seen.add(out.dtype)
            return out

    model = ForwardDtype()
    dtypes = OutputDtypes()
    trainer = make_trainer(model=model, callbacks=[dtypes], accelerator_kwargs={"mixed_precision": "bf16"})
    trainer.train(
        make_tiny_dataset(32), num_epochs=2, per_device_batch_size=8, eval_dataset=make_tiny_dataset(8)
    )
    assert model.seen == {torch.bfloat16}
    # accelerate converts the outputs back to float32 for the loss
    assert dtypes.dtypes == {torch.float32}
    assert trainer.run_config.mixed_precision == "bf16"
    assert all(p.dtype == torch.float32 for p in trainer.get_model().parameters())
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    assert all(torch.isfinite(torch.tensor(losses)))


def test_bf16_and_fp32_runs_agree_within_mixed_precision_tolerance():
    def final_eval_loss(**accelerator_kwargs):
        trainer = make_trainer(accelerator_kwargs=accelerator_kwargs, lr=0.1)
        trainer.train(
            make_tiny_dataset(64),
            num_epochs=3,
            per_device_batch_size=8,
            train_dataloader_kwargs={"shuffle": False},
        )
        return trainer.evaluate(make_tiny_dataset(32, seed=1))["eval_loss"]

    fp32 = final_eval_loss()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    bf16 = final_eval_loss(mixed_precision="bf16")
    assert bf16 == pytest.approx(fp32, rel=0.05)


def test_a_compiled_model_trains_like_the_plain_one():
    def params_after_training(model):
        trainer = make_trainer(model=model, lr=0.1)
        trainer.train(
            make_tiny_dataset(32),
            num_epochs=2,
            per_device_batch_size=8,
            train_dataloader_kwargs={"shuffle": False},
        )
        return [p.detach() for p in trainer.get_model(keep_torch_compile=False).parameters()]

    compiled = params_after_training(torch.compile(make_tiny_model(), backend="eager"))
    plain = params_after_training(make_tiny_model())
    for a, b in zip(compiled, plain):
        torch.testing.assert_close(a, b)


def test_accelerator_options_pass_through_accelerator_kwargs(tmp_path):
    trainer = make_trainer(accelerator_kwargs={"project_dir": str(tmp_path), "cpu": True})
    assert trainer.accelerator.project_dir == str(tmp_path)
    assert trainer.device.type == "cpu"


def test_create_accelerator_can_be_overridden():
    from accelerate import Accelerator

    class Custom(Trainer):
        def create_accelerator(self):
            return Accelerator(cpu=True, step_scheduler_with_optimizer=False)

    trainer = make_trainer(trainer_class=Custom)
    assert trainer.accelerator.step_scheduler_with_optimizer is False
