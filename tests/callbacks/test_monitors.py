"""LearningRateMonitorCallback and ThroughputMonitorCallback inside real tiny training runs."""

import functools
import time

import pytest
import torch

from pytorch_accelerated.callbacks.monitors import LearningRateMonitorCallback, ThroughputMonitorCallback
from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model, run_tiny_training

# The tiny run: 64 samples in batches of 8, so 8 optimizer updates per epoch.
UPDATES_PER_EPOCH = 8
THROUGHPUT_METRICS = ("train_samples_per_second", "train_steps_per_second", "train_epoch_time_seconds")
halve_every_update = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)


def test_the_lr_each_update_uses_is_recorded_every_n_updates():
    result = run_tiny_training(
        callbacks=[LearningRateMonitorCallback(log_every_n_steps=3)],
        num_epochs=2,
        lr=0.4,
        create_scheduler_fn=halve_every_update,
    )
    recorded_updates = range(3, 2 * UPDATES_PER_EPOCH + 1, 3)
    assert result.metrics["lr"] == pytest.approx([0.4 * 0.5 ** (update - 1) for update in recorded_updates])
    assert all(type(value) is float for value in result.metrics["lr"])


def test_every_parameter_group_gets_its_own_lr_metric():
    model = make_tiny_model()
    optimizer = torch.optim.SGD(
        [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1
    )
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        optimizer,
        callbacks=[LearningRateMonitorCallback(log_every_n_steps=1)],
    )
    trainer.train(make_tiny_dataset(64), num_epochs=1, create_scheduler_fn=halve_every_update)
    history = trainer.run_history
    assert "lr" not in history.get_metric_names()
    for name, initial_lr in (("lr_group_0", 0.1), ("lr_group_1", 0.01)):
        assert history.get_metric_values(name) == pytest.approx(
            [initial_lr * 0.5**k for k in range(UPDATES_PER_EPOCH)]
        )


def test_log_every_n_steps_must_be_positive():
    with pytest.raises(ValueError, match="log_every_n_steps"):
        LearningRateMonitorCallback(log_every_n_steps=0)


class SlowSteps(TrainerCallback):
    """Makes every training step last at least ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_step_end(self, trainer, **kwargs):
        time.sleep(self.seconds)


def test_throughput_is_recorded_once_per_epoch_from_samples_and_time():
    """Throughput is recorded once per epoch from samples, updates and time."""
    step_seconds = 0.005
    result = run_tiny_training(
        callbacks=[SlowSteps(step_seconds), ThroughputMonitorCallback()],
        num_epochs=2,
        num_samples=60,  # 8 batches, the last one of 4 samples
        gradient_accumulation_steps=3,  # 3 updates per epoch
    )
    metrics = result.metrics
    assert all(len(metrics[name]) == 2 for name in THROUGHPUT_METRICS)
    for samples_per_second, steps_per_second, seconds in zip(*(metrics[name] for name in THROUGHPUT_METRICS)):
        assert seconds >= 8 * step_seconds
        assert samples_per_second * seconds == pytest.approx(60)
        assert steps_per_second * seconds == pytest.approx(3)


def test_the_epoch_time_does_not_include_evaluation():
    class SlowEvaluationAndTrainingClock(TrainerCallback):
        def on_train_epoch_start(self, trainer, **kwargs):
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, **kwargs):
            self.training_seconds = time.perf_counter() - self.started

        def on_eval_step_end(self, trainer, **kwargs):
            time.sleep(0.05)  # 4 evaluation batches: 0.2 s of evaluation per epoch

    clock = SlowEvaluationAndTrainingClock()
    result = run_tiny_training(callbacks=[ThroughputMonitorCallback(), clock], num_epochs=1)
    recorded = result.metrics["train_epoch_time_seconds"][0]
    # measured against the training the test clocked itself, so that a loaded machine changes nothing
    assert recorded < clock.training_seconds + 0.1, f"{recorded} s holds the 0.2 s of evaluation"


def test_throughput_every_n_updates_is_recorded_at_its_step():
    step_seconds = 0.01
    result = run_tiny_training(
        callbacks=[SlowSteps(step_seconds), ThroughputMonitorCallback(log_every_n_steps=3)], num_epochs=2
    )
    history = result.trainer.run_history
    for name in ("train_samples_per_second_step", "train_steps_per_second_step"):
        assert [r.step for r in history.get_metric_records(name)] == [3, 6, 9, 12, 15]
    # each interval: 3 updates of one 8-sample batch, each at least step_seconds long
    steps_rates = history.get_metric_values("train_steps_per_second_step")
    samples_rates = history.get_metric_values("train_samples_per_second_step")
    assert all(rate <= 1 / step_seconds for rate in steps_rates)
    for steps_rate, samples_rate in zip(steps_rates, samples_rates):
        assert samples_rate == pytest.approx(8 * steps_rate)
    assert len(result.metrics["train_samples_per_second"]) == 2  # the epoch's rates as before
