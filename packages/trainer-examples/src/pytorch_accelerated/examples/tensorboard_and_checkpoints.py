"""Several evaluation sets, images on TensorBoard, the 3 best checkpoints and a time limit, in one run.

    python -m pytorch_accelerated.examples.tensorboard_and_checkpoints --run-dir runs/board
    tensorboard --logdir runs/board/tensorboard            # the curves, the images, the histograms
    python -m pytorch_accelerated.examples.tensorboard_and_checkpoints --run-dir runs/board --max-time \
        00:00:00:20
    # stopped at its time limit: the same command continues

What a Lightning or HF Trainer user looks for first, on scikit-learn's digits (offline):

- ``eval_dataset={"val": ..., "noisy": ...}``: each set is evaluated after every epoch and logged under
  its name (``val_eval_accuracy``, ``noisy_eval_accuracy``, ...);
- ``TrackerCallback("tensorboard")`` logs the loss and the learning rate per update by default, and
  what is not a number as TensorBoard shows it: a tensor recorded into the run history as an image
  (the first layer's weights) or a histogram (its values); ``get_tracker("tensorboard", unwrap=True)``
  is TensorBoard's own ``SummaryWriter``, here for a grid of validation digits;
- ``SaveBestModelCallback(save_top_k=3, export_safetensors=True)`` keeps the checkpoints of the 3 best
  epochs by validation accuracy (``best-epoch=N-step=M.pt``) and the best weights as
  ``model.safetensors``;
- ``SaveTrainingStateCallback(max_time=...)`` saves and stops when the time is up (a job's limit);
  the same command continues the run (``resume_from="latest"``), as if it had never stopped.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import torchmetrics
from torch import nn, optim
from torch.utils.data import Dataset, TensorDataset

from pytorch_accelerated.callbacks import (
    DEFAULT_CALLBACKS,
    CSVLoggerCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
    TrackerCallback,
)
from pytorch_accelerated.examples.cli import example_parser
from pytorch_accelerated.examples.digits import NUM_CLASSES, DigitsMLP, load_digits_datasets
from pytorch_accelerated.metrics import MetricsCallback
from pytorch_accelerated.trainer import Trainer, TrainerCallback, seed_everything


@dataclass
class BoardResult:
    """What :func:`main` returns: where the run's files are, and how the run ended."""

    run_dir: Path
    resumed_from: Path | None
    stopped_by_time_limit: bool
    completed_update_steps: int
    best_checkpoints: dict[Path, float]
    safetensors_path: Path
    tensorboard_dir: Path


def parse_args(argv=None) -> argparse.Namespace:
    parser = example_parser("tensorboard_and_checkpoints", __doc__, "--num-epochs 2 --max-steps 10")
    run_dir = Path("runs/tensorboard_and_checkpoints")
    parser.add_argument("--run-dir", type=Path, default=run_dir, help="the run's folder")
    parser.add_argument("--num-epochs", type=int, default=15, help="epochs to train")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer updates")
    parser.add_argument("--max-time", default="00:00:10:00", help="save and stop after this, DD:HH:MM:SS")
    parser.add_argument("--seed", type=int, default=42, help="the random seed")
    return parser.parse_args(argv)


class FirstLayerPictures(TrainerCallback):
    """Records the first layer's weights as an image and as a histogram after every epoch, and draws
    a grid of validation digits once, with TensorBoard's own writer."""

    def __init__(self, tracker: TrackerCallback, digits: torch.Tensor):
        self.tracker, self.digits = tracker, digits

    def on_training_run_epoch_end(self, trainer, **kwargs):
        weights = trainer.get_model().main[0].weight.detach()  # 128 x 64
        picture = (weights - weights.min()) / (weights.max() - weights.min())
        trainer.run_history.update_metric("first_layer_weights", picture[None])  # 1 x 128 x 64: an image
        trainer.run_history.update_metric("first_layer_values", weights.flatten())  # a histogram
        if trainer.run_history.current_epoch == 1 and trainer.is_world_process_zero:
            writer = self.tracker.get_tracker("tensorboard", unwrap=True)
            writer.add_images("validation_digits", self.digits, global_step=trainer.completed_update_steps)


def noisy(dataset: Dataset, seed: int = 0) -> TensorDataset:
    """``dataset`` with Gaussian noise added to each image: a shifted distribution to evaluate on too."""
    images = torch.stack([image for image, _ in dataset])
    labels = torch.tensor([int(label) for _, label in dataset])
    noise = 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return TensorDataset((images + noise).clamp(0, 1), labels)


def main(argv=None) -> BoardResult:
    args = parse_args(argv)
    seed_everything(args.seed)
    train_dataset, eval_dataset, _ = load_digits_datasets()
    tensorboard = TrackerCallback(
        "tensorboard", project_name="digits", logging_dir=args.run_dir / "tensorboard", if_exists="append"
    )
    best = SaveBestModelCallback(
        args.run_dir / "checkpoints" / "best.pt",
        watch_metric="val_eval_accuracy",
        greater_is_better=True,
        save_top_k=3,
        export_safetensors=True,
        if_exists="overwrite",
    )
    states = SaveTrainingStateCallback(args.run_dir / "states", save_every_n_epochs=1, max_time=args.max_time)
    digits = torch.stack([eval_dataset[index][0] for index in range(16)])
    model = DigitsMLP()
    trainer = Trainer(
        model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=optim.AdamW(model.parameters(), lr=3e-3),
        callbacks=(
            *DEFAULT_CALLBACKS,
            MetricsCallback({"accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=NUM_CLASSES)}),
            FirstLayerPictures(tensorboard, digits),
            tensorboard,
            CSVLoggerCallback(args.run_dir / "metrics.csv", if_exists="append"),  # the run folder, continued
            best,
            states,
        ),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset={"val": eval_dataset, "noisy": noisy(eval_dataset)},
        num_epochs=args.num_epochs,
        max_num_train_steps=args.max_steps,
        per_device_batch_size=32,
        resume_from="latest",  # a new run the first time; where the time limit stopped it after that
    )
    if states.stopped_by_time_limit:
        trainer.print("The time limit stopped the run: run the same command again to continue.")
    else:
        trainer.print(f"best checkpoints: {', '.join(path.name for path in best.best_k_checkpoints)}")
        trainer.print(f"see the run with: tensorboard --logdir {tensorboard.run_folder(trainer)}")
    return BoardResult(
        run_dir=args.run_dir,
        resumed_from=trainer.resumed_from,
        stopped_by_time_limit=states.stopped_by_time_limit,
        completed_update_steps=trainer.completed_update_steps,
        best_checkpoints=best.best_k_checkpoints,
        safetensors_path=best.safetensors_path,
        tensorboard_dir=tensorboard.run_folder(trainer) / "digits",
    )


if __name__ == "__main__":
    main()
