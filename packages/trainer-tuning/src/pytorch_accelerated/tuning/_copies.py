"""Copies of a trainer's model and optimizer, and the random generators' states, for tools that
try things on a trainer's training state and must leave it exactly as it was."""

from __future__ import annotations

import copy
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from pytorch_accelerated.trainer import Trainer


def torch_optimizer(trainer: Trainer) -> torch.optim.Optimizer:
    """The torch optimizer, without accelerate's wrapper (``AcceleratedOptimizer.optimizer``)."""
    return getattr(trainer.optimizer, "optimizer", trainer.optimizer)


def optimizer_over(
    optimizer: torch.optim.Optimizer, original: torch.nn.Module, model: torch.nn.Module
) -> torch.optim.Optimizer:
    """A new optimizer of the same class and state as ``optimizer`` (which optimizes ``original``'s
    parameters) over the matching parameters of ``model`` (the same parameters, or a deep copy).
    The state is deep-copied: stepping the new optimizer never changes the original's."""
    matching = {id(mine): theirs for mine, theirs in zip(original.parameters(), model.parameters())}
    foreign = sum(id(p) not in matching for group in optimizer.param_groups for p in group["params"])
    if foreign:
        raise ValueError(
            f"The optimizer holds {foreign} parameter(s) that are not the model's (a loss function's or"
            " another module's): the tuning tools copy and train the model only. Make them part of the model"
            " (an attribute of it), or run the tool with an optimizer over model.parameters() alone."
        )
    groups = [
        {
            **{key: value for key, value in group.items() if key != "params"},
            "params": [matching[id(p)] for p in group["params"]],
        }
        for group in optimizer.param_groups
    ]
    try:
        new = type(optimizer)(groups, **optimizer.defaults)
    except TypeError:  # an optimizer whose defaults are not all constructor arguments
        new = type(optimizer)(groups)
    new.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return new


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Python's, numpy's and torch's (CPU and every CUDA device's) generators are put back as they
    were when the block exits, however it exits."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
