"""Checkpoints written by pytorch-accelerated 0.1.61 itself (checkpoints_0161/: how they were made is
in its README) load here, and the run goes on with the learning rates 0.1.61 used after them."""

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from pytorch_accelerated.schedulers import CosineLrScheduler, WSDLrScheduler
from pytorch_accelerated.trainer import Trainer, TrainerCallback

FIXTURES = Path(__file__).parent / "checkpoints_0161"
RATES_0161 = json.loads((FIXTURES / "learning_rates.json").read_text())
UPDATES_BEFORE_THE_CHECKPOINT = 16  # 2 epochs of 8 updates, of a 4-epoch run


class RecordLrs(TrainerCallback):
    """The learning rates (every param group) each optimizer update used."""

    def __init__(self):
        self.lrs = []

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        self.lrs.append([group["lr"] for group in optimizer.param_groups])


class LoadAtStart(TrainerCallback):
    """0.1.61's way to continue from a checkpoint: load it once the scheduler exists."""

    def __init__(self, path, then=None):
        self.path, self.then = path, then
        self.checkpoint = None

    def on_training_run_start(self, trainer, **kwargs):
        self.checkpoint = trainer.load_checkpoint(self.path)
        if self.then is not None:
            self.then(trainer)


def assert_same_lrs(actual, expected, message=""):
    """Every update's lrs of every param group, equal to float precision."""
    actual, expected = (torch.tensor(lrs, dtype=torch.float64) for lrs in (actual, expected))
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=0, msg=message or None)


def continue_from(name, scheduler_fn, then=None):
    """The 2 remaining epochs of make_checkpoints.py's run, from its checkpoint, as its script continued."""
    model = torch.nn.Linear(4, 2)
    groups = [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.05}]
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    loader, recorder = LoadAtStart(FIXTURES / f"{name}.pt", then), RecordLrs()
    trainer = Trainer(model, torch.nn.MSELoss(), optimizer, callbacks=[loader, recorder])
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 2))
    trainer.train(data, num_epochs=2, create_scheduler_fn=scheduler_fn)
    return trainer, loader.checkpoint, recorder.lrs


def test_a_0161_cosine_checkpoint_continues_with_0161s_learning_rates():
    """A 0.1.61 cosine checkpoint continues with the learning rates 0.1.61 used."""
    scheduler_fn = CosineLrScheduler.create_scheduler_fn(k_decay=2.0, min_lr_ratio=0.1, num_cooldown_epochs=1)
    trainer, checkpoint, lrs = continue_from("cosine", scheduler_fn)

    uninterrupted = RATES_0161["cosine"]["uninterrupted"]
    message = "each update after the checkpoint uses the lrs 0.1.61's own run used at that update"
    assert_same_lrs(lrs, uninterrupted[UPDATES_BEFORE_THE_CHECKPOINT:], message)
    assert_same_lrs(RATES_0161["cosine"]["continued_by_0161"], uninterrupted[UPDATES_BEFORE_THE_CHECKPOINT:])
    assert checkpoint["epoch"] == 2 and set(checkpoint) >= {"model_state_dict", "optimizer_state_dict"}
    assert trainer.scheduler.total_steps == 32, "the saved schedule (4 epochs) replaces this run's"


def test_a_0161_checkpoints_weights_and_optimizer_state_are_loaded():
    saved = torch.load(FIXTURES / "cosine.pt", weights_only=True)
    seen = {}

    def inspect_loaded(trainer):
        seen["weight"] = trainer.get_model().weight.detach().clone()
        seen["momentum"] = trainer.optimizer.state_dict()["state"][0]["momentum_buffer"].clone()

    continue_from("cosine", CosineLrScheduler.create_scheduler_fn(), then=inspect_loaded)
    assert torch.equal(seen["weight"], saved["model_state_dict"]["weight"])
    assert torch.equal(seen["momentum"], saved["optimizer_state_dict"]["state"][0]["momentum_buffer"])


def test_a_0161_wsd_checkpoint_restarts_its_schedule_and_says_how_to_go_on():
    """A 0.1.61 WSD checkpoint restarts its schedule as 0.1.61 did and says how to go on."""
    scheduler_fn = WSDLrScheduler.create_scheduler_fn(decay_phase_ratio=0.25, min_lr_ratio=0.01)
    with pytest.warns(UserWarning, match=r"did not save how many updates.*step_update\(num_updates\)"):
        trainer, _, lrs = continue_from("wsd", scheduler_fn)
    # 0.1.61's WSD state has no update count, so 0.1.61 itself went on from its new scheduler's start
    assert_same_lrs(lrs, RATES_0161["wsd"]["continued_by_0161"])
    converted = trainer.scheduler
    assert (converted.total_steps, converted.checkpoint_steps, converted.decay_steps) == (32, (32,), (8,))
    assert converted.min_lr_ratio == 0.01 and converted.lr_min is None, "0.1.61's lr_min was a ratio"


def test_a_0161_wsd_checkpoint_continues_at_its_update_with_step_update():
    """A 0.1.61 WSD checkpoint continues at the saved update with ``step_update``."""
    scheduler_fn = WSDLrScheduler.create_scheduler_fn(decay_phase_ratio=0.25, min_lr_ratio=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, _, lrs = continue_from("wsd", scheduler_fn, then=lambda t: t.scheduler.step_update(16))

    expected = WSDLrScheduler(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
        total_steps=32,
        num_warmup_steps=0,
        decay_phase_ratio=0.25,
        min_lr_ratio=0.01,
    )
    expected.step_update(16)
    for lrs_of_update in lrs:
        assert lrs_of_update[0] == pytest.approx(expected.get_last_lr()[0], rel=1e-12)
        expected.step()
    assert lrs[-1] == pytest.approx([0.001, 0.0005]), "the last update reaches lr_min (0.01 of each lr)"
    assert trainer.scheduler.get_current_step() == 32
