"""Faults of one process among several, checked by ``tests/core/test_process_faults.py``.

Run on every process of a launch (two CPU processes, gloo)::

    python -m torch.distributed.run --nproc_per_node 2 tests/core/process_fault_scenarios.py \
        SCENARIO[,SCENARIO] OUT

Each process writes ``<scenario>_rank<r>.json`` into OUT: what it saw (the error it raised, by
type and message). A scenario that hangs is reported by the watchdog of ``distributed_scenarios``
and ends the process. The launch ends with ``os._exit``: after a process fault the process group
is broken, and nothing must wait on it at interpreter exit.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

import torch

from pytorch_accelerated.callbacks import SaveTrainingStateCallback
from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, StopTrainingError, TrainerCallback, agreement
from pytorch_accelerated.trainer.testing import make_tiny_dataset

try:  # launched as a script, or imported by the test module
    from distributed_scenarios import (
        DEFAULT_TIME_LIMIT_S,
        common_facts,
        parameters_digest,
        rank_from_env,
        start_watchdog,
        write_result,
    )
    from helpers import make_gloo_trainer
except ImportError:
    from .distributed_scenarios import (
        DEFAULT_TIME_LIMIT_S,
        common_facts,
        parameters_digest,
        rank_from_env,
        start_watchdog,
        write_result,
    )
    from .helpers import make_gloo_trainer

STOP_STEP = 3
STOP_REASON = "the loss on process 1 looked wrong at step 3"
# a process that raised StopTrainingError alone gives the others this long to raise it too
STOP_AGREEMENT_TIMEOUT_S = 3.0
WORKERS = {"num_epochs": 6, "num_workers": 2}


def error_facts(error: BaseException) -> dict:
    return {"error_type": type(error).__name__, "message": str(error)}


# ---------------------------------------------------------------------------------------- resuming


def scenario_resume_unshared(out: Path) -> dict:
    """Each process's SaveTrainingStateCallback points at a folder of its own, as on machines that
    share no file system: only the main process's folder gets the states."""
    own_folder = out / f"states_rank{rank_from_env()}"
    first = make_gloo_trainer(callbacks=[SaveTrainingStateCallback(own_folder, save_every_n_steps=2)])
    first.train(make_tiny_dataset(32), num_epochs=1, per_device_batch_size=4)
    result = {
        **common_facts(first),
        "saved": sorted(path.name for path in own_folder.iterdir()) if own_folder.exists() else [],
    }
    for variant, resume_from in (("latest", "latest"), ("folder", own_folder)):
        trainer = make_gloo_trainer(callbacks=[SaveTrainingStateCallback(own_folder, save_every_n_steps=2)])
        try:
            trainer.train(
                make_tiny_dataset(32), num_epochs=2, per_device_batch_size=4, resume_from=resume_from
            )
            result[variant] = {"error_type": None, "resumed_from": str(trainer.resumed_from)}
        except Exception as error:  # noqa: BLE001 - the scenario reports what each process saw
            result[variant] = error_facts(error)
        trainer.wait_for_everyone()  # both processes still talk to each other afterwards
    return result


class SaveInTheBackgroundAt(TrainerCallback):
    """Saves asynchronously into ``folder/step-<n>`` after each update of ``updates``."""

    def __init__(self, folder: Path, updates: tuple[int, ...]):
        self.folder, self.updates = folder, updates

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps in self.updates:
            trainer.save_training_state(
                self.folder / f"step-{trainer.completed_update_steps}", asynchronous=True
            )


def scenario_background_write_fails(out: Path) -> dict:
    """The main process's background write fails (its folder's parent is a file): every process
    raises at the next save (update 4), and at the run's end when it was the last save (update 8)."""
    blocked = out / "a_file"
    blocked.write_text("not a folder")
    result = {}
    for case, updates in (("next_save", (2, 4)), ("run_end", (8,))):
        trainer = make_gloo_trainer(callbacks=[SaveInTheBackgroundAt(blocked, updates)])
        try:
            trainer.train(make_tiny_dataset(64), num_epochs=1, per_device_batch_size=4)
            result[case] = {"error_type": None}
        except Exception as error:  # noqa: BLE001 - the scenario reports what each process saw
            result[case] = {**error_facts(error), "completed_update_steps": trainer.completed_update_steps}
        trainer.wait_for_everyone()  # both processes still talk to each other afterwards
    return {**common_facts(trainer), **result}


# ---------------------------------------------------------------------------------------- stopping


class StopOnProcessOneAtStep(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_train_step_end(self, trainer, **kwargs):
        self.steps += 1
        if trainer.process_index == 1 and self.steps == STOP_STEP:
            raise StopTrainingError(STOP_REASON)


class StopEveryProcessAtStep(TrainerCallback):
    """Raises on every process at the same step, decided without communicating."""

    def on_train_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps == STOP_STEP - 1:
            raise StopTrainingError("every process stops at step 3")


def scenario_stop_every_process(out: Path) -> dict:
    agreement.STOP_AGREEMENT_TIMEOUT_S = STOP_AGREEMENT_TIMEOUT_S
    if rank_from_env() == 0:
        time.sleep(1.0)  # the processes raise it at different times: the agreement waits for them
    trainer = make_gloo_trainer(callbacks=[*DEFAULT_CALLBACKS, StopEveryProcessAtStep()])
    trainer.train(make_tiny_dataset(64), num_epochs=2, per_device_batch_size=4)
    trainer.wait_for_everyone()
    return {**common_facts(trainer), "completed_update_steps": trainer.completed_update_steps}


def scenario_stop_one_process(out: Path) -> dict:
    """Process 1 alone raises StopTrainingError; the other goes on into its next collective."""
    agreement.STOP_AGREEMENT_TIMEOUT_S = STOP_AGREEMENT_TIMEOUT_S
    trainer = make_gloo_trainer(callbacks=[*DEFAULT_CALLBACKS, StopOnProcessOneAtStep()])
    started = time.monotonic()
    try:
        trainer.train(make_tiny_dataset(64), num_epochs=2, per_device_batch_size=4)
        outcome = {"error_type": None, "completed_update_steps": trainer.completed_update_steps}
    except Exception as error:  # noqa: BLE001 - the scenario reports what each process saw
        outcome = error_facts(error)
    return {**common_facts(trainer), **outcome, "seconds": time.monotonic() - started}


# ---------------------------------------------------------------------------------------- forking workers


class ThreadsAtEpochStart(TrainerCallback):
    """The Python threads alive when each epoch's workers are about to start, and the epochs' times."""

    def __init__(self):
        self.names: list[list[str]] = []
        self.epoch_seconds: list[float] = []
        self.start_method = None

    def on_train_epoch_start(self, trainer, **kwargs):
        self.names.append(sorted(thread.name for thread in threading.enumerate()))
        self.started = time.perf_counter()
        context = trainer.train_dataloader.multiprocessing_context
        self.start_method = context.get_start_method() if context is not None else "fork"

    def on_train_epoch_end(self, trainer, **kwargs):
        self.epoch_seconds.append(time.perf_counter() - self.started)


class NoisyDataset(torch.utils.data.Dataset):
    """Samples with noise drawn in the worker, from the seed the main process gives each worker."""

    def __init__(self, num_samples: int):
        self.inner = make_tiny_dataset(num_samples)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        inputs, target = self.inner[index]
        return inputs + 0.1 * torch.randn_like(inputs), target


def run_with_workers(out: Path, dataloader_kwargs: dict) -> dict:
    """Several epochs with dataloader workers, started with the run's usual threads alive:
    SaveTrainingStateCallback (its signal and timer agreement), CSV and TensorBoard loggers."""
    from pytorch_accelerated.callbacks import CSVLoggerCallback, TensorBoardLoggerCallback

    rank = rank_from_env()
    threads = ThreadsAtEpochStart()
    callbacks = [
        *DEFAULT_CALLBACKS,
        SaveTrainingStateCallback(
            out / f"workers_states_{len(dataloader_kwargs)}", save_every_n_steps=3, save_every_n_minutes=10
        ),
        CSVLoggerCallback(out / f"workers_log_{len(dataloader_kwargs)}_rank{rank}.csv"),
        TensorBoardLoggerCallback(out / f"workers_tb_{len(dataloader_kwargs)}_rank{rank}"),
        threads,
    ]
    trainer = make_gloo_trainer(callbacks=callbacks)
    trainer.train(
        NoisyDataset(48),
        num_epochs=WORKERS["num_epochs"],
        per_device_batch_size=4,
        train_dataloader_kwargs={"num_workers": WORKERS["num_workers"], **dataloader_kwargs},
    )
    return {
        **common_facts(trainer),
        "threads_at_epoch_start": threads.names,
        "epoch_seconds": threads.epoch_seconds,
        "start_method": threads.start_method,
        "parameters_digest": parameters_digest(trainer.get_model()),
    }


def scenario_workers(out: Path) -> dict:
    return run_with_workers(out, {})


SCENARIOS = {
    "resume_unshared": scenario_resume_unshared,
    "background_write_fails": scenario_background_write_fails,
    "stop_every_process": scenario_stop_every_process,
    "stop_one_process": scenario_stop_one_process,
    "workers": scenario_workers,
}
# a hang's report; the workers' six epochs took 28 s here with three launches at once on two cores
TIME_LIMIT_S = DEFAULT_TIME_LIMIT_S


def main(argv: list[str]) -> int:
    names, out = argv[1].split(","), Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rank = rank_from_env()
    for name in names:
        torch.manual_seed(0)
        watchdog = start_watchdog(out, name, rank, TIME_LIMIT_S)
        try:
            result = SCENARIOS[name](out)
        except BaseException:  # noqa: BLE001 - reported to the test
            result = {"error": traceback.format_exc()}
        watchdog.cancel()
        write_result(out, name, rank, result)
        print(f"[rank {rank}] scenario {name} done", flush=True)
        if "error" in result:
            break
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
