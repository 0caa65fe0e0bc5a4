"""find_batch_size with a model that runs out of memory (for real: it raises torch.OutOfMemoryError
above a batch size, as CUDA would), and its refusal on the CPU."""

import copy
import random

import pytest
import torch

from pytorch_accelerated.trainer.testing import assert_bitwise_equal, make_tiny_dataset, make_tiny_model
from pytorch_accelerated.tuning import find_batch_size

from .helpers import make_adam_trainer


class RunsOutOfMemoryAbove(torch.nn.Module):
    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.net = make_tiny_model()
        self.sizes = []

    def forward(self, inputs):
        self.sizes.append(inputs.shape[0])
        if inputs.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: a batch of {inputs.shape[0]} (fake)")
        return self.net(inputs)


def test_the_largest_batch_that_fits_by_doubling_then_halving_the_gap():
    trainer = make_adam_trainer(RunsOutOfMemoryAbove(37), lr=1e-2)
    trainer.train(make_tiny_dataset(32), num_epochs=1, per_device_batch_size=8)  # an optimizer with state
    weights = copy.deepcopy(trainer.get_model().state_dict())
    optimizer_state = copy.deepcopy(trainer.optimizer.state_dict())
    random.seed(0), torch.manual_seed(0)
    expected_draws = (random.random(), torch.rand(2))
    random.seed(0), torch.manual_seed(0)
    trainer.get_model().sizes.clear()

    assert find_batch_size(trainer, make_tiny_dataset(200), allow_cpu=True) == 37

    assert trainer.get_model().sizes == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert_bitwise_equal(trainer.get_model().state_dict(), weights, "weights")
    assert_bitwise_equal(trainer.optimizer.state_dict(), optimizer_state, "optimizer state")
    assert_bitwise_equal((random.random(), torch.rand(2)), expected_draws, "next random draws")


def test_the_dataset_bounds_the_search():
    trainer = make_adam_trainer(RunsOutOfMemoryAbove(1000), lr=1e-2)
    assert find_batch_size(trainer, make_tiny_dataset(50), allow_cpu=True) == 50
    trainer = make_adam_trainer(RunsOutOfMemoryAbove(1000), lr=1e-2)
    assert find_batch_size(trainer, make_tiny_dataset(50), max_batch_size=12, allow_cpu=True) == 12


def test_a_start_that_does_not_fit_is_an_error():
    trainer = make_adam_trainer(RunsOutOfMemoryAbove(3), lr=1e-2)
    with pytest.raises(RuntimeError, match="Even a batch of 8"):
        find_batch_size(trainer, make_tiny_dataset(50), start_batch_size=8, allow_cpu=True)


def test_on_the_cpu_it_says_it_is_not_supported():
    with pytest.raises(RuntimeError, match="not supported on CPU"):
        find_batch_size(make_adam_trainer(RunsOutOfMemoryAbove(3), lr=1e-2), make_tiny_dataset(50))
