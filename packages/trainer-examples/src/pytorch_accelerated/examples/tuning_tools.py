"""The tuning tools of trainer-tuning: the learning-rate finder, then a run at its suggestion; the
batch-size finder on a GPU.

    python -m pytorch_accelerated.examples.tuning_tools --plot lr_finder.png

``find_lr`` runs the range test on a copy of the trainer's model and optimizer, so the trainer
trains afterwards exactly as it would have without it, and suggests the lr of the steepest descent
of the smoothed loss. ``find_batch_size`` finds the largest per-device batch that fits in CUDA
memory (on a CPU it says it is not supported, and the example keeps its batch size).
"""

from __future__ import annotations


from torch import nn, optim

from pytorch_accelerated.callbacks import DEFAULT_CALLBACKS
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import DigitsMLP, load_digits_datasets
from pytorch_accelerated.trainer import Trainer, seed_everything
from pytorch_accelerated.tuning import find_batch_size, find_lr


def main(argv=None) -> dict:
    """Find the lr (and, on a GPU, the batch size), then train; returns the trainer and the range test."""
    parser = example_parser("tuning_tools", __doc__, "--num-epochs 1 --max-steps 5 --lr-finder-steps 20")
    parser.add_argument("--num-epochs", type=int, default=5, help="epochs of the run at the suggested lr")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument(
        "--lr-finder-steps", type=int, default=100, help="steps of the learning-rate range test"
    )
    parser.add_argument("--plot", default=None, help="save the range test's plot here (a PNG)")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)

    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    model = DigitsMLP()
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.AdamW(model.parameters(), lr=1e-3),
        callbacks=DEFAULT_CALLBACKS,
    )

    result = find_lr(
        trainer,
        train_dataset,
        start_lr=1e-6,
        end_lr=1.0,
        num_steps=args.lr_finder_steps,
        per_device_batch_size=32,
        plot_path=args.plot,
    )
    lr = result.suggestion if result.suggestion is not None else 1e-3
    trainer.print(
        f"find_lr: {len(result.lrs)} updates, suggested lr {lr:.2e}"
        + (f", plot in {args.plot}" if args.plot else "")
    )
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr

    batch_size = 32
    if trainer.device.type == "cuda":
        batch_size = min(find_batch_size(trainer, train_dataset, max_batch_size=512), 512)
    else:
        trainer.print(
            f"find_batch_size: not supported on {trainer.device.type.upper()}; batch size {batch_size}"
        )

    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=batch_size,
        max_num_train_steps=args.max_steps,
    )
    return {"trainer": trainer, "lr_finder": result, "batch_size": batch_size}


if __name__ == "__main__":
    main()
