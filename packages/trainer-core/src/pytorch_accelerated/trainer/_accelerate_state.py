"""The Trainer's ``Accelerator``: its keyword arguments, and several Trainers in one process with
different ``mixed_precision`` or sharding (a notebook, a hyperparameter search): accelerate keeps one
process-wide state and refuses or ignores a second setting."""

from __future__ import annotations

import os
from typing import Any

import torch
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration

from . import _sharding


def accelerator_kwargs_for(accelerator_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the Trainer's ``Accelerator``: the user's, with the process-wide state
    made way for (:func:`make_way_for`), ``cpu=True`` where several processes were launched on
    a machine without an accelerator (a bare ``Accelerator()`` would run every process alone), batches
    copied to the device with ``non_blocking`` unless a ``dataloader_config`` is given, and an
    FSDP plugin asked for by the environment passed as an argument, with its mixed precision filled
    (:func:`_sharding.reduce_in_fp32`)."""
    kwargs = dict(accelerator_kwargs)
    several_cpu_processes = _launched_on_several_processes() and not _accelerator_device_available()
    _sharding.check_deepspeed_can_run(kwargs, several_cpu_processes)
    make_way_for(kwargs)
    if "cpu" not in kwargs and several_cpu_processes:
        kwargs["cpu"] = True
    if "dataloader_config" not in kwargs and "split_batches" not in kwargs:
        # several GPUs: accelerate's loaders then copy pinned batches to the device without waiting
        kwargs["dataloader_config"] = DataLoaderConfiguration(non_blocking=True)
    fsdp_plugin = _sharding.fsdp_plugin_asked(kwargs)
    if fsdp_plugin is not None:
        _sharding.reduce_in_fp32(fsdp_plugin, _requested_mixed_precision(kwargs))
        kwargs["fsdp_plugin"] = fsdp_plugin
    return kwargs


def make_way_for(accelerator_kwargs: dict[str, Any]) -> None:
    """Forget accelerate's process-wide mixed-precision and sharding state if ``accelerator_kwargs`` asks
    for another setting or the state holds an engine (FSDP, DeepSpeed), so that the next ``Accelerator``
    takes the settings asked for. The process state (devices, the distributed process group) is kept: a
    live process group is never torn down.

    Without a ``mixed_precision`` accelerate reads ``ACCELERATE_MIXED_PRECISION`` (default ``"no"``)
    only for a new state, and would silently keep an earlier Trainer's setting: that counts as a
    different setting too. ``_reset_state`` is private to accelerate but is what its own tests and
    transformers' ``TrainingArguments`` use for this; it has no public counterpart in 1.15.
    """
    state = AcceleratorState._shared_state
    if not state or "_mixed_precision" not in state:
        return
    other_precision = _requested_mixed_precision(accelerator_kwargs) != state["_mixed_precision"]
    if other_precision or _sharding.sharding_differs(accelerator_kwargs):
        AcceleratorState._reset_state(reset_partial_state=False)
        _sharding.restore_process_distributed_type()


def check_is_own(accelerator, mixed_precision: str, distributed_type) -> None:
    """Raise unless accelerate's process-wide state still has the ``mixed_precision`` and distributed type
    (DDP, FSDP, ...) a Trainer was created with."""
    for name, mine, now in (
        ("mixed_precision", mixed_precision, accelerator.mixed_precision),
        ("distributed_type", distributed_type.value, accelerator.distributed_type.value),
    ):
        if mine != now:
            raise RuntimeError(
                f"This Trainer was created with {name}={mine!r}, but a Trainer created since set "
                f"accelerate's process-wide state to {now!r}: create this Trainer again (after the other) "
                "to train with it."
            )


def _requested_mixed_precision(accelerator_kwargs: dict[str, Any]) -> str:
    requested = accelerator_kwargs.get("mixed_precision")
    requested = requested if requested is not None else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return str(requested).lower()


def _launched_on_several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _accelerator_device_available() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()
