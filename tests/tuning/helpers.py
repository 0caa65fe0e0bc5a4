"""Small building blocks shared by the tuning tests."""

import torch

from tests.core.helpers import make_trainer


def make_adam_trainer(model: torch.nn.Module, lr: float):
    """A Trainer of ``model`` with Adam at ``lr`` and no callbacks: the tools must leave Adam's state as it
    was.

    Args:
        model: the model to tune for.
        lr: Adam's learning rate.
    """
    return make_trainer(model=model, lr=lr, optimizer_class=torch.optim.Adam)
