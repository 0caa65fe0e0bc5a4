"""pytorch-accelerated 0.1.61's core examples, as its users wrote them (scripts_0161.py), run
unchanged on a small synthetic dataset of MNIST's shape."""

import warnings

import pytest
import torch
from torch.utils.data import Dataset

from pytorch_accelerated.trainer import seed_everything

from . import scripts_0161

NUM_SAMPLES = 600  # 500 to train, 50 to validate, 50 to test


class SyntheticMNIST(Dataset):
    """``(image, label)`` pairs like ``MNIST(transform=ToTensor())``: float images of shape
    (1, 28, 28) in [0, 1] and integer labels 0-9; each class brightens its own band of rows,
    so a small model learns it in a few steps."""

    def __init__(self, num_samples: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 10, (num_samples,), generator=generator)
        self.images = torch.rand(num_samples, 1, 28, 28, generator=generator) * 0.3
        for index, label in enumerate(self.labels.tolist()):
            self.images[index, 0, 2 * label : 2 * label + 3] += 0.7

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], int(self.labels[index])


@pytest.fixture
def dataset():
    seed_everything(0)
    return SyntheticMNIST(NUM_SAMPLES)


def _run(script, dataset, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = script(dataset, **kwargs)
    event_warnings = [
        str(w.message) for w in caught if "never called" in str(w.message) or "two names" in str(w.message)
    ]
    assert event_warnings == []
    return trainer


def _learned(trainer) -> bool:
    losses = trainer.run_history.get_metric_values("train_loss_epoch")
    return len(losses) == 2 and losses[1] < losses[0]


def test_the_mnist_quickstart(dataset, capsys):
    trainer = _run(scripts_0161.train_mnist, dataset)
    history = trainer.run_history
    assert _learned(trainer)
    assert len(history.get_metric_values("eval_loss_epoch")) == 2
    assert len(history.get_metric_values("eval_loss")) == 1
    assert "epoch 2:" in capsys.readouterr().out  # the default callbacks print each epoch's metrics


@pytest.mark.parametrize(
    "script", [scripts_0161.train_with_metrics_in_callback, scripts_0161.train_with_metrics_in_loop]
)
def test_classification_metrics_in_a_callback_and_in_a_trainer_subclass(dataset, script):
    trainer = _run(script, dataset)
    history = trainer.run_history
    assert _learned(trainer)
    for metric in ("accuracy", "precision", "recall"):
        values = history.get_metric_values(metric)
        assert len(values) == 3  # two validation epochs, then the test evaluation
        assert all(0.0 <= float(value) <= 1.0 for value in values)
    assert float(history.get_latest_metric("accuracy")) > 0.5  # chance is 0.1


def test_a_custom_callback_event_with_the_0161_callbacks(dataset, capsys):
    trainer = _run(scripts_0161.custom_callback_event, dataset)
    verifier = trainer.callback_handler.get_callback(scripts_0161.VerifyBatchCallback)
    batches_per_epoch = (NUM_SAMPLES - NUM_SAMPLES // 12) // 32  # drop_last=True
    assert verifier.num_verified == 2 * batches_per_epoch
    assert _learned(trainer)
    out = capsys.readouterr().out
    assert "Starting training run" in out and "Starting epoch 2" in out and "Finishing training run" in out
    assert "train_loss_epoch:" in out and "eval_loss_epoch:" in out  # LogMetricsCallback
