"""The data, the model and the learning-rate schedule that the offline examples share.

- :func:`load_digits_datasets`: the 1,797 handwritten digits that ship inside scikit-learn
  (``sklearn.datasets.load_digits``: 8x8 grey images, no download), split into training,
  validation and test sets.
- :class:`DigitsMLP`: the seed README's MNIST MLP, with its input size adapted from 28x28 to 8x8.
- :func:`cosine_with_warmup`: trainer-callbacks' ``CosineLrScheduler`` with a warmup sized from the
  run, so that a run of any length (``--max-steps 5`` included) warms up and then decays.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import Dataset, TensorDataset, random_split

from pytorch_accelerated.schedulers import CosineLrScheduler

__all__ = ["DigitsMLP", "load_digits_datasets", "cosine_with_warmup", "NUM_CLASSES"]

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
    return tuple(
        random_split(
            TensorDataset(images, labels), fractions, generator=torch.Generator().manual_seed(split_seed)
        )
    )


def cosine_with_warmup(
    optimizer,
    *,
    num_epochs: int,
    num_update_steps_per_epoch: int,
    num_training_steps: int,
    warmup_epochs: float | None = None,
    warmup_fraction: float = 0.1,
    min_lr_ratio: float = 0.01,
) -> CosineLrScheduler:
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the peak, ending with the run's last
    update. The warmup lasts ``warmup_epochs`` when given, else ``warmup_fraction`` of the run's
    updates (at least one). Pass the run's sizes as ``TrainerPlaceholderValues`` in a
    ``functools.partial``: the Trainer fills them in when training starts.
    """
    if warmup_epochs is None:
        warmup_epochs = warmup_fraction * num_training_steps / num_update_steps_per_epoch
    return CosineLrScheduler(
        optimizer,
        total_num_epochs=num_epochs,
        num_update_steps_per_epoch=num_update_steps_per_epoch,
        total_steps=num_training_steps,
        num_warmup_epochs=warmup_epochs,
        min_lr_ratio=min_lr_ratio,
    )
