"""``pytorch_accelerated.utils`` as pytorch-accelerated 0.1.61 had it: the helpers that keep their
meaning are here; each name that is not kept raises an ImportError naming its successor
(MIGRATING.md lists them all)."""

from __future__ import annotations

import functools
import itertools
import random

import numpy as np
import torch
from accelerate.state import PartialState

__all__ = [
    "local_process_zero_only",
    "local_process_zero_first",
    "world_process_zero_only",
    "worker_init_fn",
    "remove_padding",
    "DataLoaderSlice",
]

_NOT_KEPT = {
    "ModelEma": (
        "keep an average of the weights with ModelEmaCallback(decay=...) from pytorch_accelerated.callbacks"
        " (trainer-callbacks), or torch.optim.swa_utils.AveragedModel(model,"
        " multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay)) and its update_parameters(model)"
    ),
    "LimitBatches": (
        "the PT_ACC_LIMIT_BATCHES variable is not read: pass callbacks=(*DEFAULT_CALLBACKS,"
        " LimitBatchesCallback(num_batches)) (pytorch_accelerated.callbacks) to the Trainer"
    ),
    "LIMIT_BATCHES_ENV_VAR": (
        "the PT_ACC_LIMIT_BATCHES variable is not read: pass "
        "LimitBatchesCallback(num_batches) (pytorch_accelerated.callbacks) in the Trainer's callbacks"
    ),
}


def __getattr__(name: str):
    if name in _NOT_KEPT:
        raise ImportError(
            f"pytorch_accelerated.utils.{name} (pytorch-accelerated 0.1.61) is not kept: {_NOT_KEPT[name]}. "
            "See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _run_on(process_is_chosen: bool, func, args, kwargs):
    result = func(*args, **kwargs) if process_is_chosen else None
    PartialState().wait_for_everyone()
    return result


def local_process_zero_only(func):
    """Run ``func`` on each node's main process only; every process then waits for the others."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return _run_on(PartialState().local_process_index == 0, func, args, kwargs)

    return wrapper


def world_process_zero_only(func):
    """Run ``func`` on the main process only; every process then waits for the others."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return _run_on(PartialState().process_index == 0, func, args, kwargs)

    return wrapper


def local_process_zero_first(func):
    """Run ``func`` on each node's main process first (a download, say), then on the others."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with PartialState().local_main_process_first():
            return func(*args, **kwargs)

    return wrapper


def worker_init_fn(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn`` giving each worker distinct NumPy and ``random`` seeds,
    drawn from the seed torch gave the worker (which already differs per worker and per epoch).

    0.1.61's version re-seeded torch from the OS instead, so its workers' draws could not be
    reproduced; this one keeps torch's seed and seeds what torch does not.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def remove_padding(padded_tensor: torch.Tensor, pad_value) -> torch.Tensor:
    """The rows of ``padded_tensor`` (along the first dimension) that are not entirely ``pad_value``."""
    is_padding = padded_tensor == pad_value
    while is_padding.ndim > 1:
        is_padding = is_padding.all(dim=-1)
    return padded_tensor[~is_padding]


class DataLoaderSlice:
    """The first ``slice_size`` batches of a dataloader. With the Trainer, prefer
    ``LimitBatchesCallback(num_batches)`` (pytorch_accelerated.callbacks)."""

    def __init__(self, dl, slice_size: int):
        self.dl = dl
        self.slice_size = slice_size

    def __iter__(self):
        return itertools.islice(self.dl, self.slice_size)

    def __len__(self) -> int:
        return self.slice_size
