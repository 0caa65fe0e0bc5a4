"""Metrics in a callback: trainer-metrics' MetricsCallback records torchmetrics values once per epoch.

    python -m pytorch_accelerated.examples.metrics_in_callback --num-epochs 5

Give the callback a dict of torchmetrics metrics: it updates them on every evaluation step
(``on_train=True``: on training steps too), computes them at the end of the epoch and records
them in the run history as ``eval_<name>``, exact over the whole dataset on any number of
processes. No change to the Trainer; compare ``metrics_in_trainer_subclass``.
"""

from __future__ import annotations


import torchmetrics
from torch import nn, optim

from pytorch_accelerated.callbacks import DEFAULT_CALLBACKS
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import NUM_CLASSES, DigitsMLP, load_digits_datasets
from pytorch_accelerated.metrics import MetricsCallback
from pytorch_accelerated.trainer import Trainer, seed_everything


def main(argv=None) -> dict[str, list[float]]:
    """Train, and return the recorded metrics by name: one value per epoch."""
    parser = example_parser("metrics_in_callback", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--num-epochs", type=int, default=5, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    model = DigitsMLP()

    metrics = MetricsCallback(
        {
            "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=NUM_CLASSES),
            "f1": torchmetrics.F1Score(task="multiclass", num_classes=NUM_CLASSES, average="macro"),
        }
    )
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.Adam(model.parameters(), lr=1e-3),
        callbacks=(*DEFAULT_CALLBACKS, metrics),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=32,
        max_num_train_steps=args.max_steps,
    )

    history = trainer.run_history
    return {name: history.get_metric_values(name) for name in ("eval_loss_epoch", "eval_accuracy", "eval_f1")}


if __name__ == "__main__":
    main()
