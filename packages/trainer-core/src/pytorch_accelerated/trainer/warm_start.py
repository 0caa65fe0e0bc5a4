"""A training state's parts loaded into a trainer now, without the run's position: pytorch-accelerated
0.1.61's ``Trainer.load_training_state``, which code that resumes by hand calls (from
``on_training_run_start``, say, to start a new run from a saved one).

Continuing an interrupted run exactly (its position in the epoch, its callbacks, its random
generators) is ``train(..., resume_from=...)``'s, in :mod:`resuming`; this collaborator only reads a
state (:mod:`state_format`) and applies its weights, optimizer, scheduler and gradient scaler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from . import sharded_state
from .checkpointing import check_model_fits, load_model_state_dict
from .safe_files import CheckpointError
from .state_format import components_of
from .state_format import load_training_state as read_training_state

# pytorch-accelerated 0.1.61 saved its training states with accelerate's save_state: these files, no manifest
_FILES_OF_0161_STATES = ("trainer_metadata.pt", "random_states_0.pkl")


def load_training_state(accelerator: Accelerator, model, optimizer, scheduler, state_dir) -> dict[str, Any]:
    """:meth:`Trainer.load_training_state`: apply the weights, optimizer, scheduler (where there is
    one) and gradient scaler of the state in ``state_dir``, each checked to fit first, and return its
    metadata: ``current_epoch``, ``completed_update_steps`` and the ``checkpoint_kwargs`` it was
    saved with."""
    path = Path(state_dir)
    _refuse_unsupported(accelerator, path)
    manifest, shared, _ = read_training_state(path, process_index=0)  # only the shared part is used
    components = components_of(path, manifest)
    apart = sharded_state.stored_sharded(components)  # a sharded model's: loaded resharded, on any processes
    _refuse_unsharded_into_sharded(accelerator, path, apart)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
    if apart:
        sharded_state.check_fits(unwrapped, optimizer, path, components, shared["optimizer_class"])
    if "model" not in apart:
        check_model_fits(unwrapped, shared["model"], path)
    if "optimizer" not in apart:
        _check_optimizer_fits(getattr(optimizer, "optimizer", optimizer), shared, path)
    scheduler = scheduler if "scheduler" in shared else None
    if scheduler is not None and shared.get("scheduler_class") not in (None, type(scheduler).__qualname__):
        raise CheckpointError(
            f"{str(path)!r} holds the state of a {shared['scheduler_class']} scheduler; this trainer's is a "
            f"{type(scheduler).__qualname__}. Create the scheduler the state was saved with."
        )
    # the small parts first: should one still refuse its state, the weights are untouched
    if scheduler is not None:
        scheduler.load_state_dict(shared["scheduler"])
    if accelerator.scaler is not None and "scaler" in shared:
        accelerator.scaler.load_state_dict(shared["scaler"])
    if "optimizer" not in apart:
        optimizer.load_state_dict(shared["optimizer"])
    if "model" not in apart:
        load_model_state_dict(accelerator, model, shared["model"], path)
    if apart:
        sharded_state.load_shards(model, optimizer, path, components)
    position = shared["position"]
    return {
        "current_epoch": position["epoch"],
        "completed_update_steps": position["completed_update_steps"],
        **shared.get("checkpoint_kwargs", {}),
    }


def _refuse_unsupported(accelerator: Accelerator, path: Path) -> None:
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise CheckpointError(
            "load_training_state supports one device, DDP and FSDP2, not DeepSpeed: use "
            "accelerator.load_state there."
        )
    if any((path / name).is_file() for name in _FILES_OF_0161_STATES):
        raise CheckpointError(
            f"{str(path)!r} was saved by pytorch-accelerated 0.1.61 (accelerate's save_state), which this "
            "trainer does not read: load its weights into the model yourself (model.safetensors with "
            "safetensors.torch.load_file, or pytorch_model.bin), then save_training_state to continue from "
            "here."
        )


def _refuse_unsharded_into_sharded(accelerator: Accelerator, path: Path, apart: list[str]) -> None:
    if sharded_state.is_sharded(accelerator) and "model" not in apart:
        raise CheckpointError(
            f"{str(path)!r} was saved by an unsharded run (one process or DDP), and this model is sharded "
            "(FSDP): load it into an unsharded model, or start from its weights with load_checkpoint."
        )


def _check_optimizer_fits(optimizer: torch.optim.Optimizer, shared: dict[str, Any], path: Path) -> None:
    saved_sizes = [len(group["params"]) for group in shared["optimizer"]["param_groups"]]
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    if shared["optimizer_class"] != type(optimizer).__name__ or saved_sizes != sizes:
        raise CheckpointError(
            f"{str(path)!r} holds the state of a {shared['optimizer_class']} with param groups of "
            f"{saved_sizes} parameters; this trainer's optimizer is a {type(optimizer).__name__} with "
            f"{sizes}. Create the optimizer (and its param groups) as the saved run had them."
        )
