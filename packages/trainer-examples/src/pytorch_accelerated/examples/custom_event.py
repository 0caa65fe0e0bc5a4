"""A custom callback event, fired from an overridden hook.

    python -m pytorch_accelerated.examples.custom_event --num-epochs 5

The Trainer subclass overrides ``calculate_eval_batch_loss`` to fire a new event,
``on_eval_predictions``, with each batch's predicted and true labels:
``self.callback_handler.call_event(name, self, **data)`` calls the event on every callback that
defines it, and on no other. Here one callback listens: it counts the validation mistakes per
class on the device, sums them over the processes once per epoch, and records the total as
``eval_num_mistakes``. The subclass declares the event in ``custom_events``, so that the Trainer
does not report ``on_eval_predictions`` as a misspelled event name.
"""

from __future__ import annotations


import torch
from torch import nn, optim

from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import NUM_CLASSES, DigitsMLP, load_digits_datasets
from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer, TrainerCallback, seed_everything


class TrainerWithPredictionEvents(Trainer):
    custom_events = ("on_eval_predictions",)  # declared: a callback handling it is not a misspelling

    def calculate_eval_batch_loss(self, batch):
        batch_output = super().calculate_eval_batch_loss(batch)
        self.callback_handler.call_event(
            "on_eval_predictions",
            self,
            predictions=batch_output["model_outputs"].argmax(dim=1),
            targets=batch[1],
        )
        return batch_output


class MistakesPerClassCallback(TrainerCallback):
    """Counts the validation mistakes per true class, from the ``on_eval_predictions`` event."""

    def __init__(self):
        self.mistakes_per_epoch: list[list[int]] = []  # one list of per-class counts per evaluation

    def on_eval_epoch_start(self, trainer, **kwargs):
        self.mistakes = torch.zeros(NUM_CLASSES, dtype=torch.int64, device=trainer.device)

    def on_eval_predictions(self, trainer, predictions, targets, **kwargs):
        # stays on the device: nothing is read back per step
        self.mistakes += torch.bincount(targets[predictions != targets], minlength=NUM_CLASSES)

    def on_eval_epoch_end(self, trainer, **kwargs):
        mistakes = trainer.reduce(self.mistakes).tolist()  # every process's share, summed
        self.mistakes_per_epoch.append(mistakes)
        trainer.run_history.update_metric("eval_num_mistakes", sum(mistakes))


def main(argv=None) -> dict:
    """Train; returns the trainer and the mistakes per class counted at each evaluation."""
    parser = example_parser("custom_event", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--num-epochs", type=int, default=5, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    model = DigitsMLP()

    mistakes = MistakesPerClassCallback()
    trainer = TrainerWithPredictionEvents(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.Adam(model.parameters(), lr=1e-3),
        callbacks=(*DEFAULT_CALLBACKS, mistakes),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=32,
        max_num_train_steps=args.max_steps,
    )
    trainer.print(f"validation mistakes per class, last epoch: {mistakes.mistakes_per_epoch[-1]}")
    return {"trainer": trainer, "mistakes_per_epoch": mistakes.mistakes_per_epoch}


if __name__ == "__main__":
    main()
