"""find_lr: the range test on a copy, the trainer left exactly as it was, the suggestion, the plot."""

import copy
import random

import numpy as np
import pytest
import torch

from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, make_tiny_dataset, make_tiny_model
from pytorch_accelerated.tuning import find_lr, steepest_descent

from .helpers import make_adam_trainer


def next_draws():
    return {"python": random.random(), "numpy": float(np.random.rand()), "torch": torch.rand(3)}


def make_dropout_model():
    return torch.nn.Sequential(make_tiny_model(), torch.nn.Dropout(0.1))  # the copy draws numbers


def test_find_lr_leaves_the_trainer_and_random_generators_untouched(tmp_path):
    """The trainer and the random generators are left exactly as they were."""
    trainer = make_adam_trainer(make_dropout_model(), lr=1e-3)
    trainer.train(make_tiny_dataset(32), num_epochs=1)  # an optimizer with state, a prepared model
    weights = copy.deepcopy(trainer.get_model().state_dict())
    optimizer_state = copy.deepcopy(trainer.optimizer.state_dict())
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()

    result = find_lr(trainer, make_tiny_dataset(256), num_steps=30, plot_path=tmp_path / "lr.png")

    after = next_draws()
    random.setstate(states[0]), np.random.set_state(states[1]), torch.set_rng_state(states[2])
    assert_bitwise_equal(after, next_draws(), "next random draws")
    assert_bitwise_equal(trainer.get_model().state_dict(), weights, "weights")
    assert_bitwise_equal(trainer.optimizer.state_dict(), optimizer_state, "optimizer state")
    assert len(result.lrs) == len(result.losses) == len(result.smoothed_losses) <= 30
    assert (tmp_path / "lr.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n" and result.plot_path == tmp_path / "lr.png"

    # the trainer still trains as before: its next run is the one it would have been
    trainer.train(make_tiny_dataset(32), num_epochs=1)


def test_the_lr_grows_exponentially_and_the_steepest_descent_is_suggested():
    """The LR grows exponentially, and the suggestion is the steepest descent."""
    trainer = make_adam_trainer(make_dropout_model(), lr=1e-3)
    result = find_lr(trainer, make_tiny_dataset(512), start_lr=1e-4, end_lr=100.0, num_steps=40)
    assert result.lrs[0] == pytest.approx(1e-4)
    ratios = np.asarray(result.lrs[1:]) / np.asarray(result.lrs[:-1])
    assert ratios == pytest.approx(np.full(len(ratios), 1e6 ** (1 / 39)))
    assert result.stopped_early  # lr 100 diverges
    assert result.suggestion == steepest_descent(result.lrs, result.smoothed_losses)
    assert 1e-4 < result.suggestion < result.lrs[-1]
    # with the suggestion, training does learn
    assert min(result.smoothed_losses) < result.smoothed_losses[0]


def test_steepest_descent_of_a_known_curve():
    lrs = list(np.logspace(-5, 0, 11))
    losses = [2.0, 2.0, 2.0, 2.0, 1.9, 1.5, 0.7, 0.6, 0.55, 0.9, 3.0]  # steepest between 1e-2.5 and 1e-2
    assert steepest_descent(lrs, losses, skip_start=0, skip_end=2) == pytest.approx(lrs[5])
    assert steepest_descent(lrs[:4], losses[:4]) is None


def test_bad_arguments_are_named():
    trainer = make_adam_trainer(make_dropout_model(), lr=1e-3)
    with pytest.raises(ValueError, match="start_lr < end_lr"):
        find_lr(trainer, make_tiny_dataset(16), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_steps"):
        find_lr(trainer, make_tiny_dataset(16), num_steps=1)


def test_an_optimizer_over_parameters_outside_the_model_is_named():
    model = make_tiny_model()
    # the copy could not train it (was a bare KeyError)
    learnable_loss_weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([*model.parameters(), learnable_loss_weight], lr=0.1)
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=[])
    with pytest.raises(ValueError, match="1 parameter.*not the model's"):
        find_lr(trainer, make_tiny_dataset(16), num_steps=4)


def test_every_process_gets_the_same_suggestion(tmp_path):
    from ..launching import run_scenario_on_two_processes
    from . import lr_finder_distributed_scenario as scenario

    results, output = run_scenario_on_two_processes(scenario.__file__, tmp_path)
    out = tmp_path / "out"  # where the scenario wrote
    first, second = results
    assert first["suggestion"] is not None and first["suggestion"] == second["suggestion"]
    assert first["losses"] == second["losses"] and len(first["losses"]) > 10
    assert first["untouched"] and second["untouched"]
    # the plot is written once, by the main process
    assert first["plot"] == str(out / "lr_finder.png") and second["plot"] is None
    assert (out / "lr_finder.png").is_file()
