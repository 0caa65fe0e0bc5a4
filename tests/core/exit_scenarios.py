"""How the processes of a two-process run end, checked by ``tests/core/test_process_exit.py``.

Run on every process of a launch (two CPU processes, gloo), one scenario per launch::

    python -m torch.distributed.run --nproc_per_node 2 tests/core/exit_scenarios.py SCENARIO OUT

Unlike the other scenario scripts, a process here ends as a user's script does, through the
interpreter's exit (its exit hooks, multiprocessing's, finalization), which is what is checked:
it returns (exit status 0) or lets the error out (exit status 1). Before that, each process writes
``<scenario>_rank<r>.json`` into OUT: what it returned, or the error it raised (type, message) and
the process ids of its dataloader workers. An exit hook registered before the Trainer's writes
``<scenario>_exit_rank<r>.json``: the native threads still alive at the end of the exit hooks.
The collectives keep torch's default timeout (30 minutes), as a user's do.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer, TrainerCallback, dataloader_workers
from pytorch_accelerated.trainer.testing import make_tiny_dataset

try:  # launched as a script, or imported by the test module
    from helpers import make_trainer
    from sharding_scenarios import fsdp2_plugin, make_sharded_trainer, token_dataset
except ImportError:
    from .helpers import make_trainer
    from .sharding_scenarios import fsdp2_plugin, make_sharded_trainer, token_dataset

FAILING_PROCESS = 1
FAILURE = "the loss on process 1 looked wrong at step 3"
WORKER_FAILURE = "sample unreadable on process 1"
NUM_WORKERS = 2
# a worker's third batch never comes: the first ones take the workers' start (seconds under load)
FAILING_FETCH = 9
# a batch that never comes fails after this long (the default is 10 minutes)
BATCH_TIMEOUT_S = 20.0
KEPT_TO_THE_END = []  # what a script holds at module level until it exits


def rank() -> int:
    return int(os.environ["RANK"])


def make_cpu_trainer(*callbacks) -> Trainer:
    """A Trainer on CPU processes with the default callbacks (the progress bar too) before ``callbacks``."""
    return make_trainer([*DEFAULT_CALLBACKS, *callbacks], lr=0.1, accelerator_kwargs={"cpu": True})


def train(trainer: Trainer, dataset, **dataloader_kwargs) -> None:
    dataloader_kwargs = {"num_workers": NUM_WORKERS, **dataloader_kwargs}
    trainer.train(dataset, num_epochs=2, per_device_batch_size=4, train_dataloader_kwargs=dataloader_kwargs)


# ---------------------------------------------------------------------------------------- scenarios


def scenario_success(out: Path) -> dict:
    """A run that ends well, then a collective, as the distributed example ends."""
    trainer = make_cpu_trainer()
    trainer.train(make_tiny_dataset(64), num_epochs=1, per_device_batch_size=4)
    gathered = trainer.gather(torch.tensor([float(rank())]))
    return {"gathered": gathered.tolist()}


def scenario_fsdp2_success(out: Path) -> dict:
    """A run of a model sharded with FSDP2 that saves sharded training states, then a collective."""
    from pytorch_accelerated.callbacks import SaveTrainingStateCallback

    trainer = make_sharded_trainer(
        fsdp2_plugin(), callbacks=[SaveTrainingStateCallback(out / "states", save_every_n_steps=2)]
    )
    trainer.train(token_dataset(32), num_epochs=1, per_device_batch_size=4)
    gathered = trainer.gather(torch.tensor([float(rank())]))
    return {"gathered": gathered.tolist(), "sharded": trainer.accelerator.is_fsdp2}


def scenario_persistent_workers(out: Path) -> dict:
    """A run with persistent dataloader workers, whose trainer the script still holds when it exits."""
    trainer = make_cpu_trainer()
    train(trainer, make_tiny_dataset(64), persistent_workers=True)
    KEPT_TO_THE_END.append(trainer)
    return {"completed_update_steps": trainer.completed_update_steps}


class FailOnOneProcess(TrainerCallback):
    def on_train_step_end(self, trainer, **kwargs):
        if trainer.process_index == FAILING_PROCESS and trainer.completed_update_steps == 3:
            raise RuntimeError(FAILURE)


def scenario_callback_fails(out: Path) -> dict:
    """A callback raises on process 1 only, with dataloader workers."""
    train(make_cpu_trainer(FailOnOneProcess()), make_tiny_dataset(64))
    return {}


class FaultyDataset(torch.utils.data.Dataset):
    """Tiny samples; on process 1, a worker's ``FAILING_FETCH``-th sample raises, or never comes."""

    def __init__(self, fault: str):
        self.inner = make_tiny_dataset(64)
        self.fault = fault
        self.fetches = 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        self.fetches += 1  # counted in each worker, which holds a copy
        if rank() == FAILING_PROCESS and self.fetches == FAILING_FETCH:
            if self.fault == "raises":
                raise OSError(WORKER_FAILURE)
            time.sleep(3600)
        return self.inner[index]


def scenario_worker_fails(out: Path) -> dict:
    """A dataloader worker of process 1 raises."""
    train(make_cpu_trainer(), FaultyDataset("raises"))
    return {}


def scenario_worker_hangs(out: Path) -> dict:
    """A ``__getitem__`` on process 1 never returns; the batch's time limit is the default's mechanism."""
    dataloader_workers.DEFAULT_TIMEOUT_S = BATCH_TIMEOUT_S
    train(make_cpu_trainer(), FaultyDataset("hangs"))
    return {}


SCENARIOS = {
    "success": scenario_success,
    "fsdp2_success": scenario_fsdp2_success,
    "persistent_workers": scenario_persistent_workers,
    "callback_fails": scenario_callback_fails,
    "worker_fails": scenario_worker_fails,
    "worker_hangs": scenario_worker_hangs,
}


# ---------------------------------------------------------------------------------------- reporting


def native_threads() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(names)


def write_json(path: Path, content: dict) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(content, indent=1))
    os.replace(path.with_suffix(".tmp"), path)


def main(argv: list[str]) -> None:
    name, out = argv[1], Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    # registered before any Trainer: exit hooks run last-registered first, so it runs after the Trainer's
    atexit.register(lambda: write_json(out / f"{name}_exit_rank{rank()}.json", {"threads": native_threads()}))
    try:
        result = SCENARIOS[name](out)
    except Exception as error:
        workers = [child.pid for child in multiprocessing.active_children()]
        seen = {"error_type": type(error).__name__, "message": str(error), "workers": workers}
        write_json(out / f"{name}_rank{rank()}.json", seen)
        print(f"[rank {rank()}] {name} failed: {seen['error_type']}: {error}", file=sys.stderr, flush=True)
        raise  # out of the script, as a user's error leaves it
    write_json(out / f"{name}_rank{rank()}.json", result)


if __name__ == "__main__":
    main(sys.argv)
