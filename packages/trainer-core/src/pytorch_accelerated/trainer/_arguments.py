"""Argument checks shared across the core, with error messages that name the argument."""

from __future__ import annotations


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
