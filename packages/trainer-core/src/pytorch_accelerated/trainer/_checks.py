"""Checks of the Trainer's arguments and of what its hooks return, run once (at creation, at the
start of a run, on a run's first step), each with an error that names the mistake and the fix."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.utils.data import Dataset, DistributedSampler

from ._arguments import check_positive_int
from ._warnings import warn_user

_OWN_MIXED_PRECISION = (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)  # they do fp16 themselves


def check_model(model) -> None:
    if isinstance(model, type):
        raise TypeError(
            f"model is the class {model.__name__}; pass an instance: model={model.__name__}(...)."
        )
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")


def check_loss_func(loss_func) -> None:
    if isinstance(loss_func, type):
        raise TypeError(
            f"loss_func is the class {loss_func.__name__}; pass an instance:"
            f" loss_func={loss_func.__name__}()."
        )
    if loss_func is not None and not callable(loss_func):
        raise TypeError(
            "loss_func must be callable as loss_func(model_outputs, targets), got"
            f" {type(loss_func).__name__}."
        )


def check_optimizer(optimizer, model: torch.nn.Module) -> None:
    """The optimizer is an instance that holds at least one of the model's parameters."""
    if optimizer is None:
        raise TypeError(
            "optimizer is None: pass an optimizer over the model's parameters, e.g. "
            "optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3)."
        )
    if isinstance(optimizer, type):
        raise TypeError(
            f"optimizer is the class {optimizer.__name__}; pass an instance: "
            f"optimizer={optimizer.__name__}(model.parameters(), lr=...)."
        )
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    model_ids = {id(parameter) for parameter in model.parameters()}
    if model_ids and not model_ids & _optimized_ids(optimizer):
        raise ValueError(
            "The optimizer holds none of the model's parameters, so training would change nothing: create it "
            "from this model's parameters (optimizer=...(model.parameters(), ...)), after any copy or "
            "re-creation of the model."
        )


def warn_of_parameters_outside_the_optimizer(optimizer, model: torch.nn.Module) -> None:
    """One warning naming the parameters that require grad but that no param group holds."""
    optimized = _optimized_ids(optimizer)
    left_out = [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and id(parameter) not in optimized
    ]
    if left_out:
        shown = ", ".join(left_out[:5]) + (f" and {len(left_out) - 5} more" if len(left_out) > 5 else "")
        warn_user(
            f"{len(left_out)} model parameter(s) require grad but are in no param group of the optimizer, so"
            f" they will not be trained: {shown}. Add them (optimizer.add_param_group) or freeze them"
            " (requires_grad_(False))."
        )


def _optimized_ids(optimizer) -> set[int]:
    return {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}


def check_accelerator_kwargs(accelerator_kwargs: dict[str, Any]) -> None:
    if "gradient_accumulation_steps" in accelerator_kwargs:
        raise ValueError(
            "Pass gradient_accumulation_steps to Trainer.train(), not in accelerator_kwargs: "
            "the trainer accumulates gradients itself so that logged losses stay true."
        )


def check_train_arguments(
    train_dataset,
    num_epochs,
    eval_dataset,
    per_device_batch_size,
    max_num_train_steps,
    gradient_accumulation_steps,
    gradient_clip_value,
    gradient_clip_norm,
    create_scheduler_fn,
) -> None:
    """``Trainer.train``'s arguments, checked before anything is set up."""
    check_positive_int("num_epochs", num_epochs)
    check_positive_int("per_device_batch_size", per_device_batch_size)
    check_positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
    if max_num_train_steps is not None:
        check_positive_int("max_num_train_steps", max_num_train_steps)
    if gradient_clip_value is not None and gradient_clip_norm is not None:
        raise ValueError("Pass gradient_clip_value or gradient_clip_norm, not both.")
    check_clip("gradient_clip_value", gradient_clip_value)
    check_clip("gradient_clip_norm", gradient_clip_norm)
    check_scheduler_fn(create_scheduler_fn)
    check_not_empty(train_dataset, "train_dataset", "training")
    if isinstance(eval_dataset, Mapping):
        named_eval_sets(eval_dataset, "train()")
    elif eval_dataset is not None:
        _check_not_a_list_of_datasets(eval_dataset)
        check_not_empty(eval_dataset, "eval_dataset", "evaluation")


def named_eval_sets(eval_sets: Mapping, where: str) -> Mapping:
    """Several evaluation sets by name: non-empty, named by non-empty strings usable in metric names."""
    if not eval_sets:
        raise ValueError(f"{where} got an empty dict of evaluation sets: pass at least one, or None.")
    for name, dataset in eval_sets.items():
        if not isinstance(name, str) or not name or any(character.isspace() for character in name):
            raise ValueError(
                f"{where}'s evaluation sets are named in metric names ({{name}}_eval_loss_epoch): {name!r} is"
                " not a usable name; use short strings without spaces, such as 'val' and 'ood'."
            )
        check_not_empty(dataset, f"eval_dataset[{name!r}]", "evaluation")
    return eval_sets


def _check_not_a_list_of_datasets(eval_dataset) -> None:
    if (
        isinstance(eval_dataset, (list, tuple))
        and eval_dataset
        and all(isinstance(item, Dataset) for item in eval_dataset)
    ):
        raise TypeError(
            f"eval_dataset is a {type(eval_dataset).__name__} of {len(eval_dataset)} datasets: pass several"
            " evaluation sets as a dict that names each, eval_dataset={'val': val_set, 'ood': ood_set};"
            " each is evaluated after every epoch and its metrics recorded under its name"
            " (val_eval_loss_epoch, ood_eval_loss_epoch)."
        )


def check_scheduler_fn(create_scheduler_fn) -> None:
    if create_scheduler_fn is None:
        return
    if _is_a_scheduler(create_scheduler_fn):
        raise TypeError(
            f"create_scheduler_fn is a {type(create_scheduler_fn).__name__} instance; pass a callable that"
            " builds the scheduler from the optimizer instead, e.g."
            " functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.01,"
            " total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS): the trainer calls it with its"
            " optimizer once the run's sizes are known."
        )
    if not callable(create_scheduler_fn):
        raise TypeError(
            "create_scheduler_fn must be callable as create_scheduler_fn(optimizer), got"
            f" {create_scheduler_fn!r}."
        )


def check_scheduler_steps_without_a_metric(scheduler) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise TypeError(
            "ReduceLROnPlateau steps with a metric, and the trainer steps its scheduler every update "
            "without one. Pass it to MetricSchedulerCallback (trainer-callbacks) instead of "
            "create_scheduler_fn: callbacks=[..., MetricSchedulerCallback(partial(ReduceLROnPlateau, ...), "
            "monitor='eval_loss_epoch')], which steps it with the metric at the end of each epoch."
        )


def _is_a_scheduler(value) -> bool:
    if isinstance(value, type):
        return False
    return isinstance(value, torch.optim.lr_scheduler.LRScheduler) or (
        hasattr(value, "optimizer") and hasattr(value, "step")
    )


def check_clip(name: str, value) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a positive number or None, got {value!r}: gradients are clipped to it "
            "(a value <= 0 would zero or reverse them); pass None not to clip."
        )


def check_not_empty(dataset, name: str, where: str) -> None:
    try:
        length = len(dataset)
    except TypeError:
        return  # an iterable dataset: its length is checked on its dataloader, if it has one
    if length == 0:
        raise ValueError(
            f"{name} is empty (len 0): {where} needs at least one sample; check how it was built or filtered."
        )


def check_dataloader_not_empty(dataloader, name: str) -> None:
    try:
        length = len(dataloader)
    except TypeError:
        return
    if length == 0:
        raise ValueError(
            f"The {name} dataloader has no batches: the dataset is smaller than one batch and drop_last=True."
            " Use a smaller batch size or drop_last=False."
        )


def dataloader_kwargs(
    batch_size: int, defaults: dict[str, Any], given: dict[str, Any] | None
) -> dict[str, Any]:
    """A DataLoader's keyword arguments: the user's ``given`` ones over the trainer's ``defaults`` and
    ``batch_size``. A given ``sampler`` decides the order, a given ``batch_sampler`` the order and the
    batch size: the defaults torch would reject next to them ("mutually exclusive") are left out. A given
    ``batch_size`` other than ``batch_size`` is refused: the run's settings are sized from ``batch_size``."""
    given = dict(given or {})
    _check_one_batch_size(batch_size, given.get("batch_size", batch_size))
    kwargs = {**defaults, "batch_size": batch_size}
    if given.get("batch_sampler") is not None:
        del kwargs["batch_size"]
        kwargs.pop("shuffle", None)
    elif given.get("sampler") is not None:
        kwargs.pop("shuffle", None)
    return {**kwargs, **given}


def _check_one_batch_size(batch_size: int, given) -> None:
    # None is torch's "no batching" (a dataset that yields whole batches), not another size
    if given is not None and given != batch_size:
        raise ValueError(
            f"The dataloader keyword arguments set batch_size={given!r}, and per_device_batch_size is"
            f" {batch_size}: the run's settings (trainer.run_config, what trackers log,"
            f" TrainerPlaceholderValues) are sized from per_device_batch_size, so they would say {batch_size}"
            f" while batches of {given!r} are loaded. Pass per_device_batch_size={given!r} instead, and leave"
            " batch_size out of the dataloader keyword arguments."
        )


def no_targets_error(batch) -> ValueError:
    """The error for a loss function that failed on a batch without targets (inputs only)."""
    if isinstance(batch, Mapping):
        what = f"dicts without a 'labels' key (their keys: {sorted(batch)})"
        fix = "Put the targets under 'labels'"
    else:
        what = "tensors" if isinstance(batch, torch.Tensor) else f"{type(batch).__name__}s of one item"
        what += " (the inputs only, as a TensorDataset(inputs) gives)"
        fix = "Give the dataset targets: TensorDataset(inputs, targets), or (inputs, target) from __getitem__"
    return ValueError(
        f"The batches have no targets: they are {what}, so the loss function was called as "
        f"loss_func(model_outputs, None) and failed. {fix}; or pass loss_func=None to a Trainer whose model "
        "returns its own loss, or override calculate_train_batch_loss / calculate_eval_batch_loss."
    )


def check_sampler_not_sharded_twice(dataloader, num_processes: int, name: str) -> None:
    sampler = getattr(dataloader, "sampler", None)
    batch_sampler_source = getattr(getattr(dataloader, "batch_sampler", None), "sampler", None)
    if num_processes > 1 and any(isinstance(s, DistributedSampler) for s in (sampler, batch_sampler_source)):
        raise ValueError(
            f"The {name} dataloader has a DistributedSampler, but the trainer already shards every dataloader"
            " across processes (with accelerate): each process would see only 1/num_processes² of the data."
            " Pass a sampler over the whole dataset (or none)."
        )


_BATCH_OUTPUT_KEYS = ("loss", "model_outputs", "batch_size")
_BATCH_OUTPUT_KEY_SET = frozenset(_BATCH_OUTPUT_KEYS)


def check_batch_output(batch_output, hook_name: str, check_loss: bool, training: bool = True) -> None:
    """A ``calculate_*_batch_loss`` hook returned a dict with the keys the loop reads; with ``check_loss``
    (a run's first step), its loss is checked too."""
    # one comparison, every step
    if type(batch_output) is not dict or not batch_output.keys() >= _BATCH_OUTPUT_KEY_SET:
        _check_batch_output_mapping(batch_output, hook_name)
    if check_loss:
        check_batch_loss(batch_output, hook_name, training)


def _check_batch_output_mapping(batch_output, hook_name: str) -> None:
    if not isinstance(batch_output, Mapping) or any(key not in batch_output for key in _BATCH_OUTPUT_KEYS):
        found = sorted(batch_output) if isinstance(batch_output, Mapping) else type(batch_output).__name__
        raise TypeError(
            f"{hook_name} must return a dict with the keys {list(_BATCH_OUTPUT_KEYS)}; it returned {found}."
        )


def check_batch_loss(batch_output, hook_name: str, training: bool) -> None:
    """Run on a run's first step: the hook's ``loss`` is a scalar tensor (requiring grad in training)."""
    loss = batch_output["loss"]
    if not isinstance(loss, torch.Tensor):
        raise TypeError(
            f"{hook_name} returned a 'loss' of type {type(loss).__name__}; it must be the scalar tensor the "
            "loss function returned (no .item() or float())."
        )
    if loss.dim() != 0:
        raise ValueError(
            f"{hook_name} returned a 'loss' of shape {tuple(loss.shape)}; it must be a scalar tensor: reduce"
            " it (.mean() or .sum(), or a loss function with reduction='mean')."
        )
    if training and not loss.requires_grad:
        raise ValueError(
            f"{hook_name} returned a 'loss' that does not require grad, so backward cannot run: it was"
            " computed under torch.no_grad() or from detached tensors, or none of the model's parameters"
            " requires grad."
        )


def check_launched_as_asked(accelerator) -> None:
    """``accelerate launch --num_processes 2`` without ``--multi_gpu`` (or a config) starts one process,
    silently."""
    simple_launcher = (
        "ACCELERATE_USE_CPU" in os.environ and "MASTER_PORT" in os.environ and "WORLD_SIZE" not in os.environ
    )
    if simple_launcher and accelerator.num_processes == 1:
        raise RuntimeError(
            "accelerate launch was asked for several processes but started one: its default launcher starts"
            " several only with --multi_gpu (on CPUs too) or a config made with `accelerate config`. Run"
            " `accelerate launch --multi_gpu --num_processes 2 train.py` (add --cpu on a machine without"
            " GPUs), or `torchrun --nproc_per_node 2 train.py`."
        )


def check_mixed_precision_runs(accelerator) -> None:
    """accelerate runs fp16 on a CPU as fp32 without a word: say so instead."""
    if (
        accelerator.mixed_precision == "fp16"
        and not accelerator.native_amp
        and accelerator.distributed_type not in _OWN_MIXED_PRECISION
    ):
        raise ValueError(
            f"mixed_precision='fp16' cannot run on this {accelerator.device.type} device (accelerate would"
            " train in fp32 while reporting fp16): use mixed_precision='bf16', or 'no'."
        )
