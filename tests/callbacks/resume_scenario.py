"""One launch of a training run that saves training states and resumes from the latest, for
``test_resume.py``: it may be killed (SIGKILL) at a chosen point, or stopped by a signal the test
sends, and a later launch continues it.

Run on one process or on every process of a launch::

    python tests/callbacks/resume_scenario.py OUT_DIR [--kill KIND:AT] [--slow-after N] [--workers N]
        [--tensorboard] [--asynchronous]
    python -m torch.distributed.run --nproc_per_node 2 tests/callbacks/resume_scenario.py OUT_DIR ...

The run: an MLP with dropout, AdamW and a one-cycle schedule; shuffled training data with a random
augmentation in ``__getitem__`` (torch's, NumPy's and Python's generators), loaded by ``--workers``
dataloader workers (2; 0: in the main process, between the steps' dropout draws); gradient accumulation over 3
batches with a shorter last window; an
evaluation set; an EMA of the weights; a CSV log of every update's loss and the epoch metrics;
``SaveTrainingStateCallback`` every 2 updates and every epoch, keeping 3 (``--asynchronous``: written
in the background); with ``--tensorboard``, two TensorBoard trackers (``OUT_DIR/tb_steps``: every
update, ``OUT_DIR/tb_epochs``: every epoch). Every launch starts with ``resume_from="latest"``.

``--kill KIND:AT`` ends the launch with SIGKILL on every process (``batch``: in the AT-th training
batch overall, before its backward pass, so inside an accumulation window or just before an
update; ``epoch``: once epoch AT has ended and its state was saved; ``logged``: once epoch AT's
metrics are logged, before its state is saved; ``write``: halfway through
writing the first file of the first state saved from batch AT on, on the main process: in the
background thread with ``--asynchronous``, while training goes on; ``prune``: halfway through deleting
the first state pruned from batch AT on, on the main process; ``start``: in the AT-th training batch,
as ``batch``, with a write in the background of the state saved at the run's start held until then).
``--slow-after N`` sleeps in every step after the N-th update and writes ``ready_rank<r>`` (with
the process id) so that the test can send a signal mid-run. A run that completes writes
``result_rank<r>.pt``: its ``testing.final_state`` (weights, optimizer and scheduler states, run history).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import random
import signal
import sys
import threading
import time
import traceback
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import InitProcessGroupKwargs

import pytorch_accelerated.trainer.state_format as training_state_files
from pytorch_accelerated.callbacks import (
    CSVLoggerCallback,
    LearningRateMonitorCallback,
    ModelEmaCallback,
    PrintMetricsCallback,
    SaveTrainingStateCallback,
    TrackerCallback,
)
from pytorch_accelerated.trainer import Trainer, TrainerCallback, TrainerPlaceholderValues, seed_everything
from pytorch_accelerated.trainer.testing import final_state, make_tiny_dataset

NUM_TRAIN_SAMPLES = 90
BATCH_SIZE_ON_ALL_PROCESSES = 8
ACCUMULATION_STEPS = 3
NUM_EPOCHS = 5
COLLECTIVE_TIMEOUT_S = 60


def batches_per_epoch(num_processes: int) -> int:
    per_process = BATCH_SIZE_ON_ALL_PROCESSES // num_processes
    return -(-NUM_TRAIN_SAMPLES // (per_process * num_processes))


class AugmentedDataset(torch.utils.data.Dataset):
    """The tiny dataset with noise added to each sample as it is loaded, from all three generators."""

    def __init__(self, num_samples: int):
        self.samples = make_tiny_dataset(num_samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        inputs, target = self.samples[index]
        noise = 0.1 * torch.randn(inputs.shape) + 0.05 * float(np.random.randn()) + 0.05 * random.random()
        return inputs + noise, target


def make_model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(32, 3)
        )


def kill_everything_now(where: str) -> None:
    print(f"KILLED {where}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(TrainerCallback):
    """SIGKILLs this process at the chosen point (see the module docstring)."""

    def __init__(self, kind: str, at: int):
        self.kind, self.at = kind, at
        if kind == "start":
            hold_the_start_state_in_the_background()

    def on_train_step_end(self, trainer, **kwargs):
        batch = (
            (trainer.run_history.current_epoch - 1) * len(trainer.train_dataloader)
            + trainer.completed_epoch_batches
            + 1
        )
        if self.kind in ("batch", "start") and batch == self.at:
            kill_everything_now(f"in batch {batch}")
        if self.kind == "write" and batch >= self.at and trainer.is_world_process_zero:
            arm_the_half_write()
        if self.kind == "prune" and batch >= self.at and trainer.is_world_process_zero:
            arm_the_half_removal()

    def on_training_run_epoch_end(self, trainer, **kwargs):
        if self.kind == "logged" and trainer.run_history.current_epoch == self.at:
            kill_everything_now(f"after logging epoch {self.at}")

    def on_save_point(self, trainer, point, **kwargs):
        if self.kind == "epoch" and point == "epoch_end" and trainer.run_history.current_epoch - 1 == self.at:
            kill_everything_now(f"after epoch {self.at}")


def arm_the_half_write() -> None:
    """Make the next file written for a training state stop halfway, then kill the process."""

    def write_half_then_die(path, write):
        buffer = io.BytesIO()
        write(buffer)
        with open(path, "wb") as file:
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            os.fsync(file.fileno())
        kill_everything_now(f"halfway through writing {path} (thread {threading.current_thread().name})")

    training_state_files.write_with_digest = write_half_then_die


def arm_the_half_removal() -> None:
    """Make the next removal of a training state's file stop after that one file: kill the process."""
    unlink = os.unlink

    def unlink_then_die(path, *args, **kwargs):
        unlink(path, *args, **kwargs)
        if Path(path).name == training_state_files.MANIFEST_NAME or Path(path).suffix == ".pt":
            kill_everything_now(f"halfway through deleting a training state (removed {path})")

    os.unlink = unlink_then_die


def hold_the_start_state_in_the_background() -> None:
    """Make a background thread's write of the state saved at the run's start wait (until the kill)."""
    write = training_state_files.write_with_digest

    def held(path, write_file):
        in_background = threading.current_thread() is not threading.main_thread()
        if in_background and path.parent.name.endswith("-start.incomplete"):
            threading.Event().wait()
        return write(path, write_file)

    training_state_files.write_with_digest = held


class SlowAfter(TrainerCallback):
    """After ``update`` updates, sleeps in every step, so that a signal arrives mid-run."""

    def __init__(self, update: int, out: Path):
        self.update, self.out = update, out

    def on_train_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps >= self.update:
            marker = self.out / f"ready_rank{trainer.process_index}"
            if not marker.exists():  # whole or absent: the test reads the pid as soon as the name exists
                partial = marker.with_name(f".{marker.name}.partial")
                partial.write_text(str(os.getpid()))
                partial.replace(marker)
            time.sleep(0.05)


def tensorboard_trackers(out: Path) -> list[TrackerCallback]:
    return [
        TrackerCallback("tensorboard", project_name="tb", logging_dir=out / "tb_steps", log_every_n_steps=1),
        TrackerCallback("tensorboard", project_name="tb", logging_dir=out / "tb_epochs"),
    ]


def accelerator_kwargs() -> dict:
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return {}
    timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)  # a process left waiting for a killed one gives up
    return {"cpu": True, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo", timeout=timeout)]}


def run(
    out: Path,
    kill: str | None,
    slow_after: int | None,
    workers: int,
    tensorboard: bool,
    asynchronous: bool = False,
) -> Trainer:
    seed_everything(1234)
    callbacks = [
        PrintMetricsCallback(),
        LearningRateMonitorCallback(),
        ModelEmaCallback(decay=0.9, save_path=None),
        CSVLoggerCallback(out / "metrics.csv", log_every_n_steps=1),
        *(tensorboard_trackers(out) if tensorboard else []),
        SaveTrainingStateCallback(
            out / "states",
            save_every_n_steps=2,
            save_every_n_epochs=1,
            max_checkpoints=3,
            asynchronous=asynchronous,
        ),
    ]
    if kill:
        kind, at = kill.split(":")
        callbacks.append(KillAt(kind, int(at)))
    if slow_after is not None:
        callbacks.append(SlowAfter(slow_after, out))
    model = make_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.01),
        callbacks=callbacks,
        accelerator_kwargs=accelerator_kwargs(),
    )
    trainer.train(
        AugmentedDataset(NUM_TRAIN_SAMPLES),
        num_epochs=NUM_EPOCHS,
        eval_dataset=make_tiny_dataset(30, seed=1),
        per_device_batch_size=BATCH_SIZE_ON_ALL_PROCESSES // trainer.num_processes,
        gradient_accumulation_steps=ACCUMULATION_STEPS,
        create_scheduler_fn=functools.partial(
            torch.optim.lr_scheduler.OneCycleLR,
            max_lr=0.05,
            total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
        ),
        train_dataloader_kwargs={"num_workers": workers},
        resume_from="latest",
    )
    return trainer


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill")
    parser.add_argument("--slow-after", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tensorboard", action="store_true")
    parser.add_argument("--asynchronous", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    try:
        trainer = run(args.out, args.kill, args.slow_after, args.workers, args.tensorboard, args.asynchronous)
    except BaseException:  # noqa: BLE001 - reported to the test, then the launch is ended
        print(f"[rank {rank}] failed:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        os._exit(1)  # do not wait in a collective for a process that went on
    torch.save(final_state(trainer), args.out / f"result_rank{rank}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
