"""Quickstart: the seed's MLP learns scikit-learn's handwritten digits, offline, in about a minute on two CPU
cores.

    python -m pytorch_accelerated.examples.quickstart                  # runs/quickstart-<timestamp>/
    python -m pytorch_accelerated.examples.quickstart --run-dir runs/mine --num-epochs 5
    torchrun --nproc_per_node 2 -m pytorch_accelerated.examples.quickstart --run-dir runs/ddp

Everything the run writes goes into one run folder, printed at the end:

    metrics.csv                  one row per epoch (losses and accuracies); the test set's on the best epoch's
    best_model.pt                the checkpoint of the epoch with the best validation accuracy
    plots/loss_epoch.png         training and validation loss per epoch
    plots/accuracy.png           training and validation accuracy per epoch
    plots/metrics.png            both, side by side; each marks the best epoch, the early stop
                                 and the test score

A progress bar shows each epoch, the validation accuracy comes from trainer-metrics, training
stops early once the validation accuracy stops improving, and the best weights are loaded back
before the test set is scored. An existing run folder that holds files is never written into
unless you pass --overwrite.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torchmetrics
from torch import nn, optim

from pytorch_accelerated.callbacks import (
    DEFAULT_CALLBACKS,
    CSVLoggerCallback,
    EarlyStoppingCallback,
    PlotMetricsCallback,
    SaveBestModelCallback,
)
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import NUM_CLASSES, DigitsMLP, load_digits_datasets
from pytorch_accelerated.metrics import MetricsCallback
from pytorch_accelerated.trainer import Trainer, seed_everything


@dataclass
class QuickstartResult:
    """What :func:`main` returns: where the run's files are and how well the model did."""

    run_dir: Path
    test_accuracy: float
    test_loss: float
    num_epochs_run: int
    checkpoint_path: Path
    csv_path: Path
    plot_paths: list[Path]


def parse_args(argv=None) -> argparse.Namespace:
    parser = example_parser("quickstart", __doc__, "--num-epochs 1 --max-steps 5")
    parser.add_argument("--run-dir", help="folder for the run's files")
    parser.add_argument(
        "--overwrite", action="store_true", help="write into a run folder that already holds files"
    )
    parser.add_argument("--num-epochs", type=int, default=40, help="at most this many epochs")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    parser.add_argument(
        "--patience", type=int, default=5, help="epochs without a better validation accuracy before stopping"
    )
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    args = parser.parse_args(argv)
    args.run_dir = choose_run_dir(parser, args.run_dir, args.overwrite)
    return args


def choose_run_dir(parser: argparse.ArgumentParser, run_dir: str | None, overwrite: bool) -> Path:
    """The run folder: the one asked for (refused if it holds files, unless ``overwrite``), or a new
    ``runs/quickstart-<timestamp>``."""
    if run_dir is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            parser.error(
                "on several processes, pass --run-dir so that every process writes to the same folder"
            )
        stamp = time.strftime("%Y%m%d-%H%M%S")
        candidates = (Path("runs") / f"quickstart-{stamp}{f'-{n}' if n else ''}" for n in range(1000))
        return next(path for path in candidates if not path.exists())
    path = Path(run_dir)
    if path.is_file() or (path.is_dir() and any(path.iterdir()) and not overwrite):
        parser.error(
            f"{path} already exists and is not an empty folder: choose another --run-dir, or pass --overwrite"
        )
    return path


def main(argv=None) -> QuickstartResult:
    args = parse_args(argv)
    seed_everything(args.seed)
    train_dataset, eval_dataset, test_dataset = load_digits_datasets()

    run_dir = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path, csv_path = run_dir / "best_model.pt", run_dir / "metrics.csv"
    if_exists = "overwrite" if args.overwrite else "error"
    plots = PlotMetricsCallback(
        run_dir / "plots",
        metric_names=["train_loss_epoch", "eval_loss_epoch", "train_accuracy", "eval_accuracy"],
        best_metric="eval_accuracy",  # marked on every plot: the epoch whose checkpoint is kept
        greater_is_better=True,
    )

    model = DigitsMLP()
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.Adam(model.parameters(), lr=args.lr),
        callbacks=(
            *DEFAULT_CALLBACKS,  # progress bar, one line of metrics per epoch, ...
            MetricsCallback(
                {"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=NUM_CLASSES)}, on_train=True
            ),
            EarlyStoppingCallback(
                early_stopping_patience=args.patience,
                early_stopping_threshold=0.0,
                watch_metric="eval_accuracy",
                greater_is_better=True,
            ),
            # the run folder is this run's own (refused above unless --overwrite): its files as named, no
            # version_<n>
            SaveBestModelCallback(
                save_path=checkpoint_path,
                watch_metric="eval_accuracy",
                greater_is_better=True,
                if_exists=if_exists,
            ),
            CSVLoggerCallback(csv_path, if_exists=if_exists),
            plots,
        ),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        num_epochs=args.num_epochs,
        per_device_batch_size=args.batch_size,
        max_num_train_steps=args.max_steps,
    )
    num_epochs_run = len(trainer.run_history.get_metric_values("train_loss_epoch"))

    # The best checkpoint has been loaded back: score it once on data it has never seen. The
    # prefix keeps the test set's metrics apart from validation's in the run history and the CSV
    # log (test_eval_loss, test_eval_accuracy), where they go on the row of the epoch they score.
    test_metrics = trainer.evaluate(test_dataset, per_device_batch_size=256, metric_prefix="test_")
    result = QuickstartResult(
        run_dir=run_dir,
        test_accuracy=test_metrics["test_eval_accuracy"],
        test_loss=test_metrics["test_eval_loss"],
        num_epochs_run=num_epochs_run,
        checkpoint_path=checkpoint_path,
        csv_path=csv_path,
        plot_paths=list(plots.saved_paths),
    )
    trainer.print(f"test accuracy: {result.test_accuracy:.4f} (test loss {result.test_loss:.4f})")
    trainer.print(f"run folder: {run_dir.resolve()}")
    return result


if __name__ == "__main__":
    main()
