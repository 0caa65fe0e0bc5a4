"""The quickstart: an MLP trained on MNIST, the seed README's example.

The same code runs on a CPU, a GPU, or several of either::

    pip install "trainer-examples[vision]"
    python -m pytorch_accelerated.examples.mnist_quickstart              # downloads MNIST into --data-dir
    torchrun --nproc_per_node 2 -m pytorch_accelerated.examples.mnist_quickstart
    accelerate launch -m pytorch_accelerated.examples.mnist_quickstart   # with your `accelerate config`

``--fake-data`` trains on random 28x28 images instead (``torchvision.datasets.FakeData``), for a
run without a download: ``--fake-data --num-epochs 1 --max-steps 3`` takes seconds.
"""

from __future__ import annotations

import os

import torch
from torch import nn, optim
from torchvision import datasets, transforms

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.trainer import Trainer


class MNISTModel(nn.Module):
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


def load_dataset(args) -> torch.utils.data.Dataset:
    if args.fake_data:
        return datasets.FakeData(
            size=args.fake_data_size, image_size=(1, 28, 28), num_classes=10, transform=transforms.ToTensor()
        )
    return datasets.MNIST(args.data_dir, train=True, download=True, transform=transforms.ToTensor())


def main(argv=None):
    parser = example_parser("mnist_quickstart", __doc__, "--fake-data --num-epochs 1 --max-steps 3")
    parser.add_argument("--data-dir", default=os.getcwd(), help="where MNIST is downloaded")
    parser.add_argument(
        "--fake-data", action="store_true", help="random images instead of MNIST (no download)"
    )
    parser.add_argument("--fake-data-size", type=int, default=1200, help="images, with --fake-data")
    parser.add_argument("--num-epochs", type=int, default=8, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    args = parser.parse_args(argv)

    dataset = load_dataset(args)
    # MNIST's 60,000 training images: 50,000 to train on, 5,000 to validate, 5,000 to test. A seeded
    # generator gives every process the same split when the script runs on several processes.
    train_dataset, validation_dataset, test_dataset = torch.utils.data.random_split(
        dataset, [5 / 6, 1 / 12, 1 / 12], generator=torch.Generator().manual_seed(42)
    )
    model = MNISTModel()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()

    trainer = Trainer(model, loss_func=loss_func, optimizer=optimizer)
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        num_epochs=args.num_epochs,
        max_num_train_steps=args.max_steps,
        per_device_batch_size=args.batch_size,
    )
    test_metrics = trainer.evaluate(dataset=test_dataset, per_device_batch_size=64)
    trainer.print(f"test loss: {test_metrics['eval_loss']:.4f}")
    return test_metrics


if __name__ == "__main__":
    main()
