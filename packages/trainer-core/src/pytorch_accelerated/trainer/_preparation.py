"""The model and optimizer prepared for the processes by accelerate: wrapped once per model (and
again under DDP after (un)freezing), and the torch optimizer the step may call directly."""

from __future__ import annotations

from typing import Callable

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType
from torch.nn.parallel import DistributedDataParallel


class ModelPreparation:
    """What the model was last wrapped as, so that it is wrapped again only when it must be."""

    def __init__(self):
        self.prepared_model: torch.nn.Module | None = None
        self.trainable_when_wrapped: frozenset[int] = frozenset()

    def wrap(self, accelerator: Accelerator, model: torch.nn.Module, optimizer, get_model: Callable[[], torch.nn.Module]):
        """``(model, optimizer)`` ready for distributed training; ``get_model()``: the model unwrapped."""
        if self.prepared_model is None or model is not self.prepared_model:
            model, optimizer = accelerator.prepare(model, optimizer, device_placement=_placement(accelerator, optimizer))
            self._remember(model)
        elif isinstance(model, DistributedDataParallel) and trainable_parameter_ids(model) != self.trainable_when_wrapped:
            # DDP reduces the gradients of only the parameters that were trainable when it wrapped
            # the model: after (un)freezing, wrap it again or the processes' weights drift apart.
            model = accelerator.prepare_model(get_model())
            self._remember(model)
        return model, optimizer

    def unwrapped(self, accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` without the wrappers of distribution and ``torch.compile``."""
        if self.prepared_model is None:
            # as the user gave it, at most compiled: accelerate's unwrap_model would search for deepspeed (~0.15 ms)
            return getattr(model, "_orig_mod", model)
        return accelerator.unwrap_model(model, keep_torch_compile=False)

    def _remember(self, model: torch.nn.Module) -> None:
        self.prepared_model = model
        self.trainable_when_wrapped = trainable_parameter_ids(model)


def _placement(accelerator: Accelerator, optimizer) -> list | None:
    """accelerate's device placement of (model, optimizer): the default, except that an optimizer without
    state has nothing to move, so accelerate's state_dict/load_state_dict round trip (~0.1 ms) is skipped."""
    if optimizer.state or accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
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
        and accelerator.distributed_type not in (DistributedType.XLA, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
    )


def trainable_parameter_ids(model: torch.nn.Module) -> frozenset[int]:
    return frozenset(id(parameter) for parameter in model.parameters() if parameter.requires_grad)
