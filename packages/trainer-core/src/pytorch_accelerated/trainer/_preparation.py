"""The model and optimizer prepared for the processes by accelerate: wrapped once per model (and
again under DDP after (un)freezing; sharded under FSDP; a DeepSpeed engine configured with the run's
sizes), and the torch optimizer the step may call directly."""

from __future__ import annotations

from types import MethodType
from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType, convert_outputs_to_fp32
from torch.nn.parallel import DistributedDataParallel

from . import _sharding


class ModelPreparation:
    """What the model was last wrapped as, so that it is wrapped again only when it must be."""

    def __init__(self):
        self.prepared_model: torch.nn.Module | None = None
        self.trainable_when_wrapped: frozenset[int] = frozenset()

    def wrap(
        self,
        accelerator: Accelerator,
        model: torch.nn.Module,
        optimizer,
        get_model: Callable[[], torch.nn.Module],
    ):
        """``(model, optimizer)`` ready for distributed training; ``get_model()``: the model unwrapped."""
        if self.prepared_model is None or model is not self.prepared_model:
            model, optimizer = accelerator.prepare(
                model, optimizer, device_placement=_placement(accelerator, optimizer)
            )
            if accelerator.is_fsdp2 and accelerator.mixed_precision in ("bf16", "fp16"):
                _return_fp32_outputs(model)
            self._remember(model)
        elif (
            isinstance(model, DistributedDataParallel)
            and trainable_parameter_ids(model) != self.trainable_when_wrapped
        ):
            # DDP reduces the gradients of only the parameters that were trainable when it wrapped
            # the model: after (un)freezing, wrap it again or the processes' weights drift apart.
            model = accelerator.prepare_model(get_model())
            self._remember(model)
        return model, optimizer

    def configure_engine(self, accelerator: Accelerator, run_settings: tuple | None) -> None:
        """A DeepSpeed engine's config filled before it is made, from a training run's
        ``(per_device_batch_size, gradient_accumulation_steps, gradient_clip_norm)`` (``None``: evaluate or
        predict before any run). Once made, its clipping is fixed: a run asking for another is refused
        (DeepSpeed clips inside its step)."""
        batch_size, accumulation_steps, clip_norm = run_settings or (1, 1, None)
        if self.prepared_model is None:
            _sharding.fill_deepspeed_config(accelerator, batch_size, accumulation_steps, clip_norm)
            return
        fixed = accelerator.deepspeed_config.get("gradient_clipping", 0.0)
        if run_settings is not None and float(fixed) != float(clip_norm or 0.0):
            raise ValueError(
                f"The DeepSpeed engine was made with gradient_clipping={fixed} (by an earlier train(), "
                "evaluate() or predict() of this Trainer), and DeepSpeed cannot change it: this run asks for "
                f"gradient_clip_norm={clip_norm}. Create a new Trainer for it."
            )

    def unwrapped(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` without the wrappers of distribution and ``torch.compile``."""
        if self.prepared_model is None:
            # as the user gave it, at most compiled: accelerate's unwrap_model would search for deepspeed
            # (~0.15 ms)
            return getattr(model, "_orig_mod", model)
        return accelerator.unwrap_model(model, keep_torch_compile=False)

    def _remember(self, model: torch.nn.Module) -> None:
        self.prepared_model = model
        self.trainable_when_wrapped = trainable_parameter_ids(model)


def _return_fp32_outputs(model: torch.nn.Module) -> None:
    """FSDP2 returns its outputs in the low precision it computes in; DDP under autocast returns them in fp32
    (accelerate's wrapper, reused here), and the loss and metrics are computed from them: as DDP, then."""
    function = getattr(model.forward, "__func__", None)
    if function is None:
        model.forward = convert_outputs_to_fp32(model.forward)
    else:
        model.forward = MethodType(convert_outputs_to_fp32(function), model)


def _placement(accelerator: Accelerator, optimizer) -> list | None:
    """accelerate's device placement of (model, optimizer): the default, except that an optimizer without
    state has nothing to move, so accelerate's state_dict/load_state_dict round trip (~0.1 ms) is skipped."""
    if optimizer.state or accelerator.distributed_type in (
        DistributedType.DEEPSPEED,
        DistributedType.MEGATRON_LM,
    ):
        return None  # DeepSpeed and Megatron-LM refuse a placement list
    return [None, False]


def plain_optimizer_calls(accelerator: Accelerator, optimizer) -> bool:
    """Whether the step may call torch's optimizer (and ``loss.backward()``) directly.

    Without a grad scaler, XLA, DeepSpeed or Megatron, accelerate's backward and optimizer
    wrapper only forward to torch, but first search for an optional package or inspect a
    signature on every call (0.1-0.25 ms each): call torch directly then."""
    return (
        isinstance(optimizer, AcceleratedOptimizer)
        and accelerator.scaler is None
        and accelerator.distributed_type
        not in (
            DistributedType.XLA,
            DistributedType.DEEPSPEED,
            DistributedType.MEGATRON_LM,
        )
    )


def trainable_parameter_ids(model: torch.nn.Module) -> frozenset[int]:
    return frozenset(id(parameter) for parameter in model.parameters() if parameter.requires_grad)
