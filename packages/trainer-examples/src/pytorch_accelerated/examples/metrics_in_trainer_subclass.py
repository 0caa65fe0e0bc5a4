"""Metrics in a Trainer subclass: update torchmetrics in the evaluation hook, record them at the epoch's end.

    python -m pytorch_accelerated.examples.metrics_in_trainer_subclass --num-epochs 5

The same metrics as ``metrics_in_callback``, written into the loop instead: override
``calculate_eval_batch_loss`` to update them with each batch's outputs, and ``eval_epoch_end``
to compute, record (as ``eval_<name>``) and reset them with trainer-metrics' ``record_metrics``.
With the same seed, both examples record the same values.
"""

from __future__ import annotations


import torchmetrics
from torch import nn, optim

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import NUM_CLASSES, DigitsMLP, load_digits_datasets
from pytorch_accelerated.metrics import record_metrics
from pytorch_accelerated.trainer import Trainer, seed_everything


class TrainerWithMetrics(Trainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_metrics = torchmetrics.MetricCollection(
            {
                "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=NUM_CLASSES),
                "f1": torchmetrics.F1Score(task="multiclass", num_classes=NUM_CLASSES, average="macro"),
            }
        ).to(self.device)

    def calculate_eval_batch_loss(self, batch):
        batch_output = super().calculate_eval_batch_loss(batch)
        self.eval_metrics.update(batch_output["model_outputs"], batch[1])
        return batch_output

    def eval_epoch_end(self):
        # computes (synchronising the processes' states once), records eval_accuracy and eval_f1, resets
        record_metrics(self.run_history, self.eval_metrics, prefix="eval_")


def main(argv=None) -> dict[str, list[float]]:
    """Train, and return the recorded metrics by name: one value per epoch."""
    parser = example_parser("metrics_in_trainer_subclass", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--num-epochs", type=int, default=5, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    model = DigitsMLP()

    trainer = TrainerWithMetrics(
        model, loss_func=nn.CrossEntropyLoss(), optimizer=optim.Adam(model.parameters(), lr=1e-3)
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
