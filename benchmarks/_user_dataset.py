"""A user's own map-style ``Dataset``, the most common kind of training data: ``__getitem__`` returns
``(x[i], y[i])``, one sample at a time, perhaps flipped at random. The benchmarks run it beside the
``TensorDataset`` rows; it declares nothing to the Trainer (a user's dataset does not), so the
Trainer fetches it as it fetches any dataset of its kind. Imports nothing but torch and NumPy:
it runs in pytorch-accelerated's environment too.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

AUGMENTS = (None, "torch", "numpy", "python")  # the generator the random flip draws from


class UserDataset(Dataset):
    """Two tensors read one sample at a time; with ``augment``, each sample is flipped (its last
    dimension reversed) with probability 1/2, drawn from that generator: "torch", "numpy" or "python"."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, augment: str | None = None):
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, not {augment!r}")
        self.inputs, self.targets, self.augment = inputs, targets, augment

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        x = self.inputs[index]
        if self.augment is not None and _heads(self.augment):
            x = x.flip(-1)
        return x, self.targets[index]


def _heads(generator: str) -> bool:
    if generator == "torch":
        return bool(torch.rand(()) < 0.5)
    if generator == "numpy":
        return bool(np.random.rand() < 0.5)
    return random.random() < 0.5


def user_dataset(dataset: TensorDataset, augment: str | None = None) -> UserDataset:
    """The samples of ``dataset`` (inputs, targets) through :class:`UserDataset`."""
    return UserDataset(*dataset.tensors, augment=augment)
