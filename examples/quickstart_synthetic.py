"""The seed's MNIST quickstart, trained offline on synthetic digit-shaped data.

Run with only trainer-core installed::

    python examples/quickstart_synthetic.py            # one process
    accelerate launch --multi_gpu --num_processes 2 examples/quickstart_synthetic.py   # also on CPUs
    torchrun --nproc_per_node 2 examples/quickstart_synthetic.py

The data are 28x28 images of ten random class prototypes plus noise, so the MLP has
something to learn and the run needs no download.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn, optim
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import Trainer, seed_everything


class MNISTModel(nn.Module):
    """The seed README's MLP for 28x28 digits."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(in_features=784, out_features=128),
            nn.ReLU(),
            nn.Linear(in_features=128, out_features=64),
            nn.ReLU(),
            nn.Linear(in_features=64, out_features=10),
        )

    def forward(self, input):
        return self.main(input.view(input.shape[0], -1))


def make_synthetic_digits(num_samples: int, seed: int) -> TensorDataset:
    """Noisy copies of ten fixed 1x28x28 prototypes, one per class."""
    prototypes = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    images = prototypes[labels] + 1.5 * torch.randn(num_samples, 1, 28, 28, generator=generator)
    return TensorDataset(images, labels)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--num-train-samples", type=int, default=6000)
    args = parser.parse_args(argv)

    seed_everything(42)
    train_dataset = make_synthetic_digits(args.num_train_samples, seed=1)
    eval_dataset = make_synthetic_digits(args.num_train_samples // 6, seed=2)

    model = MNISTModel()
    trainer = Trainer(
        model, loss_func=nn.CrossEntropyLoss(), optimizer=optim.Adam(model.parameters(), lr=1e-3)
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=32,
    )

    predictions = trainer.predict(eval_dataset, per_device_batch_size=256).argmax(dim=1)
    accuracy = (predictions == eval_dataset.tensors[1]).float().mean().item()
    trainer.print(f"eval accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
