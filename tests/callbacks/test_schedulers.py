"""The schedulers: every phase boundary against formulas written here, state round trips,
argument checks, and real training runs (one of them on two processes)."""

import functools
import json
import math

import pytest
import torch

from pytorch_accelerated.schedulers import CosineLrScheduler, StatefulSchedulerBase, WSDLrScheduler
from pytorch_accelerated.schedulers.wsd_scheduler import estimate_checkpoint_steps
from pytorch_accelerated.trainer import (
    TrainerCallback,
    TrainerPlaceholderValues,
    atomic_torch_save,
    safe_torch_load,
)
from pytorch_accelerated.trainer.testing import run_tiny_training

from tests.core.helpers import LrRecorder
from tests.launching import run_launch, torchrun_command

from . import scheduler_distributed_scenario as scenario

# ---------------------------------------------------------------------------------------- helpers


def make_optimizer(*lrs, momentum=0.0):
    """SGD with one param group per lr."""
    return torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs], momentum=momentum
    )


def lr_history(scheduler, num_updates):
    """history[n][g]: param group g's lr for the update that follows n completed updates."""
    history = []
    for _ in range(num_updates):
        history.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.step()
    return history


def lrs_per_update(scheduler, num_updates):
    """The first param group's lr for each update (see lr_history)."""
    return [lrs[0] for lrs in lr_history(scheduler, num_updates)]


def cosine_lr(n, lr_max, start, lr_min, warmup, cooldown, total, k=1.0):
    """Linear warmup over `warmup` updates, cosine (k-decay) from lr_max to lr_min over the updates
    between warmup and cooldown, then lr_min."""
    if n < warmup:
        return start + (lr_max - start) * n / warmup
    decay_length = total - warmup - cooldown
    t = n - warmup
    if t >= decay_length:
        return lr_min
    return lr_min + (lr_max - lr_min) * (1 + math.cos(math.pi * (t / decay_length) ** k)) / 2


DECAY_SHAPES = {
    "1-sqrt": lambda p: 1 - p**0.5,
    "cosine": lambda p: (1 + math.cos(math.pi * p)) / 2,
    "linear": lambda p: 1 - p,
}


def wsd_lr(n, lr_max, start, lr_min, warmup, checkpoints, decays, decay_type, total):
    """Warmup, then lr_max, with a decay of `decays[i]` updates ending at `checkpoints[i]` whose
    last update uses lr_min; lr_min after the end."""
    if n >= total:
        return lr_min
    if n < warmup:
        return start + (lr_max - start) * n / warmup
    for checkpoint, decay in zip(checkpoints, decays):
        if n < checkpoint - decay:
            return lr_max
        if n < checkpoint:
            return lr_min + (lr_max - lr_min) * DECAY_SHAPES[decay_type]((n - checkpoint + decay + 1) / decay)
    raise AssertionError("unreachable: the last checkpoint is the end")


# ---------------------------------------------------------------------------------------- cosine

# 10 epochs of 4 updates: 8 warmup updates, 24 cosine updates, 8 cooldown updates.
COSINE = {
    "total_num_epochs": 10,
    "num_update_steps_per_epoch": 4,
    "num_warmup_epochs": 2,
    "num_cooldown_epochs": 2,
}
COSINE_SHAPE = {"warmup": 8, "cooldown": 8, "total": 40}
LR_MAX, START, LR_MIN = 0.1, 0.01, 0.001
ABSOLUTE = {"lr_min": LR_MIN, "warmup_starting_lr": START}
RATIOS = {"min_lr_ratio": LR_MIN / LR_MAX, "warmup_starting_lr_ratio": START / LR_MAX}


@pytest.mark.parametrize("end_points", [ABSOLUTE, RATIOS], ids=["absolute", "ratio"])
def test_cosine_lr_at_every_phase_boundary(end_points):
    scheduler = CosineLrScheduler(make_optimizer(LR_MAX), **COSINE, **end_points)
    lrs = lrs_per_update(scheduler, 46)
    expected_at = {
        0: START,  # first warmup update
        7: START + (LR_MAX - START) * 7 / 8,  # last warmup update
        8: LR_MAX,  # first cosine update
        20: (LR_MAX + LR_MIN) / 2,  # cosine midpoint: 12 of 24
        31: LR_MIN + (LR_MAX - LR_MIN) * (1 + math.cos(math.pi * 23 / 24)) / 2,  # last cosine update
        32: LR_MIN,  # first cooldown update
        39: LR_MIN,  # final update
        40: LR_MIN,  # after the end: held
        45: LR_MIN,
    }
    for n, expected in expected_at.items():
        assert lrs[n] == pytest.approx(expected, rel=1e-12), n
    assert lrs == pytest.approx(
        [cosine_lr(n, LR_MAX, START, LR_MIN, **COSINE_SHAPE) for n in range(46)], rel=1e-12
    )
    assert scheduler.total_steps == 40 and scheduler.num_decay_steps == 24


@pytest.mark.parametrize("k", [2.0, 0.5])
def test_cosine_k_decay(k):
    scheduler = CosineLrScheduler(make_optimizer(LR_MAX), **COSINE, **ABSOLUTE, k_decay=k)
    lrs = lrs_per_update(scheduler, 41)
    # midpoint: (12 / 24) ** k of the way through the cosine
    assert lrs[20] == pytest.approx(LR_MIN + (LR_MAX - LR_MIN) * (1 + math.cos(math.pi * 0.5**k)) / 2)
    assert lrs[8] == pytest.approx(LR_MAX) and lrs[32] == pytest.approx(LR_MIN)
    assert lrs == pytest.approx([cosine_lr(n, LR_MAX, START, LR_MIN, **COSINE_SHAPE, k=k) for n in range(41)])
    # k > 1 keeps the lr higher in the middle than plain cosine, k < 1 lower
    assert (lrs[20] > (LR_MAX + LR_MIN) / 2) == (k > 1)


def test_plain_cosine_starts_at_the_initial_lr_and_ends_at_the_minimum():
    """Cosine without warmup or cooldown starts at the initial LR and ends at the minimum."""
    optimizer = make_optimizer(LR_MAX)
    scheduler = CosineLrScheduler(optimizer, total_num_epochs=3, num_update_steps_per_epoch=5, lr_min=LR_MIN)
    assert optimizer.param_groups[0]["lr"] == LR_MAX
    lrs = lrs_per_update(scheduler, 15)
    assert lrs == pytest.approx([cosine_lr(n, LR_MAX, None, LR_MIN, 0, 0, 15) for n in range(15)])
    assert lrs[-1] > LR_MIN and scheduler.get_last_lr() == [pytest.approx(LR_MIN)]


def test_cosine_default_end_points_are_1e_6():
    scheduler = CosineLrScheduler(
        make_optimizer(LR_MAX), total_num_epochs=2, num_update_steps_per_epoch=2, num_warmup_epochs=1
    )
    assert scheduler.get_last_lr() == [1e-6]
    lrs_per_update(scheduler, 4)
    assert scheduler.get_last_lr() == [1e-6]


def test_fractional_epochs_are_rounded_to_whole_updates():
    scheduler = CosineLrScheduler(
        make_optimizer(LR_MAX),
        total_num_epochs=4,
        num_update_steps_per_epoch=4,
        num_warmup_epochs=0.5,
        num_cooldown_epochs=0.1,
        **ABSOLUTE,
    )
    assert (scheduler.num_warmup_steps, scheduler.num_cooldown_steps) == (2, 1)  # 0.4 updates: at least one
    assert lrs_per_update(scheduler, 17) == pytest.approx(
        [cosine_lr(n, LR_MAX, START, LR_MIN, warmup=2, cooldown=1, total=16) for n in range(17)]
    )


@pytest.mark.parametrize("end_points", [ABSOLUTE, RATIOS], ids=["absolute", "ratio"])
def test_cosine_with_param_groups_of_different_lrs(end_points):
    lr_maxes = (0.1, 0.02)
    optimizer = make_optimizer(*lr_maxes)
    scheduler = CosineLrScheduler(optimizer, **COSINE, **end_points)
    per_group = list(zip(*lr_history(scheduler, 41)))
    for lr_max, lrs in zip(lr_maxes, per_group):
        start, lr_min = (START, LR_MIN) if end_points is ABSOLUTE else (lr_max * 0.1, lr_max * 0.01)
        assert list(lrs) == pytest.approx(
            [cosine_lr(n, lr_max, start, lr_min, **COSINE_SHAPE) for n in range(41)]
        )
    assert [group["initial_lr"] for group in optimizer.param_groups] == list(lr_maxes)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_num_epochs": 0}, "total_num_epochs must be a positive integer"),
        ({"num_update_steps_per_epoch": 2.5}, "num_update_steps_per_epoch must be a positive integer"),
        ({"total_steps": 0}, "total_steps must be a positive integer"),
        ({"num_warmup_epochs": -1}, "num_warmup_epochs must be a number in"),
        ({"num_cooldown_epochs": -0.5}, "num_cooldown_epochs must be a number in"),
        ({"num_warmup_epochs": 6, "num_cooldown_epochs": 4}, "leave no update for the cosine decay"),
        ({"num_warmup_epochs": 11}, "leave no update for the cosine decay"),
        ({"total_steps": 12, "num_warmup_epochs": 3}, "in a run of 12 updates"),
        ({"lr_min": 1e-3, "min_lr_ratio": 0.1}, "Pass lr_min or min_lr_ratio, not both"),
        ({"warmup_starting_lr": 1e-3, "warmup_starting_lr_ratio": 0.1}, "not both"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio must be a number in"),
        ({"lr_min": -1e-3}, "lr_min must be a number in"),
        ({"k_decay": 0}, "k_decay must be a number in"),
    ],
)
def test_cosine_argument_errors(kwargs, message):
    arguments = {"total_num_epochs": 10, "num_update_steps_per_epoch": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        CosineLrScheduler(make_optimizer(LR_MAX), **arguments)


def test_create_scheduler_fn_fills_placeholders_and_checks_args_at_once():
    """``create_scheduler_fn`` uses placeholders and checks its arguments at once."""
    scheduler_fn = CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1, min_lr_ratio=0.1, k_decay=2)
    assert isinstance(scheduler_fn, functools.partial) and scheduler_fn.func is CosineLrScheduler
    assert scheduler_fn.keywords["total_num_epochs"] is TrainerPlaceholderValues.NUM_EPOCHS
    assert (
        scheduler_fn.keywords["num_update_steps_per_epoch"]
        is TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH
    )
    assert scheduler_fn.keywords["total_steps"] is TrainerPlaceholderValues.NUM_TRAINING_STEPS
    assert (
        WSDLrScheduler.create_scheduler_fn().keywords["total_steps"]
        is TrainerPlaceholderValues.NUM_TRAINING_STEPS
    )
    with pytest.raises(ValueError, match="not both"):
        CosineLrScheduler.create_scheduler_fn(lr_min=1e-3, min_lr_ratio=0.1)
    with pytest.raises(ValueError, match="num_warmup_epochs"):
        CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=-1)
    with pytest.raises(ValueError, match="decay_type"):
        WSDLrScheduler.create_scheduler_fn(decay_type="exponential")


# ---------------------------------------------------------------------------------------- state


def test_cosine_state_round_trip_mid_schedule_continues_identically(tmp_path):
    scheduler = CosineLrScheduler(make_optimizer(0.1, 0.02), **COSINE, **RATIOS, k_decay=1.5)
    lrs_per_update(scheduler, 13)
    path = tmp_path / "scheduler.pt"
    atomic_torch_save(scheduler.state_dict(), path)  # the Trainer's checkpoints load weights-only

    # A fresh optimizer (at its initial lrs) and a scheduler built with other sizes.
    resumed = CosineLrScheduler(make_optimizer(0.1, 0.02), total_num_epochs=3, num_update_steps_per_epoch=2)
    resumed.load_state_dict(safe_torch_load(path))
    assert resumed.num_updates == 13
    assert resumed.get_last_lr() == scheduler.get_last_lr()
    assert [group["lr"] for group in resumed.optimizer.param_groups] == scheduler.get_last_lr()
    for _ in range(30):
        scheduler.step()
        resumed.step()
        assert resumed.get_last_lr() == scheduler.get_last_lr()


def test_a_state_of_another_scheduler_or_other_param_groups_is_refused():
    cosine = CosineLrScheduler(make_optimizer(0.1), **COSINE)
    wsd = WSDLrScheduler(make_optimizer(0.1), total_steps=10)
    with pytest.raises(ValueError, match="not saved by a CosineLrScheduler"):
        cosine.load_state_dict(wsd.state_dict())
    with pytest.raises(ValueError, match="1 param groups; the optimizer has 2"):
        CosineLrScheduler(make_optimizer(0.1, 0.2), **COSINE).load_state_dict(cosine.state_dict())


def test_a_new_scheduler_on_the_same_optimizer_keeps_the_initial_lr():
    # As when Trainer.train runs twice with one optimizer: the first run left the lr at its minimum.
    optimizer = make_optimizer(LR_MAX)
    first = CosineLrScheduler(optimizer, total_num_epochs=1, num_update_steps_per_epoch=4, lr_min=LR_MIN)
    lrs_per_update(first, 4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(LR_MIN)
    second = CosineLrScheduler(optimizer, total_num_epochs=1, num_update_steps_per_epoch=4, lr_min=LR_MIN)
    assert second.base_values == [LR_MAX] and optimizer.param_groups[0]["lr"] == LR_MAX


# ---------------------------------------------------------------------------------------- base class


class MomentumRamp(StatefulSchedulerBase):
    """Momentum from 0.85 up to 0.95 over `ramp_steps` updates, the same for every group."""

    def __init__(self, optimizer, ramp_steps):
        self.ramp_steps = ramp_steps
        super().__init__(optimizer, param_group_field="momentum")

    def get_updated_values(self, num_updates):
        return 0.85 + 0.1 * min(num_updates, self.ramp_steps) / self.ramp_steps


def test_the_base_class_schedules_any_field_and_round_trips_its_state():
    optimizer = make_optimizer(0.1, 0.2, momentum=0.9)
    scheduler = MomentumRamp(optimizer, ramp_steps=4)
    assert [group["initial_momentum"] for group in optimizer.param_groups] == [0.9, 0.9]
    assert [group["momentum"] for group in optimizer.param_groups] == [0.85, 0.85]
    scheduler.step()
    scheduler.step()
    assert scheduler.get_last_values() == pytest.approx([0.9, 0.9])
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.2]  # untouched

    resumed = MomentumRamp(make_optimizer(0.1, 0.2, momentum=0.9), ramp_steps=100)
    resumed.load_state_dict(scheduler.state_dict())
    resumed.step()
    assert resumed.ramp_steps == 4 and resumed.get_last_values() == pytest.approx([0.925, 0.925])


class Constant(StatefulSchedulerBase):
    def __init__(self, optimizer, values, param_group_field="lr"):
        self.values = values
        super().__init__(optimizer, param_group_field)

    def get_updated_values(self, num_updates):
        return self.values


def test_the_base_class_reports_a_missing_field_and_a_wrong_value_count():
    """The base class reports a missing field and a wrong number of values."""
    with pytest.raises(KeyError, match="has no 'betas'"):
        Constant(make_optimizer(0.1), 0.9, param_group_field="betas")
    with pytest.raises(ValueError, match="returned 2 values for 3 param groups"):
        Constant(make_optimizer(0.1, 0.2, 0.3), [0.1, 0.2])
    assert Constant(make_optimizer(0.1, 0.2), [0.3, 0.4]).get_last_lr() == [0.3, 0.4]


# ---------------------------------------------------------------------------------------- WSD


@pytest.mark.parametrize("decay_type", ["1-sqrt", "cosine", "linear"])
@pytest.mark.parametrize("end_points", [ABSOLUTE, RATIOS], ids=["absolute", "ratio"])
def test_wsd_with_one_checkpoint_at_every_boundary(decay_type, end_points):
    # 100 updates: warmup 0-9, stable 10-79, decay 80-99 (20 updates), lr_min from 99 on.
    scheduler = WSDLrScheduler(
        make_optimizer(LR_MAX),
        total_steps=100,
        num_warmup_steps=10,
        decay_phase_ratio=0.2,
        decay_type=decay_type,
        **end_points,
    )
    assert scheduler.checkpoint_steps == (100,) and scheduler.decay_steps == (20,)
    lrs = lrs_per_update(scheduler, 110)
    shape = DECAY_SHAPES[decay_type]
    expected_at = {
        0: START,
        9: START + (LR_MAX - START) * 9 / 10,
        10: LR_MAX,
        79: LR_MAX,
        80: LR_MIN + (LR_MAX - LR_MIN) * shape(1 / 20),
        89: LR_MIN + (LR_MAX - LR_MIN) * shape(10 / 20),
        99: LR_MIN,
        100: LR_MIN,
        109: LR_MIN,
    }
    for n, expected in expected_at.items():
        assert lrs[n] == pytest.approx(expected, rel=1e-12), n
    expected = [wsd_lr(n, LR_MAX, START, LR_MIN, 10, (100,), (20,), decay_type, 100) for n in range(110)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_wsd_defaults_to_a_1_sqrt_decay():
    scheduler = WSDLrScheduler(make_optimizer(LR_MAX), total_steps=10, decay_phase_ratio=0.4, lr_min=0.0)
    assert scheduler.decay_type == "1-sqrt"
    assert lrs_per_update(scheduler, 10)[6:] == pytest.approx(
        [LR_MAX * (1 - (j / 4) ** 0.5) for j in range(1, 5)]
    )


@pytest.mark.parametrize("decay_type", ["1-sqrt", "linear"])
def test_wsd_with_three_checkpoints_at_every_boundary(decay_type):
    # checkpoints after 20, 40 and 80 updates (doubling); each decay is a quarter of its period.
    optimizer = make_optimizer(LR_MAX, 0.02)
    scheduler = WSDLrScheduler(
        optimizer,
        total_steps=80,
        num_warmup_steps=4,
        decay_phase_ratio=0.25,
        num_checkpoints=3,
        decay_type=decay_type,
        **RATIOS,
    )
    assert scheduler.checkpoint_steps == (20, 40, 80) and scheduler.decay_steps == (5, 5, 10)
    lrs = lrs_per_update(scheduler, 90)
    shape = DECAY_SHAPES[decay_type]
    expected_at = {
        0: START,
        3: START + (LR_MAX - START) * 3 / 4,  # last warmup update
        4: LR_MAX,
        14: LR_MAX,  # last stable update before checkpoint 1
        15: LR_MIN + (LR_MAX - LR_MIN) * shape(1 / 5),
        19: LR_MIN,  # the update that completes checkpoint 1
        20: LR_MAX,  # back to stable
        34: LR_MAX,
        35: LR_MIN + (LR_MAX - LR_MIN) * shape(1 / 5),
        39: LR_MIN,
        40: LR_MAX,
        69: LR_MAX,
        70: LR_MIN + (LR_MAX - LR_MIN) * shape(1 / 10),
        74: LR_MIN + (LR_MAX - LR_MIN) * shape(5 / 10),
        79: LR_MIN,  # final update
        80: LR_MIN,
        89: LR_MIN,
    }
    for n, expected in expected_at.items():
        assert lrs[n] == pytest.approx(expected, rel=1e-12), n
    assert lrs == pytest.approx(
        [wsd_lr(n, LR_MAX, START, LR_MIN, 4, (20, 40, 80), (5, 5, 10), decay_type, 80) for n in range(90)],
        rel=1e-12,
    )
    # the second group follows the same shape from its own lr
    assert scheduler.get_last_lr() == pytest.approx([LR_MIN, 0.02 * 0.01])


def test_wsd_with_checkpoint_fractions_and_rounding():
    scheduler = WSDLrScheduler(
        make_optimizer(LR_MAX),
        total_steps=50,
        decay_phase_ratio=0.1,
        checkpoint_fractions=(0.3, 0.6, 1.0),
        lr_min=LR_MIN,
        decay_type="linear",
    )
    # periods of 15, 15 and 20 updates: decays of round(1.5) = 2, 2 and 2 updates
    assert scheduler.checkpoint_steps == (15, 30, 50) and scheduler.decay_steps == (2, 2, 2)
    lrs = lrs_per_update(scheduler, 52)
    assert lrs == pytest.approx(
        [wsd_lr(n, LR_MAX, None, LR_MIN, 0, (15, 30, 50), (2, 2, 2), "linear", 50) for n in range(52)]
    )
    assert [lrs[n] for n in (12, 13, 14, 15)] == pytest.approx(
        [LR_MAX, (LR_MAX + LR_MIN) / 2, LR_MIN, LR_MAX]
    )


def test_wsd_state_round_trip_mid_schedule_continues_identically(tmp_path):
    scheduler = WSDLrScheduler(make_optimizer(LR_MAX), total_steps=80, num_warmup_steps=4, num_checkpoints=3)
    lrs_per_update(scheduler, 37)
    path = tmp_path / "scheduler.pt"
    atomic_torch_save(scheduler.state_dict(), path)
    resumed = WSDLrScheduler(make_optimizer(LR_MAX), total_steps=10)
    resumed.load_state_dict(safe_torch_load(path))
    assert resumed.checkpoint_steps == (20, 40, 80) and resumed.num_updates == 37
    assert lrs_per_update(resumed, 50) == lrs_per_update(scheduler, 50)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_steps": 0}, "total_steps must be a positive integer"),
        ({"num_warmup_steps": -1}, "num_warmup_steps must be a non-negative integer"),
        ({"decay_phase_ratio": 0}, "decay_phase_ratio must be a number in"),
        ({"decay_phase_ratio": 1.2}, "decay_phase_ratio must be a number in"),
        ({"decay_type": "sqrt"}, "decay_type must be one of"),
        (
            {"num_checkpoints": 2, "checkpoint_fractions": (0.5, 1.0)},
            "num_checkpoints or checkpoint_fractions",
        ),
        ({"num_checkpoints": 0}, "num_checkpoints must be a positive integer"),
        ({"checkpoint_fractions": (0.5, 0.8)}, "ending with 1.0"),
        ({"checkpoint_fractions": (0.6, 0.5, 1.0)}, "increasing"),
        ({"checkpoint_fractions": ()}, "ending with 1.0"),
        ({"total_steps": 50, "num_checkpoints": 8}, "fall on updates \\[0, 1, 2, "),  # 50 / 2**7 rounds to 0
        ({"total_steps": 5, "num_checkpoints": 4}, "fall on updates \\[1, 1, 2, 5\\]: each must come"),
        ({"num_warmup_steps": 91}, "runs into the decay before the first checkpoint"),
        ({"num_warmup_steps": 24, "num_checkpoints": 3}, "runs into the decay before the first checkpoint"),
        ({"lr_min": 0.0, "min_lr_ratio": 0.1}, "Pass lr_min or min_lr_ratio, not both"),
        ({"warmup_starting_lr": 0.0, "warmup_starting_lr_ratio": 0.1}, "not both"),
    ],
)
def test_wsd_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WSDLrScheduler(make_optimizer(LR_MAX), **{"total_steps": 100, **kwargs})


# ---------------------------------------------------------------------------------------- 0.1.61's calls


@pytest.mark.parametrize(
    "make",
    [
        lambda: CosineLrScheduler(make_optimizer(LR_MAX), **COSINE, **ABSOLUTE),
        lambda: WSDLrScheduler(make_optimizer(LR_MAX), total_steps=40, num_warmup_steps=8, **ABSOLUTE),
    ],
    ids=["cosine", "wsd"],
)
def test_step_update_sets_the_lr_after_n_updates_and_counts_from_there(make):
    """``step_update`` sets the LR that follows n updates and counts from there."""
    stepped, jumped = make(), make()
    lrs_per_update(stepped, 13)
    jumped.step_update(13)
    assert jumped.num_updates == 13 and jumped.get_last_lr() == stepped.get_last_lr()
    assert jumped.optimizer.param_groups[0]["lr"] == stepped.get_last_lr()[0]
    assert lrs_per_update(jumped, 30) == lrs_per_update(stepped, 30)
    with pytest.raises(ValueError, match="num_updates must be a non-negative integer"):
        jumped.step_update(-1)


THREE_CHECKPOINTS = {"total_steps": 100, "num_checkpoints": 3, "decay_phase_ratio": 0.2}


def test_wsd_describes_its_checkpoint_periods_as_0161_did():
    scheduler = WSDLrScheduler(make_optimizer(LR_MAX), **THREE_CHECKPOINTS)
    assert scheduler.get_checkpoint_steps() == [25, 50, 100] == estimate_checkpoint_steps(100, 3)
    assert scheduler.get_decay_info() == [
        {"period_start": 0, "period_end": 25, "decay_steps": 5, "pre_decay_step": 20},
        {"period_start": 25, "period_end": 50, "decay_steps": 5, "pre_decay_step": 45},
        {"period_start": 50, "period_end": 100, "decay_steps": 10, "pre_decay_step": 90},
    ]
    assert scheduler.get_phase_info(25)["period_end"] == 25, "a checkpoint ends its own period"
    assert scheduler.get_phase_info(26)["period_end"] == 50
    assert scheduler.get_phase_info(500)["period_end"] == 100, "after the end: the last period"
    lrs_per_update(scheduler, 47)
    assert scheduler.get_current_step() == 47 and scheduler.get_current_phase_info()["period_start"] == 25
    # pre_decay_step: the updates completed when the decay starts (the last state of the stable phase)
    fresh = WSDLrScheduler(make_optimizer(LR_MAX), **THREE_CHECKPOINTS)
    lrs = lrs_per_update(fresh, 46)
    assert lrs[44] == LR_MAX and lrs[45] < LR_MAX, "update 46, after pre_decay_step=45, is the first decayed"


def test_estimate_checkpoint_steps_spaces_them_by_doubling_up_to_the_end():
    assert estimate_checkpoint_steps(1000) == [250, 500, 1000]
    assert estimate_checkpoint_steps(100_000, 2) == [50_000, 100_000]  # 0.1.61's docstring (code: 25K, 50K)
    assert estimate_checkpoint_steps(200_000, 4) == [25_000, 50_000, 100_000, 200_000]
    assert estimate_checkpoint_steps(7, 1) == [7]


def test_wsd_default_warmup_is_1_percent_cut_short_at_the_first_decay():
    """WSD ``num_warmup_steps=None`` is 1 percent cut short at the first decay."""

    def warmup(**kwargs):
        return WSDLrScheduler(make_optimizer(LR_MAX), num_warmup_steps=None, **kwargs).num_warmup_steps

    assert warmup(total_steps=1000) == 10 and warmup(total_steps=99) == 0
    # 8 checkpoints of 1000 updates: the first decay starts after 7 updates, before 1% (10) is reached
    assert estimate_checkpoint_steps(1000, 8)[0] == 8 and warmup(total_steps=1000, num_checkpoints=8) == 7
    assert WSDLrScheduler.create_scheduler_fn().keywords["num_warmup_steps"] is None, "0.1.61's default: 1%"


def test_wsd_lr_min_above_an_initial_lr_names_min_lr_ratio():
    with pytest.raises(ValueError, match=r"lr_min \(0.1\) is above the initial lr of param group 1 .*ratio"):
        WSDLrScheduler(make_optimizer(0.5, 0.01), total_steps=100, lr_min=0.1)
    assert WSDLrScheduler(make_optimizer(0.1), total_steps=100, min_lr_ratio=0.1).get_last_lr() == [0.1]


# 0.1.61's CosineLrScheduler.state_dict() after 13 updates of a 40-update schedule: it counted from -1
COSINE_STATE_0161 = {
    "total_iterations": 40,
    "lr_min_ratio": None,
    "lr_min": LR_MIN,
    "warmup_iterations": 8,
    "warmup_lr_init": 1e-6,
    "warmup_lr_ratio": START / LR_MAX,
    "k_decay": 1.5,
    "num_cooldown_iterations": 8,
    "num_updates": 12,
}


def test_a_0161_cosine_state_is_read_as_these_settings_with_its_count_kept():
    scheduler = CosineLrScheduler(make_optimizer(LR_MAX), total_num_epochs=1, num_update_steps_per_epoch=5)
    scheduler.load_state_dict(COSINE_STATE_0161)
    same = CosineLrScheduler(
        make_optimizer(LR_MAX), **COSINE, k_decay=1.5, lr_min=LR_MIN, warmup_starting_lr_ratio=START / LR_MAX
    )
    same.step_update(12)
    assert scheduler.state_dict() == same.state_dict()
    assert scheduler.optimizer.param_groups[0]["lr"] == same.get_last_lr()[0]


def test_a_0161_wsd_state_with_inverse_proportional_decay_is_refused():
    """A 0.1.61 WSD state with its inverse-proportional decay is refused, nothing changed."""
    scheduler = WSDLrScheduler(make_optimizer(LR_MAX), total_steps=10)
    before = scheduler.state_dict()
    state_0161 = {
        "total_steps": 100,
        "num_warmup_steps": 0,
        "decay_phase_ratio": 0.1,
        "lr_min": 1e-6,
        "warmup_starting_lr": 1e-6,
        "use_inverse_sqrt_decay": False,
        "num_checkpoints": 1,
    }
    with pytest.raises(ValueError, match="use_inverse_sqrt_decay=False.*load_scheduler=False"):
        scheduler.load_state_dict(state_0161)
    with pytest.raises(ValueError, match="runs into the decay"):
        scheduler.load_state_dict({**state_0161, "use_inverse_sqrt_decay": True, "num_warmup_steps": 95})
    assert scheduler.state_dict() == before


# ---------------------------------------------------------------------------------------- real runs

# 44 samples in batches of 4: 11 batches, 6 updates per epoch with 2 accumulation steps.
TINY_RUN = {"num_samples": 44, "per_device_batch_size": 4, "gradient_accumulation_steps": 2, "lr": 0.05}


def test_a_cosine_schedule_completes_exactly_in_a_training_run():
    recorder = LrRecorder()
    result = run_tiny_training(
        callbacks=[recorder],
        num_epochs=3,
        **TINY_RUN,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(
            num_warmup_epochs=1, num_cooldown_epochs=1, min_lr_ratio=0.1, warmup_starting_lr_ratio=0.2
        ),
    )
    trainer = result.trainer
    assert (
        trainer.completed_update_steps == trainer.scheduler.num_updates == trainer.scheduler.total_steps == 18
    )
    expected = [cosine_lr(n, 0.05, 0.01, 0.005, warmup=6, cooldown=6, total=18) for n in range(19)]
    assert recorder.used == pytest.approx(expected[:18])
    assert recorder.after == pytest.approx(expected[1:])
    assert recorder.used[6] == pytest.approx(0.05) and recorder.after[-1] == pytest.approx(0.005)


def test_a_schedule_ends_with_a_run_cut_short_by_max_num_train_steps():
    recorder = LrRecorder()
    result = run_tiny_training(
        callbacks=[recorder],
        num_epochs=5,
        max_num_train_steps=9,
        **TINY_RUN,
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1, lr_min=1e-3),
    )
    # 2 epochs are started (12 updates) but the run stops after 9: the schedule ends there.
    assert result.trainer.run_config.num_epochs == 2
    assert result.trainer.completed_update_steps == result.trainer.scheduler.total_steps == 9
    assert recorder.used == pytest.approx([cosine_lr(n, 0.05, 1e-6, 1e-3, 6, 0, 9) for n in range(9)])
    assert recorder.after[-1] == pytest.approx(1e-3)


def test_a_wsd_schedule_completes_exactly_in_a_training_run():
    recorder = LrRecorder()
    result = run_tiny_training(
        callbacks=[recorder],
        num_epochs=4,
        **TINY_RUN,
        create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(
            num_warmup_steps=2, decay_phase_ratio=0.25, num_checkpoints=2, min_lr_ratio=0.0
        ),
    )
    # 24 updates, checkpoints after 12 and 24, decays of 3 updates.
    scheduler = result.trainer.scheduler
    assert scheduler.checkpoint_steps == (12, 24) and result.trainer.completed_update_steps == 24
    expected = [wsd_lr(n, 0.05, 1e-6, 0.0, 2, (12, 24), (3, 3), "1-sqrt", 24) for n in range(25)]
    assert recorder.used == pytest.approx(expected[:24], abs=1e-12)
    assert recorder.after == pytest.approx(expected[1:], abs=1e-12)
    assert recorder.used[11] == recorder.used[23] == 0.0 and recorder.used[12] == pytest.approx(0.05)


class SaveAfterUpdates(TrainerCallback):
    def __init__(self, path, num_updates):
        self.path, self.num_updates = path, num_updates

    def on_optimizer_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps == self.num_updates:
            trainer.save_checkpoint(self.path)


class ResumeFrom(TrainerCallback):
    def __init__(self, path):
        self.path = path

    def on_training_run_start(self, trainer, **kwargs):
        trainer.load_checkpoint(self.path)


def test_a_run_resumed_from_a_trainer_checkpoint_continues_the_schedule(tmp_path):
    path = tmp_path / "checkpoint.pt"
    scheduler_fn = CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1, k_decay=2, min_lr_ratio=0.1)
    full_run = LrRecorder()
    run_tiny_training(
        callbacks=[full_run, SaveAfterUpdates(path, 6)],
        num_epochs=3,
        with_eval=False,
        create_scheduler_fn=scheduler_fn,
        **TINY_RUN,
    )
    # The remaining 2 epochs: the loaded state brings back the 3-epoch schedule at update 6.
    resumed_run = LrRecorder()
    run_tiny_training(
        callbacks=[ResumeFrom(path), resumed_run],
        num_epochs=2,
        with_eval=False,
        create_scheduler_fn=scheduler_fn,
        **TINY_RUN,
    )
    assert resumed_run.used == pytest.approx(full_run.used[6:], rel=1e-12)
    assert resumed_run.after[-1] == pytest.approx(0.005)


# ---------------------------------------------------------------------------------------- two processes

NUM_PROCESSES = 2


def launch_scenario(out_dir):
    """Run the scenario under torchrun; returns (exit status or None after a timeout, output)."""
    return run_launch(torchrun_command(scenario.__file__, out_dir, num_processes=NUM_PROCESSES), out_dir)


def test_the_cosine_schedule_completes_on_two_processes_with_uneven_data(tmp_path):
    """The cosine schedule completes exactly on two processes with an uneven dataset."""
    status, output = launch_scenario(tmp_path)
    results = [tmp_path / f"rank{rank}.json" for rank in range(NUM_PROCESSES)]
    found = [json.loads(path.read_text()) for path in results if path.exists()]
    errors = [result["error"] for result in found if "error" in result]
    assert not errors, "\n".join(errors)
    assert status == 0 and len(found) == NUM_PROCESSES, output[-6000:]

    sizes = scenario.SIZES
    # 45 samples over 2 processes in batches of 4: 12 batches, 6 per process (the last padded);
    # 3 updates per epoch with 2 accumulation steps, 12 in all: 3 warmup, 6 cosine, 3 cooldown.
    lr_max, lr_min = sizes["lr"], sizes["lr"] * sizes["min_lr_ratio"]
    expected = [cosine_lr(n, lr_max, 1e-6, lr_min, 3, 3, 12, k=sizes["k_decay"]) for n in range(13)]
    for rank, result in enumerate(found):
        assert (result["num_processes"], result["process_index"]) == (NUM_PROCESSES, rank)
        assert result["train_dataloader_len"] == 6
        assert (
            result["completed_update_steps"]
            == result["scheduler_num_updates"]
            == result["scheduler_total_steps"]
            == 12
        )
        assert result["used_lrs"] == pytest.approx(expected[:12], rel=1e-12)
        assert result["lrs_after_updates"] == pytest.approx(expected[1:], rel=1e-12)
        assert result["lrs_after_updates"][-1] == pytest.approx(lr_min)
