"""Resumable training: stop it at any time and run the same command again to continue exactly.

    python -m pytorch_accelerated.examples.resumable --run-dir runs/resumable
    # press Ctrl-C (or let the job scheduler send SIGTERM), then run the same command again
    torchrun --nproc_per_node 2 -m pytorch_accelerated.examples.resumable --run-dir runs/resumable-ddp
    # seconds
    python -m pytorch_accelerated.examples.resumable --run-dir runs/tiny --num-epochs 1 --max-steps 5

The seed's MLP learns scikit-learn's digits (offline) under a cosine schedule whose warmup is a
tenth of the run. The run
folder holds ``states/`` (training states: one when the run starts, one every ``--save-every``
updates and one per epoch, the newest three kept) and ``metrics.csv`` (one row per epoch). On
Ctrl-C or SIGTERM the run saves a state at the next update and stops; run it again and it
continues from the newest complete state, also after a crash or a ``kill -9``. The weights, the
schedule, the metrics and ``metrics.csv`` end exactly as those of a run that was never stopped.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torchmetrics
from torch import nn, optim

from pytorch_accelerated.callbacks import DEFAULT_CALLBACKS, CSVLoggerCallback, SaveTrainingStateCallback
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import (
    NUM_CLASSES,
    DigitsMLP,
    cosine_with_warmup,
    load_digits_datasets,
)
from pytorch_accelerated.metrics import MetricsCallback
from pytorch_accelerated.trainer import Trainer, TrainerCallback, TrainerPlaceholderValues, seed_everything


@dataclass
class ResumableResult:
    """What :func:`main` returns; ``test_accuracy`` is None when a signal stopped the run."""

    run_dir: Path
    resumed_from: Path | None
    stopped_by_signal: str | None
    test_accuracy: float | None
    completed_update_steps: int


def parse_args(argv=None) -> argparse.Namespace:
    parser = example_parser("resumable", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/resumable"), help="the run's folder")
    parser.add_argument("--num-epochs", type=int, default=20, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument(
        "--save-every", type=int, default=20, help="optimizer updates between training states"
    )
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    return parser.parse_args(argv)


def main(argv=None) -> ResumableResult:
    return run(parse_args(argv))


def run(args: argparse.Namespace, callbacks: Iterable[TrainerCallback] = ()) -> ResumableResult:
    """Train (or continue training) in ``args.run_dir``; ``callbacks`` are added to the example's own."""
    seed_everything(args.seed)
    train_dataset, eval_dataset, test_dataset = load_digits_datasets()
    saver = SaveTrainingStateCallback(
        args.run_dir / "states", save_every_n_steps=args.save_every, save_every_n_epochs=1, max_checkpoints=3
    )
    model = DigitsMLP()
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.AdamW(model.parameters(), lr=3e-3),
        callbacks=(
            *DEFAULT_CALLBACKS,
            MetricsCallback({"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=NUM_CLASSES)}),
            # the run folder is this run's own, continued on every launch: its log beside its states/
            CSVLoggerCallback(args.run_dir / "metrics.csv", if_exists="error"),
            saver,
            *callbacks,
        ),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=args.batch_size,
        max_num_train_steps=args.max_steps,
        create_scheduler_fn=functools.partial(
            cosine_with_warmup,
            num_epochs=TrainerPlaceholderValues.NUM_EPOCHS,
            num_update_steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
            num_training_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
            min_lr_ratio=0.05,
        ),
        resume_from="latest",  # a new run the first time; the newest complete state after that
    )
    result = ResumableResult(
        run_dir=args.run_dir,
        resumed_from=trainer.resumed_from,
        stopped_by_signal=saver.stopped_by_signal,
        test_accuracy=None,
        completed_update_steps=trainer.completed_update_steps,
    )
    if saver.stopped_by_signal:
        trainer.print(f"Stopped by {saver.stopped_by_signal}: run the same command again to continue.")
        return result
    result.test_accuracy = trainer.evaluate(test_dataset, per_device_batch_size=256)["eval_accuracy"]
    trainer.print(f"test accuracy: {result.test_accuracy:.4f}; run folder: {args.run_dir.resolve()}")
    return result


if __name__ == "__main__":
    main()
