"""GradientNormMonitorCallback on real, tiny training runs made with trainer-core's test kit."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from pytorch_accelerated.trainer import InMemoryRunHistory, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training
from trainer_callback_gradnorm import GradientNormMonitorCallback


class ReferenceNorms(TrainerCallback):
    """Each update's gradient norm by torch's own ``clip_grad_norm_`` (with no limit, it only measures)."""

    def __init__(self, norm_type: float = 2.0):
        self.norm_type = norm_type
        self.per_epoch: list[list[float]] = []

    def on_train_epoch_start(self, trainer, **kwargs):
        self.per_epoch.append([])

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        norm = torch.nn.utils.clip_grad_norm_(
            trainer.model.parameters(), max_norm=math.inf, norm_type=self.norm_type
        )
        self.per_epoch[-1].append(norm.item())


def assert_matches_reference(metrics, reference: ReferenceNorms, name: str = "grad_norm"):
    assert metrics[f"{name}_mean"] == pytest.approx([sum(n) / len(n) for n in reference.per_epoch], rel=1e-5)
    assert metrics[f"{name}_max"] == pytest.approx([max(n) for n in reference.per_epoch], rel=1e-5)


def test_records_the_mean_and_max_norm_of_each_epoch():
    reference = ReferenceNorms()
    result = run_tiny_training(callbacks=[GradientNormMonitorCallback(), reference], num_epochs=3)

    assert len(result.metrics["grad_norm_mean"]) == len(result.metrics["grad_norm_max"]) == 3
    assert all(len(norms) == 8 for norms in reference.per_epoch)  # 64 samples, batches of 8
    assert_matches_reference(result.metrics, reference)
    assert all(
        0 < mean <= maximum
        for mean, maximum in zip(result.metrics["grad_norm_mean"], result.metrics["grad_norm_max"])
    )


def test_measures_the_clipped_gradients_the_optimizer_sees():
    unclipped = run_tiny_training(callbacks=[GradientNormMonitorCallback()], num_epochs=1)
    limit = 0.5 * min(unclipped.metrics["grad_norm_max"])

    reference = ReferenceNorms()
    clipped = run_tiny_training(
        callbacks=[GradientNormMonitorCallback(), reference], num_epochs=1, gradient_clip_norm=limit
    )

    assert clipped.metrics["grad_norm_max"][0] <= limit * (1 + 1e-4)
    assert_matches_reference(clipped.metrics, reference)


def test_one_norm_per_optimizer_update_with_gradient_accumulation():
    reference = ReferenceNorms()
    result = run_tiny_training(
        callbacks=[GradientNormMonitorCallback(), reference], num_epochs=2, gradient_accumulation_steps=3
    )

    # 8 batches per epoch in windows of 3, 3 and 2: three updates per epoch
    assert [len(norms) for norms in reference.per_epoch] == [3, 3]
    assert result.trainer.completed_update_steps == 6
    assert_matches_reference(result.metrics, reference)


def test_other_norm_types_and_metric_names():
    reference = ReferenceNorms(norm_type=math.inf)
    result = run_tiny_training(
        callbacks=[GradientNormMonitorCallback(norm_type=math.inf, name="grad_max_abs"), reference],
        num_epochs=2,
        with_eval=False,
    )

    assert "grad_norm_mean" not in result.metrics
    assert_matches_reference(result.metrics, reference, name="grad_max_abs")


def test_the_epoch_values_are_recorded_before_watchers_read_metrics():
    class ReadsAtEpochEnd(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_training_run_epoch_end(self, trainer, **kwargs):
            self.seen.append(trainer.run_history.get_latest_metric("grad_norm_max"))

    reader = ReadsAtEpochEnd()  # before the monitor in the list: the order does not matter
    result = run_tiny_training(callbacks=[reader, GradientNormMonitorCallback()], num_epochs=2)

    assert reader.seen == result.metrics["grad_norm_max"]


def test_updates_the_optimizer_skipped_are_left_out():
    class SkipsEveryOtherUpdate(Trainer):
        """Reports every odd-numbered update as skipped, as fp16 does after an overflow."""

        @property
        def optimizer_step_was_skipped(self):
            return self.completed_update_steps % 2 == 1

        @optimizer_step_was_skipped.setter
        def optimizer_step_was_skipped(self, value):
            pass

    reference = ReferenceNorms()
    result = run_tiny_training(
        callbacks=[GradientNormMonitorCallback(), reference],
        num_epochs=1,
        trainer_class=SkipsEveryOtherUpdate,
    )

    # on_optimizer_step_end of update k (1-based) sees completed_update_steps == k: updates 2, 4, ... count
    kept = reference.per_epoch[0][1::2]
    assert result.metrics["grad_norm_mean"] == pytest.approx([sum(kept) / len(kept)], rel=1e-5)
    assert result.metrics["grad_norm_max"] == pytest.approx([max(kept)], rel=1e-5)


def test_records_nothing_for_an_epoch_without_gradients():
    class NoBackward(Trainer):
        def backward_step(self, loss):
            pass

    result = run_tiny_training(
        callbacks=[GradientNormMonitorCallback()], num_epochs=1, trainer_class=NoBackward
    )

    assert "grad_norm_mean" not in result.metrics
    assert "train_loss_epoch" in result.metrics


def test_with_fp16_loss_scaling_it_unscales_the_gradients_unless_clipping_did():
    # fp16 loss scaling needs a GPU, so this drives the events directly with a stand-in trainer.
    calls = []

    def make_trainer(clip_norm, unscale):
        model = torch.nn.Linear(2, 1)
        model.weight.grad, model.bias.grad = torch.full((1, 2), 3.0), torch.full((1,), 4.0)
        return SimpleNamespace(
            model=model,
            accelerator=SimpleNamespace(scaler=object(), unscale_gradients=unscale),
            run_config=SimpleNamespace(gradient_clip_norm=clip_norm, gradient_clip_value=None),
            optimizer_step_was_skipped=False,
            run_history=InMemoryRunHistory(),
        )

    monitor = GradientNormMonitorCallback()
    monitor.on_before_optimizer_step(make_trainer(None, lambda: calls.append("unscaled")), optimizer=None)
    assert calls == ["unscaled"]
    monitor.on_before_optimizer_step(make_trainer(1.0, lambda: calls.append("unscaled")), optimizer=None)
    assert calls == ["unscaled"]  # clipping unscaled them already

    def already_unscaled():
        raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")

    trainer = make_trainer(None, already_unscaled)  # an overridden clip_gradients unscaled them
    monitor.on_before_optimizer_step(trainer, optimizer=None)
    monitor.on_optimizer_step_end(trainer, optimizer=None)
    monitor.on_train_epoch_end(trainer)
    assert trainer.run_history.get_metric_values("grad_norm_max") == pytest.approx([math.sqrt(9 + 9 + 16)])


@pytest.mark.parametrize(
    "kwargs",
    [{"norm_type": 0}, {"norm_type": -1.0}, {"norm_type": True}, {"name": ""}, {"name": "grad norm"}],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        GradientNormMonitorCallback(**kwargs)


def test_a_run_resumed_inside_an_epoch_records_the_same_norms(tmp_path):
    from pytorch_accelerated.trainer.testing import check_exact_resume

    states = check_exact_resume(lambda: [GradientNormMonitorCallback()], tmp_path, num_epochs=2)
    assert len(states) > 4
