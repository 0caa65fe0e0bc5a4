"""StochasticWeightAveragingCallback inside real runs: the average, SWALR, BatchNorm, resume."""

import functools

import pytest
import torch

from pytorch_accelerated.callbacks import StochasticWeightAveragingCallback, TrainerCallback
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import (
    check_exact_resume,
    make_tiny_dataset,
    make_tiny_model,
    run_tiny_training,
)


class EpochRecorder(TrainerCallback):
    def __init__(self):
        self.weights, self.lrs = [], []

    def on_train_epoch_start(self, trainer, **kwargs):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def on_train_epoch_end(self, trainer, **kwargs):
        self.weights.append({k: v.detach().clone() for k, v in trainer.get_model().state_dict().items()})


def test_the_model_ends_with_the_average_from_the_start_epoch_on():
    """The model ends with the average of the epochs from the start epoch."""
    recorder = EpochRecorder()
    swa = StochasticWeightAveragingCallback(swa_start_epoch=2)
    result = run_tiny_training(callbacks=[recorder, swa], num_epochs=4)
    final = result.trainer.get_model().state_dict()
    for name, value in final.items():
        expected = torch.stack([weights[name] for weights in recorder.weights[1:]]).mean(dim=0)
        torch.testing.assert_close(value, expected)
    assert int(swa.averaged_model.n_averaged) == 3
    assert not torch.equal(final["0.weight"], recorder.weights[-1]["0.weight"])


def test_swa_lr_anneals_from_the_start_epoch_and_then_holds():
    recorder = EpochRecorder()
    swa = StochasticWeightAveragingCallback(
        swa_start_epoch=2, swa_lr=0.01, annealing_epochs=2, swap_weights_at_end=False
    )
    run_tiny_training(callbacks=[swa, recorder], num_epochs=4, lr=0.05)
    assert recorder.lrs[0] == 0.05
    assert recorder.lrs[1] == pytest.approx(0.03)  # halfway through a cosine annealing
    assert recorder.lrs[2:] == pytest.approx([0.01, 0.01])


def test_batch_norm_statistics_are_recomputed_for_the_averaged_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(4), make_tiny_model())
    dataset = make_tiny_dataset(64)
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=[StochasticWeightAveragingCallback(swa_start_epoch=1)],
    )
    trainer.train(dataset, num_epochs=2, per_device_batch_size=8)
    # update_bn averages the batch means over one pass: with equal batches, the dataset's mean
    torch.testing.assert_close(model[0].running_mean, dataset.tensors[0].mean(dim=0))


def test_settings_that_cannot_work_are_refused_when_the_run_starts():
    with pytest.raises(ValueError, match="after this run's last epoch"):
        run_tiny_training(callbacks=[StochasticWeightAveragingCallback(swa_start_epoch=3)], num_epochs=2)
    step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1)
    with pytest.raises(ValueError, match="swa_lr=None"):
        run_tiny_training(
            callbacks=[StochasticWeightAveragingCallback(1, swa_lr=0.01)], create_scheduler_fn=step_lr
        )
    with pytest.raises(ValueError, match="from 1"):
        StochasticWeightAveragingCallback(swa_start_epoch=0)


def test_a_resumed_run_averages_exactly_as_the_uninterrupted_run(tmp_path):
    # annealing over two epochs: a state saved inside epoch 2 holds an lr halfway to swa_lr
    check_exact_resume(
        lambda: [StochasticWeightAveragingCallback(swa_start_epoch=2, swa_lr=0.01, annealing_epochs=2)],
        tmp_path,
        num_epochs=3,
    )
