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

from .checkpointing import check_model_fits, load_model_state_dict
from .safe_files import CheckpointError
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
    _, shared, _ = read_training_state(path, process_index=0)  # only the shared part is used
    check_model_fits(accelerator.unwrap_model(model, keep_torch_compile=False), shared["model"], path)
    _check_optimizer_fits(getattr(optimizer, "optimizer", optimizer), shared, path)  # torch's, in accelerate's
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
    optimizer.load_state_dict(shared["optimizer"])
    load_model_state_dict(accelerator, model, shared["model"], path)
    position = shared["position"]
    return {
        "current_epoch": position["epoch"],
        "completed_update_steps": position["completed_update_steps"],
        **shared.get("checkpoint_kwargs", {}),
    }


def _refuse_unsupported(accelerator: Accelerator, path: Path) -> None:
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise CheckpointError(
            "load_training_state supports one device and DDP, not sharded FSDP/DeepSpeed models: "
            "use accelerator.load_state there."
        )
    if any((path / name).is_file() for name in _FILES_OF_0161_STATES):
        raise CheckpointError(
            f"{str(path)!r} was saved by pytorch-accelerated 0.1.61 (accelerate's save_state), which this "
            "trainer does not read: load its weights into the model yourself (model.safetensors with "
            "safetensors.torch.load_file, or pytorch_model.bin), then save_training_state to continue from "
            "here."
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
