"""Gradient accumulation, gradient clipping and a learning-rate schedule sized by placeholders.

    python -m pytorch_accelerated.examples.accumulation_clipping_scheduler --num-epochs 6
    # seconds
    python -m pytorch_accelerated.examples.accumulation_clipping_scheduler --num-epochs 1 --max-steps 5

Three arguments of ``Trainer.train``:

- ``gradient_accumulation_steps=4``: one optimizer update per 4 batches of 16, which learns like
  batches of 64; the logged loss is still the true loss;
- ``gradient_clip_norm=1.0``: once per update, before the optimizer steps;
- ``create_scheduler_fn``: a cosine schedule with linear warmup (``CosineLrScheduler``, from
  trainer-callbacks) whose length is not known when you write the script: it depends on the
  dataset, the batch size, the accumulation, the number of processes and ``max_num_train_steps``.
  ``TrainerPlaceholderValues`` stand for those numbers and the Trainer fills them in when training
  starts, so the schedule ends exactly with the run, and the warmup is a tenth of it
  (``--warmup-fraction``) unless you give it in epochs (``--warmup-epochs``). The scheduler steps
  once per update.

``LearningRateMonitorCallback`` records the learning rate of every update, to see the schedule.
"""

from __future__ import annotations

import functools

from torch import nn, optim

from pytorch_accelerated.callbacks import DEFAULT_CALLBACKS, LearningRateMonitorCallback
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import DigitsMLP, cosine_with_warmup, load_digits_datasets
from pytorch_accelerated.trainer import Trainer, TrainerPlaceholderValues, seed_everything


def main(argv=None) -> dict:
    """Train; returns the trainer and the learning rate of each optimizer update."""
    parser = example_parser("accumulation_clipping_scheduler", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--num-epochs", type=int, default=6, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument(
        "--warmup-fraction", type=float, default=0.1, help="the run's updates spent in linear warmup"
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=None,
        help="epochs of linear warmup, instead (may be fractional)",
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="the peak learning rate")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    model = DigitsMLP()

    create_scheduler_fn = functools.partial(
        cosine_with_warmup,
        num_epochs=TrainerPlaceholderValues.NUM_EPOCHS,
        num_update_steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
        num_training_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,  # max_num_train_steps included
        warmup_epochs=args.warmup_epochs,
        warmup_fraction=args.warmup_fraction,
        min_lr_ratio=0.01,
    )
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.AdamW(model.parameters(), lr=args.lr),
        callbacks=(*DEFAULT_CALLBACKS, LearningRateMonitorCallback()),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=16,
        gradient_accumulation_steps=4,
        gradient_clip_norm=1.0,
        create_scheduler_fn=create_scheduler_fn,
        max_num_train_steps=args.max_steps,
    )

    config = trainer.run_config
    trainer.print(
        f"{trainer.completed_update_steps} updates of {config.train_per_device_batch_size} x "
        f"{config.gradient_accumulation_steps} x {config.num_processes} samples; "
        f"warmup: {trainer.scheduler.num_warmup_steps} updates"
    )
    return {"trainer": trainer, "learning_rates": trainer.run_history.get_metric_values("lr")}


if __name__ == "__main__":
    main()
