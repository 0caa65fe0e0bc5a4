"""Scheduler states saved by pytorch-accelerated 0.1.61 (in its checkpoints' ``scheduler_state_dict``),
read as this project's settings, so that a 0.1.61 checkpoint continues with its schedule."""

from __future__ import annotations

from typing import Any


def is_cosine_state_0161(state: dict[str, Any]) -> bool:
    """Whether ``state`` is a 0.1.61 ``CosineLrScheduler.state_dict()`` (it counted ``total_iterations``)."""
    return "total_iterations" in state


def is_wsd_state_0161(state: dict[str, Any]) -> bool:
    """Whether ``state`` is a 0.1.61 ``WSDLrScheduler.state_dict()`` (it chose the decay with a flag)."""
    return "use_inverse_sqrt_decay" in state


def cosine_settings_from_0161(state: dict[str, Any]) -> dict[str, Any]:
    """The ``CosineLrScheduler`` state entries for a 0.1.61 one.

    0.1.61 counted updates from -1 and applied each value one update late; its count is kept as it
    is, so that the continued run uses the learning rates 0.1.61 would have used.
    """
    lr_min, min_lr_ratio = _value_or_ratio(state["lr_min"], state["lr_min_ratio"])
    start, start_ratio = _value_or_ratio(state["warmup_lr_init"], state["warmup_lr_ratio"])
    return {
        "total_steps": int(state["total_iterations"]),
        "num_warmup_steps": round(state["warmup_iterations"]),
        "num_cooldown_steps": round(state["num_cooldown_iterations"]),
        "k_decay": float(state["k_decay"]),
        "lr_min": lr_min,
        "min_lr_ratio": min_lr_ratio,
        "warmup_starting_lr": start,
        "warmup_starting_lr_ratio": start_ratio,
        "num_updates": max(0, int(state["num_updates"])),
    }


def wsd_settings_from_0161(state: dict[str, Any]) -> dict[str, Any]:
    """The ``WSDLrScheduler`` settings for a 0.1.61 state; it holds no update count (0.1.61 left
    its ``_num_updates`` out of the state)."""
    if not state["use_inverse_sqrt_decay"]:
        raise ValueError(
            "This WSDLrScheduler state was saved by pytorch-accelerated 0.1.61 with "
            "use_inverse_sqrt_decay=False (the inverse-proportional decay), which this WSDLrScheduler does "
            "not have: load the checkpoint with load_scheduler=False and create the scheduler with one of "
            "its decay_type values."
        )
    return {
        "total_steps": int(state["total_steps"]),
        "num_warmup_steps": int(state["num_warmup_steps"]),
        "decay_phase_ratio": float(state["decay_phase_ratio"]),
        "num_checkpoints": int(state["num_checkpoints"]),
        "min_lr_ratio": float(state["lr_min"]),  # 0.1.61's lr_min was a fraction of each group's initial lr
        "warmup_starting_lr": float(state["warmup_starting_lr"]),
    }


def _value_or_ratio(value, ratio) -> tuple[float | None, float | None]:
    """0.1.61 kept both and let the ratio win when set; this project keeps exactly one."""
    return (None, float(ratio)) if ratio is not None else (float(value), None)
