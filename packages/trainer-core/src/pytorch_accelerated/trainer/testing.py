"""A test kit for callback authors: a tiny model and dataset, and a one-call real training run.

Example, in a third-party callback package's tests::

    from pytorch_accelerated.trainer.testing import run_tiny_training

    def test_my_callback_sees_every_epoch():
        result = run_tiny_training(callbacks=[MyCallback()], num_epochs=2)
        assert result.events.count("on_train_epoch_end") == 2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch.utils.data import TensorDataset

from .callbacks import TRAINER_EVENTS, TrainerCallback
from .run_history import RunHistory
from .trainer import Trainer

__all__ = ["EventRecorder", "TinyRunResult", "make_tiny_model", "make_tiny_dataset", "run_tiny_training"]


def make_tiny_dataset(num_samples: int = 64, num_features: int = 4, num_classes: int = 3, seed: int = 0) -> TensorDataset:
    """A learnable classification dataset: the class is the argmax of a fixed linear map of the
    inputs, the same map for every ``seed`` and size, so that datasets made with different seeds
    are training and evaluation sets of one task."""
    projection = torch.randn(num_features, num_classes, generator=torch.Generator().manual_seed(12345))
    inputs = torch.randn(num_samples, num_features, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(inputs, (inputs @ projection).argmax(dim=1))


def make_tiny_model(num_features: int = 4, num_classes: int = 3, hidden: int = 16, seed: int = 0) -> torch.nn.Module:
    """A two-layer MLP with deterministic initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(num_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes)
        )


class EventRecorder(TrainerCallback):
    """Records the name of every trainer event, and of the custom events listed, in order."""

    def __init__(self, custom_events: Iterable[str] = ()):
        self.events: list[str] = []
        for name in (*TRAINER_EVENTS, *custom_events):
            setattr(self, name, self._recorder(name))

    def _recorder(self, name: str):
        def record(trainer, *args, **kwargs):
            self.events.append(name)

        return record


@dataclass
class TinyRunResult:
    """What :func:`run_tiny_training` returns."""

    trainer: Trainer
    events: list[str]
    run_history: RunHistory
    metrics: dict[str, list] = field(default_factory=dict)


def run_tiny_training(
    callbacks: Iterable[TrainerCallback] = (),
    num_epochs: int = 2,
    with_eval: bool = True,
    trainer_class: type[Trainer] = Trainer,
    num_samples: int = 64,
    lr: float = 0.05,
    custom_events: Iterable[str] = (),
    trainer_kwargs: dict[str, Any] | None = None,
    **train_kwargs,
) -> TinyRunResult:
    """Train :func:`make_tiny_model` on :func:`make_tiny_dataset` with ``callbacks`` (after an
    :class:`EventRecorder`) and no default callbacks; returns the trainer, the events and metrics.

    Extra keyword arguments go to ``Trainer.train`` (``per_device_batch_size`` defaults to 8).
    """
    model = make_tiny_model()
    recorder = EventRecorder(custom_events)
    trainer = trainer_class(
        model=model,
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        callbacks=[recorder, *callbacks],
        **(trainer_kwargs or {}),
    )
    train_kwargs.setdefault("per_device_batch_size", 8)
    trainer.train(
        train_dataset=make_tiny_dataset(num_samples),
        eval_dataset=make_tiny_dataset(num_samples // 2, seed=1) if with_eval else None,
        num_epochs=num_epochs,
        **train_kwargs,
    )
    history = trainer.run_history
    metrics = {name: history.get_metric_values(name) for name in history.get_metric_names()}
    return TinyRunResult(trainer=trainer, events=recorder.events, run_history=history, metrics=metrics)
