"""Argument checks shared by the schedulers, with error messages that name the argument."""

from __future__ import annotations

import math
from numbers import Real

DEFAULT_LR_MIN = 1e-6
DEFAULT_WARMUP_STARTING_LR = 1e-6


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_non_negative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return value


def check_number(
    name: str, value, minimum: float = 0.0, maximum: float | None = None, allow_minimum: bool = True
) -> float:
    """``value`` as a float, if it is a finite number in ``[minimum, maximum]`` (``(minimum, maximum]``
    without ``allow_minimum``)."""
    in_range = (
        isinstance(value, Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > minimum or (allow_minimum and value == minimum))
        and (maximum is None or value <= maximum)
    )
    if not in_range:
        lower = "[" if allow_minimum else "("
        upper = f"{maximum}]" if maximum is not None else "inf)"
        raise ValueError(f"{name} must be a number in {lower}{minimum}, {upper}, got {value!r}.")
    return float(value)


def value_or_ratio(
    value_name: str, value, ratio_name: str, ratio, default_value: float
) -> tuple[float | None, float | None]:
    """Check a setting given either as an absolute value or as a ratio of each group's initial
    value; returns ``(value, ratio)`` with exactly one of them set (``default_value`` if neither was given).
    """
    if value is not None and ratio is not None:
        raise ValueError(f"Pass {value_name} or {ratio_name}, not both.")
    if ratio is not None:
        return None, check_number(ratio_name, ratio, maximum=1.0)
    return check_number(value_name, default_value if value is None else value), None


def lr_end_points(lr_min, min_lr_ratio, warmup_starting_lr, warmup_starting_lr_ratio) -> tuple:
    """``(lr_min, min_lr_ratio, warmup_starting_lr, warmup_starting_lr_ratio)`` checked, with the
    defaults filled in: each lr is given either absolutely or as a ratio."""
    return (
        *value_or_ratio("lr_min", lr_min, "min_lr_ratio", min_lr_ratio, DEFAULT_LR_MIN),
        *value_or_ratio(
            "warmup_starting_lr",
            warmup_starting_lr,
            "warmup_starting_lr_ratio",
            warmup_starting_lr_ratio,
            DEFAULT_WARMUP_STARTING_LR,
        ),
    )


def resolve(value: float | None, ratio: float | None, initial_value: float) -> float:
    """The setting for a param group whose initial value is ``initial_value``."""
    return value if ratio is None else ratio * initial_value


def epochs_to_steps(name: str, num_epochs, num_update_steps_per_epoch: int) -> int:
    """A number of epochs (possibly fractional) as whole updates: rounded, and at least one when
    not zero, so that a short phase never disappears silently."""
    num_epochs = check_number(name, num_epochs)
    if num_epochs == 0:
        return 0
    return max(1, round(num_epochs * num_update_steps_per_epoch))
