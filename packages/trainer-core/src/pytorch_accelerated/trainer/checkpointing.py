"""The Trainer's checkpoints (:meth:`Trainer.save_checkpoint` / :meth:`Trainer.load_checkpoint`): the
weights without wrappers, the optimizer and scheduler states, and extra plain data, in one file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from .safe_files import CheckpointError, atomic_torch_save, check_plain_data, safe_torch_load

CHECKPOINT_MODEL_KEY = "model_state_dict"
CHECKPOINT_OPTIMIZER_KEY = "optimizer_state_dict"
CHECKPOINT_SCHEDULER_KEY = "scheduler_state_dict"
RESERVED_CHECKPOINT_KEYS = (CHECKPOINT_MODEL_KEY, CHECKPOINT_OPTIMIZER_KEY, CHECKPOINT_SCHEDULER_KEY)


def save_checkpoint(
    accelerator: Accelerator, model, optimizer, scheduler, save_path, checkpoint_kwargs, save_optimizer: bool, save_scheduler: bool
) -> None:
    """:meth:`Trainer.save_checkpoint`: the main process writes, every process waits for it."""
    extra = dict(checkpoint_kwargs or {})
    clashing = sorted(set(extra) & set(RESERVED_CHECKPOINT_KEYS))
    if clashing:
        raise CheckpointError(f"checkpoint_kwargs may not use the reserved keys {clashing}; rename them.")
    check_plain_data(extra, "checkpoint_kwargs")
    checkpoint = {CHECKPOINT_MODEL_KEY: model_state_dict(accelerator, model), **extra}
    if save_optimizer:
        checkpoint[CHECKPOINT_OPTIMIZER_KEY] = optimizer.state_dict()
    if save_scheduler and scheduler is not None:
        checkpoint[CHECKPOINT_SCHEDULER_KEY] = scheduler.state_dict()
    if accelerator.is_main_process:
        atomic_torch_save(checkpoint, save_path)
    accelerator.wait_for_everyone()


def load_checkpoint(
    accelerator: Accelerator, model, optimizer, scheduler, checkpoint_path, load_optimizer: bool, load_scheduler: bool
) -> dict[str, Any]:
    """:meth:`Trainer.load_checkpoint`: returns the whole checkpoint dict, its extra keys included."""
    checkpoint = safe_torch_load(checkpoint_path)
    if CHECKPOINT_MODEL_KEY not in checkpoint:
        raise CheckpointError(f"{str(checkpoint_path)!r} is not a Trainer checkpoint: it has no {CHECKPOINT_MODEL_KEY!r}.")
    load_model_state_dict(accelerator, model, checkpoint[CHECKPOINT_MODEL_KEY], checkpoint_path)
    if load_optimizer and CHECKPOINT_OPTIMIZER_KEY in checkpoint:
        optimizer.load_state_dict(checkpoint[CHECKPOINT_OPTIMIZER_KEY])
    if load_scheduler and CHECKPOINT_SCHEDULER_KEY in checkpoint:
        if scheduler is None:
            raise CheckpointError(
                f"{str(checkpoint_path)!r} holds a scheduler state but the trainer has no scheduler; "
                "pass load_scheduler=False or create the scheduler first."
            )
        scheduler.load_state_dict(checkpoint[CHECKPOINT_SCHEDULER_KEY])
    return checkpoint


def is_checkpoint_file(path) -> bool:
    """Whether ``path`` is a file that :func:`save_checkpoint` wrote (its tensors mapped, not read)."""
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file, or one that cannot be loaded safely: not a checkpoint either way
        return False
    return isinstance(checkpoint, Mapping) and CHECKPOINT_MODEL_KEY in checkpoint


def model_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights without wrappers (gathered by accelerate for a sharded model)."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return accelerator.get_state_dict(model)
    return accelerator.unwrap_model(model, keep_torch_compile=False).state_dict()


def load_model_state_dict(accelerator: Accelerator, model: torch.nn.Module, state_dict, checkpoint_path) -> None:
    """Load ``state_dict`` into the model without wrappers, once it is shown to fit."""
    model = accelerator.unwrap_model(model, keep_torch_compile=False)
    check_model_fits(model, state_dict, checkpoint_path)
    model.load_state_dict(state_dict)


def check_model_fits(model: torch.nn.Module, saved: Mapping[str, torch.Tensor], path) -> None:
    """Raise :class:`CheckpointError` naming the differences unless ``saved`` are weights for ``model``."""
    current = model.state_dict()
    problems = []
    missing = [name for name in current if name not in saved]
    unexpected = [name for name in saved if name not in current]
    if missing:
        problems.append(f"missing {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected {_some(unexpected)}")
    mismatched = [
        f"{name} is {tuple(saved[name].shape)} there and {tuple(tensor.shape)} here"
        for name, tensor in current.items()
        if name in saved and tuple(saved[name].shape) != tuple(tensor.shape)
    ]
    if mismatched:
        problems.append(_some(mismatched))
    if problems:
        raise CheckpointError(
            f"The weights in {str(path)!r} are not for this model: {'; '.join(problems)}. "
            "Use the model the checkpoint was saved from."
        )


def _some(names: list[str], limit: int = 5) -> str:
    """Up to ``limit`` names, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
