"""Gradient accumulation and clipping keep their semantics."""

import pytest
import torch

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from .helpers import make_trainer


def _train_and_get_parameters(batch_size, accumulation_steps, num_samples=32, **train_kwargs):
    trainer = make_trainer(lr=0.1)
    trainer.train(
        make_tiny_dataset(num_samples),
        num_epochs=2,
        per_device_batch_size=batch_size,
        gradient_accumulation_steps=accumulation_steps,
        train_dataloader_kwargs={"shuffle": False},
        **train_kwargs,
    )
    return [p.detach() for p in trainer.get_model().parameters()], trainer


@pytest.mark.parametrize("accumulation_steps", [2, 4])
def test_accumulating_k_batches_of_b_learns_like_one_batch_of_k_times_b(accumulation_steps):
    accumulated, _ = _train_and_get_parameters(8 // accumulation_steps, accumulation_steps)
    single, _ = _train_and_get_parameters(8, 1)
    for a, b in zip(accumulated, single):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_epochs_short_last_window_averages_over_its_own_batches():
    # 40 samples, batches of 4, windows of 4 batches: the last window has 2 batches (8 samples),
    # which must count like one batch of 8.
    """The short last window of an epoch is averaged over its own batches."""
    accumulated, _ = _train_and_get_parameters(4, 4, num_samples=40)

    model = make_tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = make_tiny_dataset(40)
    for _ in range(2):
        for start in (0, 16, 32):
            inputs, targets = data.tensors[0][start : start + 16], data.tensors[1][start : start + 16]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    for a, b in zip(accumulated, model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_the_logged_loss_is_the_true_loss_not_divided_by_accumulation():
    seen_losses = []

    class LossReader(TrainerCallback):
        def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
            seen_losses.append(batch_output["loss"].item())

    trainer = make_trainer(callbacks=[LossReader()], lr=0.0)
    trainer.train(make_tiny_dataset(32), num_epochs=1, per_device_batch_size=4, gradient_accumulation_steps=4)
    data = make_tiny_dataset(32)
    with torch.no_grad():
        full_loss = torch.nn.functional.cross_entropy(
            trainer.get_model()(data.tensors[0]), data.tensors[1]
        ).item()
    assert trainer.run_history.get_latest_metric("train_loss_epoch") == pytest.approx(full_loss, rel=1e-5)
    assert sum(seen_losses) / len(seen_losses) == pytest.approx(full_loss, rel=1e-5)


def test_clipping_happens_once_per_optimizer_update():
    clip_calls = []

    class CountingTrainer(Trainer):
        def clip_gradients(self):
            clip_calls.append(self.completed_update_steps)
            super().clip_gradients()

    trainer = make_trainer(trainer_class=CountingTrainer)
    trainer.train(
        make_tiny_dataset(40),
        num_epochs=2,
        per_device_batch_size=4,
        gradient_accumulation_steps=3,
        gradient_clip_norm=0.5,
    )
    # 10 batches per epoch in windows of 3: 4 updates per epoch.
    assert clip_calls == list(range(8))
    assert trainer.completed_update_steps == 8


@pytest.mark.parametrize("clip", [{"gradient_clip_norm": 0.01}, {"gradient_clip_value": 0.001}])
def test_clipped_gradients_respect_the_limit_seen_before_the_step(clip):
    observed = []

    class GradientReader(TrainerCallback):
        def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
            grads = [p.grad for p in trainer.model.parameters()]
            if "gradient_clip_norm" in clip:
                observed.append(
                    torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
                )
            else:
                observed.append(max(g.abs().max().item() for g in grads))

    trainer = make_trainer(callbacks=[GradientReader()], lr=1.0)
    trainer.train(
        make_tiny_dataset(32), num_epochs=1, per_device_batch_size=8, gradient_accumulation_steps=2, **clip
    )
    limit = clip.get("gradient_clip_norm") or clip.get("gradient_clip_value")
    assert len(observed) == 2
    assert all(value <= limit * 1.0001 for value in observed)


def test_gradients_are_zero_after_each_update():
    trainer = make_trainer()
    trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=4, gradient_accumulation_steps=2)
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in trainer.model.parameters())
