"""A test kit for callback authors: a tiny model and dataset, and a one-call real training run.

Example, in a third-party callback package's tests::

    from pytorch_accelerated.trainer.testing import run_tiny_training

    def test_my_callback_sees_every_epoch():
        result = run_tiny_training(callbacks=[MyCallback()], num_epochs=2)
        assert result.events.count("on_train_epoch_end") == 2

    def test_my_callback_resumes_exactly(tmp_path):
        check_exact_resume(lambda: [MyCallback()], tmp_path)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch.utils.data import TensorDataset

from .callbacks import TRAINER_EVENTS, TrainerCallback
from .run_history import RunHistory
from .seeding import seed_everything
from .trainer import Trainer

__all__ = [
    "EventRecorder",
    "TinyRunResult",
    "make_tiny_model",
    "make_tiny_dataset",
    "run_tiny_training",
    "check_exact_resume",
    "final_state",
    "assert_bitwise_equal",
]


def make_tiny_dataset(
    num_samples: int = 64, num_features: int = 4, num_classes: int = 3, seed: int = 0
) -> TensorDataset:
    """A learnable classification dataset: the class is the argmax of a fixed linear map of the
    inputs, the same map for every ``seed`` and size, so that datasets made with different seeds
    are training and evaluation sets of one task."""
    projection = torch.randn(num_features, num_classes, generator=torch.Generator().manual_seed(12345))
    inputs = torch.randn(num_samples, num_features, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(inputs, (inputs @ projection).argmax(dim=1))


def make_tiny_model(
    num_features: int = 4, num_classes: int = 3, hidden: int = 16, seed: int = 0
) -> torch.nn.Module:
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


class _SaveAtEverySavePoint(TrainerCallback):
    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: list[Path] = []

    def on_save_point(self, trainer, point, **kwargs):
        path = self.folder / f"{len(self.paths):03d}-{point}"
        trainer.save_training_state(path)
        self.paths.append(path)


def check_exact_resume(
    make_callbacks: Callable[[], Iterable[TrainerCallback]],
    folder: str | os.PathLike,
    num_epochs: int = 2,
    **train_kwargs,
) -> list[Path]:
    """Check that a run with the callbacks ``make_callbacks()`` returns resumes exactly.

    Trains the tiny model (shuffled data, accumulation over 2 batches unless ``train_kwargs``
    say otherwise) with them, saving a training state into ``folder`` at every save point; then,
    for each state, resumes a new run with new callbacks and compares its :func:`final_state` with
    the uninterrupted run's, bit for bit. A callback whose state is missing
    from ``state_dict`` (or not restored by ``load_state_dict``) shows up as a difference in what
    it records. Raises AssertionError naming the state and the first difference; returns the
    states checked.
    """
    train_kwargs.setdefault("gradient_accumulation_steps", 2)
    train_kwargs.setdefault("num_samples", 60)
    saver = _SaveAtEverySavePoint(Path(folder))
    seed_everything(0)
    expected = final_state(
        run_tiny_training(callbacks=[*make_callbacks(), saver], num_epochs=num_epochs, **train_kwargs).trainer
    )
    for path in saver.paths:
        seed_everything(1)  # anything else: the resumed run must restore the generators itself
        resumed = run_tiny_training(
            callbacks=list(make_callbacks()), num_epochs=num_epochs, resume_from=path, **train_kwargs
        )
        difference = _first_difference(final_state(resumed.trainer), expected)
        if difference is not None:
            raise AssertionError(
                f"Resumed from the state saved at {path.name}, the run ends differently: {difference}"
            )
    return saver.paths


def assert_bitwise_equal(actual, expected, what: str = "state") -> None:
    """Raise AssertionError naming the first difference unless ``actual`` equals ``expected``
    exactly: the same keys, lengths and values, tensors of the same shape and bits (NaN equals NaN),
    through dicts, lists and tuples. For comparing state dicts, run histories and outcomes."""
    difference = _first_difference(actual, expected)
    if difference is not None:
        raise AssertionError(f"{what} differs: {what}{difference}")


def final_state(trainer: Trainer) -> dict[str, Any]:
    """What a resumed run must end with, exactly as the uninterrupted run did: the weights, the
    optimizer's and scheduler's states, the run history and the number of updates. Compare two
    with :func:`assert_bitwise_equal`."""
    return {
        "weights": trainer.get_model().state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "run history": trainer.run_history.state_dict(),
        "completed update steps": trainer.completed_update_steps,
    }


def _first_difference(actual, expected, where: str = "") -> str | None:
    if isinstance(expected, torch.Tensor):
        return _tensor_difference(actual, expected, where)
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or actual.keys() != expected.keys():
            return f"{where}: keys {sorted(map(str, actual))} != {sorted(map(str, expected))}"
        return next(
            (
                d
                for key in expected
                if (d := _first_difference(actual[key], expected[key], f"{where}[{key!r}]"))
            ),
            None,
        )
    if isinstance(expected, (list, tuple)):
        if not isinstance(actual, (list, tuple)) or len(actual) != len(expected):
            return f"{where}: {actual!r} != {expected!r}"
        return next(
            (
                d
                for i, (a, e) in enumerate(zip(actual, expected))
                if (d := _first_difference(a, e, f"{where}[{i}]"))
            ),
            None,
        )
    same = actual == expected or (actual != actual and expected != expected)  # NaN equals NaN here
    return None if same else f"{where}: {actual!r} != {expected!r}"


def _tensor_difference(actual, expected: torch.Tensor, where: str) -> str | None:
    if not isinstance(actual, torch.Tensor):
        return f"{where}: a {type(actual).__name__} where a tensor was expected"
    if (actual.dtype, actual.shape) != (expected.dtype, expected.shape):
        return f"{where}: {actual.dtype}{list(actual.shape)} != {expected.dtype}{list(expected.shape)}"
    differing = actual != expected
    if actual.is_floating_point():
        differing &= ~(actual.isnan() & expected.isnan())  # NaN where NaN was expected is no difference
    if not differing.any():
        return None
    message = f"{where}: {int(differing.sum())} of {expected.numel()} values differ"
    if actual.is_floating_point():
        message += f" (by up to {(actual.double() - expected.double())[differing].abs().max().item():.3g})"
    return message
