"""GradientNormCallback inside real runs: values, clipping, batching of the reads, resume."""

import pytest
import torch

from pytorch_accelerated.callbacks import GradientClippingEventMixin, GradientNormCallback, TrainerCallback
from pytorch_accelerated.trainer import Trainer, seed_everything
from pytorch_accelerated.trainer.testing import check_exact_resume, run_tiny_training


class ClippingEventTrainer(GradientClippingEventMixin, Trainer):
    pass


class ReferenceNorms(TrainerCallback):
    """The norms computed by hand from the gradients the optimizer is about to use, and how many
    values the run history holds at each update."""

    def __init__(self):
        self.total, self.first_layer, self.recorded_at_update = [], [], []

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        model = trainer.get_model()
        grads = [p.grad.flatten() for p in model.parameters()]
        self.total.append(torch.linalg.vector_norm(torch.cat(grads)).item())
        self.first_layer.append(
            torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model[0].parameters()])).item()
        )
        self.recorded_at_update.append(len(trainer.run_history.get_metric_values("grad_norm")))


def test_the_norms_of_every_update_total_and_per_layer_group():
    reference = ReferenceNorms()
    result = run_tiny_training(callbacks=[GradientNormCallback(log_every_n_steps=5), reference], num_epochs=2)
    assert len(result.metrics["grad_norm"]) == 16  # 8 updates per epoch
    assert result.metrics["grad_norm"] == pytest.approx(reference.total, rel=1e-5)
    assert result.metrics["grad_norm/group_0"] == pytest.approx(reference.first_layer, rel=1e-5)
    assert sorted(name for name in result.metrics if name.startswith("grad_norm")) == [
        "grad_norm",
        "grad_norm/group_0",
        "grad_norm/group_1",
    ]
    assert "grad_norm_clipped" not in result.metrics
    # read every 5 updates and at each epoch's end, not at every update
    assert reference.recorded_at_update == [0, 0, 0, 0, 5, 5, 5, 5, 8, 8, 8, 8, 13, 13, 13, 13]


def test_with_clipping_the_norm_before_and_after_clipping():
    result = run_tiny_training(
        callbacks=[GradientNormCallback()],
        trainer_class=ClippingEventTrainer,
        gradient_clip_norm=0.05,
        num_epochs=1,
    )
    before, after = result.metrics["grad_norm"], result.metrics["grad_norm_clipped"]
    assert len(before) == len(after) == 8 and max(before) > 0.05
    assert after == pytest.approx([min(norm, 0.05) for norm in before], rel=1e-4)
    assert len(result.metrics["grad_norm_clipped/group_1"]) == 8


def test_a_clipping_run_without_the_event_is_refused_before_the_first_step():
    events = []

    class Steps(TrainerCallback):
        def on_train_step_start(self, trainer, **kwargs):
            events.append("step")

    with pytest.raises(TypeError, match="GradientClippingEventMixin"):
        run_tiny_training(callbacks=[GradientNormCallback(), Steps()], gradient_clip_value=1.0)
    assert events == []


def test_a_resumed_run_records_the_same_norms(tmp_path):
    # read every 3 updates: states saved between two reads hold norms not recorded yet
    check_exact_resume(lambda: [GradientNormCallback(log_every_n_steps=3)], tmp_path, num_epochs=2)


class ScaledLossTrainer(ClippingEventTrainer):
    """fp16's loss scaling on the CPU: a real GradScaler multiplies the loss (and gradients) by 2**8."""

    def create_accelerator(self):
        from accelerate import Accelerator

        accelerator = Accelerator()
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        return accelerator


@pytest.mark.parametrize("clip_norm", [None, 0.05])
def test_the_norms_are_of_the_unscaled_gradients_under_loss_scaling(clip_norm):
    def norms(trainer_class):
        seed_everything(0)  # the same data order for both runs
        result = run_tiny_training(
            callbacks=[GradientNormCallback()],
            trainer_class=trainer_class,
            gradient_clip_norm=clip_norm,
            num_epochs=1,
        )
        return {name: values for name, values in result.metrics.items() if name.startswith("grad_norm")}

    plain, scaled = norms(ClippingEventTrainer), norms(ScaledLossTrainer)
    assert sorted(plain) == sorted(scaled)
    # with clipping, the two runs' weights part by float rounding after the first updates: compare
    # the first update's norms there (without the fix they were 2**8 times too large)
    compared = slice(None) if clip_norm is None else slice(0, 1)
    for name in plain:
        assert scaled[name][compared] == pytest.approx(plain[name][compared], rel=1e-4), name
