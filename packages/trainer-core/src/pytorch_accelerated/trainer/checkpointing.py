"""The Trainer's checkpoints (:meth:`Trainer.save_checkpoint` / :meth:`Trainer.load_checkpoint`): the
weights without wrappers, the optimizer and scheduler states, and extra plain data, in one file. A
sharded (FSDP) model's are gathered whole, in an unsharded model's format: either loads into the other."""

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
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    save_path,
    checkpoint_kwargs,
    save_optimizer: bool,
    save_scheduler: bool,
) -> None:
    """:meth:`Trainer.save_checkpoint`: the main process writes, every process waits for it."""
    extra = dict(checkpoint_kwargs or {})
    clashing = sorted(set(extra) & set(RESERVED_CHECKPOINT_KEYS))
    if clashing:
        raise CheckpointError(f"checkpoint_kwargs may not use the reserved keys {clashing}; rename them.")
    check_plain_data(extra, "checkpoint_kwargs")
    checkpoint = {CHECKPOINT_MODEL_KEY: model_state_dict(accelerator, model), **extra}
    if save_optimizer:
        checkpoint[CHECKPOINT_OPTIMIZER_KEY] = optimizer_state_dict(accelerator, model, optimizer)
    if save_scheduler and scheduler is not None:
        checkpoint[CHECKPOINT_SCHEDULER_KEY] = scheduler.state_dict()
    if accelerator.is_main_process:
        atomic_torch_save(checkpoint, save_path)
    accelerator.wait_for_everyone()


def load_checkpoint(
    accelerator: Accelerator,
    model,
    optimizer,
    scheduler,
    checkpoint_path,
    load_optimizer: bool,
    load_scheduler: bool,
) -> dict[str, Any]:
    """:meth:`Trainer.load_checkpoint`: returns the whole checkpoint dict, its extra keys included."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise CheckpointError(
            "load_checkpoint does not load into a DeepSpeed engine (its own fp32 copy of the weights would "
            "overwrite them at the next step): load the weights into the model before creating the Trainer "
            "(model.load_state_dict(torch.load(path, weights_only=True)['model_state_dict'])), or use "
            "trainer.accelerator.load_state(folder) for a DeepSpeed checkpoint."
        )
    checkpoint = safe_torch_load(checkpoint_path)
    if CHECKPOINT_MODEL_KEY not in checkpoint:
        raise CheckpointError(
            f"{str(checkpoint_path)!r} is not a Trainer checkpoint: it has no {CHECKPOINT_MODEL_KEY!r}."
        )
    load_model_state_dict(accelerator, model, checkpoint[CHECKPOINT_MODEL_KEY], checkpoint_path)
    if load_optimizer and CHECKPOINT_OPTIMIZER_KEY in checkpoint:
        load_optimizer_state_dict(accelerator, model, optimizer, checkpoint[CHECKPOINT_OPTIMIZER_KEY])
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
    """The model's weights without wrappers. A sharded model's are gathered by accelerate, whole, on the CPU
    of the main process (the others get ``{}``): call it on every process."""
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return accelerator.get_state_dict(model)
    return accelerator.unwrap_model(model, keep_torch_compile=False).state_dict()


def load_model_state_dict(
    accelerator: Accelerator, model: torch.nn.Module, state_dict, checkpoint_path
) -> None:
    """Load whole weights ``state_dict`` into the model without wrappers (into its shards under FSDP:
    call it on every process then), once they are shown to fit."""
    model = accelerator.unwrap_model(model, keep_torch_compile=False)
    check_model_fits(model, state_dict, checkpoint_path)
    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # a copy: torch turns the values of the dict it is given into shards
        set_model_state_dict(model, dict(state_dict), options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(state_dict)


def optimizer_state_dict(accelerator: Accelerator, model: torch.nn.Module, optimizer) -> dict[str, Any]:
    """The optimizer's state in torch's format (by parameter index). Under FSDP it is gathered whole, on
    the CPU of the main process (the others get ``{}``): call it on every process."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise CheckpointError(
            "DeepSpeed keeps the optimizer state in its own format, which this trainer does not write into "
            "a checkpoint: pass save_optimizer=False for the weights, or use "
            "trainer.accelerator.save_state(folder)."
        )
    if accelerator.distributed_type != DistributedType.FSDP or not _torch_optimizer(optimizer).state:
        # no state to gather (before the first step): torch's own (torch.distributed would take a step)
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    whole_on_main_process = StateDictOptions(full_state_dict=True, cpu_offload=True)
    whole = get_optimizer_state_dict(model, _torch_optimizer(optimizer), options=whole_on_main_process)
    return _by_index(whole) if whole else {}


def load_optimizer_state_dict(accelerator: Accelerator, model: torch.nn.Module, optimizer, state_dict):
    """Load an optimizer state in torch's format (by parameter index) into the optimizer (into its shards
    under FSDP: call it on every process then)."""
    if accelerator.distributed_type != DistributedType.FSDP or not state_dict.get("state"):
        optimizer.load_state_dict(state_dict)  # no state to shard (saved before the first step): torch's own
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    torch_optimizer = _torch_optimizer(optimizer)
    by_name = _by_name(state_dict, _names_in_optimizer_order(model, torch_optimizer))
    set_optimizer_state_dict(model, torch_optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds torch's


def _by_index(by_name: dict[str, Any]) -> dict[str, Any]:
    """torch.distributed's optimizer state (parameters named) in torch's own format (parameters numbered in
    the order of the param groups), as an unsharded model's optimizer saves it."""
    groups = by_name["param_groups"]
    index = {name: i for i, name in enumerate(name for group in groups for name in group["params"])}
    return {
        "state": {index[name]: state for name, state in by_name["state"].items()},
        "param_groups": [{**group, "params": [index[name] for name in group["params"]]} for group in groups],
    }


def _by_name(by_index: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The reverse of :func:`_by_index`, with ``names``: this optimizer's parameters' names, in its order."""
    groups = by_index["param_groups"]
    return {
        "state": {names[i]: state for i, state in by_index["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in groups],
    }


def _names_in_optimizer_order(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # torch names them (its canonical names, wrappers left out) in its sharded state: no gathering
    local = get_optimizer_state_dict(model, optimizer)
    return [name for group in local["param_groups"] for name in group["params"]]


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
