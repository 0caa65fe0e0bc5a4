"""Writes the checkpoints in this folder with pytorch-accelerated 0.1.61 itself, and the learning rates
0.1.61 used around them (README.md says how to run it; the tests never run it).

For each scheduler (``cosine``, ``wsd``) it trains a tiny model for 4 epochs of 8 updates with 0.1.61's
``Trainer``, saving ``<scheduler>.pt`` with ``trainer.save_checkpoint`` after epoch 2 (16 updates), and
records each update's learning rates (both param groups) as ``uninterrupted``. Then a new 0.1.61
``Trainer`` loads that checkpoint as its run starts (``load_checkpoint`` from ``on_training_run_start``,
0.1.61's way) and trains the 2 remaining epochs: its rates are ``continued_by_0161``. All go to
``learning_rates.json``. The cosine run's training state (``trainer.save_training_state``, accelerate's
``save_state`` folder) goes to ``training_state_cosine/``.
"""

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import pytorch_accelerated
from pytorch_accelerated.callbacks import TrainerCallback
from pytorch_accelerated.schedulers import CosineLrScheduler, WSDLrScheduler
from pytorch_accelerated.trainer import Trainer

SCHEDULERS = {
    "cosine": lambda: CosineLrScheduler.create_scheduler_fn(
        k_decay=2.0, min_lr_ratio=0.1, num_cooldown_epochs=1
    ),
    "wsd": lambda: WSDLrScheduler.create_scheduler_fn(decay_phase_ratio=0.25, lr_min=0.01),
}
NUM_EPOCHS, SAVE_AFTER_EPOCH = 4, 2
LRS = (0.1, 0.05)  # the weight's and the bias's param groups


class RecordLrs(TrainerCallback):
    """Each update's learning rates: read as its step starts (one update per step)."""

    def __init__(self):
        self.lrs = []

    def on_train_step_start(self, trainer, **kwargs):
        self.lrs.append([group["lr"] for group in trainer.optimizer.param_groups])


class SaveAfterEpoch(TrainerCallback):
    def __init__(self, path):
        self.path = path

    def on_train_epoch_end(self, trainer, **kwargs):
        if trainer.run_history.current_epoch == SAVE_AFTER_EPOCH:
            trainer.save_checkpoint(self.path, checkpoint_kwargs={"epoch": SAVE_AFTER_EPOCH})


class LoadAtStart(TrainerCallback):
    def __init__(self, path):
        self.path = path

    def on_training_run_start(self, trainer, **kwargs):
        trainer.load_checkpoint(self.path)


def train(callbacks, num_epochs, scheduler_fn):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": LRS[0]}, {"params": [model.bias], "lr": LRS[1]}], momentum=0.9
    )
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 2))
    trainer = Trainer(model, torch.nn.MSELoss(), optimizer, callbacks=callbacks)
    trainer.train(
        train_dataset=data,
        num_epochs=num_epochs,
        per_device_batch_size=8,
        create_scheduler_fn=scheduler_fn,
        train_dataloader_kwargs={"num_workers": 0},
    )
    return trainer


def main(out: Path) -> None:
    assert "site-packages" in pytorch_accelerated.__file__, "run it with pytorch-accelerated 0.1.61 installed"
    rates = {"torch": torch.__version__}
    for name, scheduler_fn in SCHEDULERS.items():
        path = out / f"{name}.pt"
        uninterrupted, continued = RecordLrs(), RecordLrs()
        trainer = train([uninterrupted, SaveAfterEpoch(path)], NUM_EPOCHS, scheduler_fn())
        if name == "cosine":
            trainer.save_training_state(out / "training_state_cosine", checkpoint_kwargs={"note": "0.1.61"})
        train([LoadAtStart(path), continued], NUM_EPOCHS - SAVE_AFTER_EPOCH, scheduler_fn())
        rates[name] = {"uninterrupted": uninterrupted.lrs, "continued_by_0161": continued.lrs}
    (out / "learning_rates.json").write_text(json.dumps(rates, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
