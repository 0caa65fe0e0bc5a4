"""Keeping a module in eval mode while the rest of the model is switched to training mode.

The Trainer calls ``model.train()`` at the start of every epoch, and ``nn.Module.train`` calls
``train`` on each child. An instance attribute ``train`` shadows the class's method in that call, so
a kept module can stay in eval mode while passing the requested mode on to its children (each of
which decides for itself). Unlike a forward pre-hook, ``module.training`` is always accurate.
"""

from __future__ import annotations

from torch import nn


class _TrainKeepingEval:
    """Stands in for a module's ``train`` method: the children get the requested mode, the module
    itself stays in eval mode. A plain object (not a closure), so the model can still be copied and
    pickled."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        type(self.module).train(self.module, mode)
        self.module.training = False
        return self.module


def keep_in_eval_mode(module: nn.Module) -> None:
    """Put ``module`` (not its children) in eval mode and keep it there through ``model.train()``."""
    if not is_kept_in_eval_mode(module):
        module.train = _TrainKeepingEval(module)
    module.training = False


def release_eval_mode(module: nn.Module, mode: bool) -> None:
    """Let ``module`` follow ``train()`` again, and set it (not its children) to ``mode`` now."""
    if is_kept_in_eval_mode(module):
        del module.__dict__["train"]
        module.training = mode


def is_kept_in_eval_mode(module: nn.Module) -> bool:
    """Whether :func:`keep_in_eval_mode` holds ``module`` in eval mode."""
    return isinstance(module.__dict__.get("train"), _TrainKeepingEval)
