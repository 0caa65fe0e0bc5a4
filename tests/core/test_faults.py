"""The core's part in faults: every way out of train() is announced to the callbacks."""

from __future__ import annotations

import pytest

from pytorch_accelerated.trainer import StopTrainingError, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset
from tests.core.helpers import make_trainer


class Raises(TrainerCallback):
    def __init__(self, error):
        self.error = error

    def on_optimizer_step_end(self, trainer, **kwargs):
        raise self.error


class RecordsTheEnd(TrainerCallback):
    def __init__(self):
        self.ends = []

    def on_training_run_end(self, trainer, **kwargs):
        self.ends.append("end")

    def on_training_run_error(self, trainer, error, **kwargs):
        self.ends.append(error)


@pytest.mark.parametrize(
    "error", [RuntimeError("boom"), KeyboardInterrupt()], ids=["RuntimeError", "KeyboardInterrupt"]
)
def test_an_error_in_train_fires_on_training_run_error_once_and_propagates(error):
    """An error ending train fires ``on_training_run_error`` once, then propagates."""
    recorder = RecordsTheEnd()
    trainer = make_trainer([Raises(error), recorder])
    with pytest.raises(type(error)):
        trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=8)
    assert recorder.ends == [error]


def test_a_stopped_or_finished_run_fires_on_training_run_end_only():
    recorder = RecordsTheEnd()
    make_trainer([Raises(StopTrainingError("enough")), recorder]).train(
        make_tiny_dataset(16), num_epochs=1, per_device_batch_size=8
    )
    make_trainer([recorder]).train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=8)
    assert recorder.ends == ["end", "end"]
