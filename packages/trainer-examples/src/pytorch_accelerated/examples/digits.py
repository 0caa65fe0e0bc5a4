"""The data and the model that the offline examples share.

- :func:`load_digits_datasets`: the 1,797 handwritten digits that ship inside scikit-learn
  (``sklearn.datasets.load_digits``: 8x8 grey images, no download), split into training,
  validation and test sets.
- :class:`DigitsMLP`: the seed README's MNIST MLP, with its input size adapted from 28x28 to 8x8.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, TensorDataset, random_split

__all__ = ["DigitsMLP", "load_digits_datasets", "NUM_CLASSES"]

NUM_CLASSES = 10


class DigitsMLP(nn.Module):
    """The seed's MLP (784 -> 128 -> 64 -> 10), taking 1x8x8 images: 64 inputs."""

    def __init__(self, image_size: int = 8):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(in_features=image_size * image_size, out_features=128),
            nn.ReLU(),
            nn.Linear(in_features=128, out_features=64),
            nn.ReLU(),
            nn.Linear(in_features=64, out_features=NUM_CLASSES),
        )

    def forward(self, input):
        return self.main(input.view(input.shape[0], -1))


def load_digits_datasets(
    split_seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> tuple[Dataset, Dataset, Dataset]:
    """scikit-learn's digits as ``(train, validation, test)`` datasets of ``(image, label)``:
    images are float 1x8x8 tensors scaled to [0, 1], labels are int64 class indices.

    The split is the same for the same ``split_seed``, whatever the global random state.
    """
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    return tuple(random_split(TensorDataset(images, labels), fractions, generator=torch.Generator().manual_seed(split_seed)))
