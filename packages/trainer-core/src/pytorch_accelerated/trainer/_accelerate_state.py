"""The Trainer's ``Accelerator``: its keyword arguments, and several Trainers in one process with
different ``mixed_precision`` (a notebook, a hyperparameter search): accelerate keeps one
process-wide state and refuses a second setting."""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate.state import AcceleratorState


def accelerator_kwargs_for(accelerator_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the Trainer's ``Accelerator``: the user's, with the process-wide state
    made way for (:func:`make_way_for`), and ``cpu=True`` where several processes were launched on
    a machine without an accelerator (a bare ``Accelerator()`` would run every process alone)."""
    kwargs = dict(accelerator_kwargs)
    make_way_for(kwargs)
    if "cpu" not in kwargs and _launched_on_several_processes() and not _accelerator_device_available():
        kwargs["cpu"] = True
    return kwargs


def make_way_for(accelerator_kwargs: dict[str, Any]) -> None:
    """Forget accelerate's process-wide mixed-precision state if ``accelerator_kwargs`` asks for
    another setting, so that the next ``Accelerator`` can take it. The process state (devices, the
    distributed process group) is kept: a live process group is never torn down.

    Without a ``mixed_precision`` accelerate reads ``ACCELERATE_MIXED_PRECISION`` (default ``"no"``)
    only for a new state, and would silently keep an earlier Trainer's setting: that counts as a
    different setting too. ``_reset_state`` is private to accelerate but is what its own tests and
    transformers' ``TrainingArguments`` use for this; it has no public counterpart in 1.15.
    """
    state = AcceleratorState._shared_state
    if not state or "_mixed_precision" not in state:
        return
    requested = accelerator_kwargs.get("mixed_precision")
    requested = str(requested if requested is not None else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")).lower()
    if requested != state["_mixed_precision"]:
        AcceleratorState._reset_state(reset_partial_state=False)


def check_is_own(accelerator, mixed_precision: str) -> None:
    """Raise unless accelerate's process-wide state still has the ``mixed_precision`` a Trainer was created with."""
    if accelerator.mixed_precision != mixed_precision:
        raise RuntimeError(
            f"This Trainer was created with mixed_precision={mixed_precision!r}, but a Trainer created since "
            f"set accelerate's process-wide state to {accelerator.mixed_precision!r}: create this Trainer "
            "again (after the other) to train with it."
        )


def _launched_on_several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _accelerator_device_available() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()
