"""Training states of a sharded (FSDP2) model on two CPU processes (gloo), checked by
``tests/core/test_sharded_state.py``.

Run on every process of a launch, e.g.::

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29512 \\
        tests/core/sharded_state_scenarios.py uninterrupted,resumed /tmp/out

Arguments, results and failure handling as in ``distributed_scenarios.py`` (whose runner this reuses).
The run: ``sharding_scenarios``' tiny transformer, AdamW, 2 epochs of 5 batches per process with
accumulation 2 (updates 1, 2 inside an epoch, 3 at its end), a training state saved
into ``OUT/states/<updates>_<point>`` at the save points in ``SAVED``.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys
from pathlib import Path

import torch
from pytorch_accelerated.trainer import (
    Trainer,
    TrainerCallback,
    find_latest_training_state,
    sharded_state,
)

if __package__:  # imported by the tests
    from .sharding_scenarios import TRAIN, fsdp2_plugin, make_sharded_trainer, token_dataset
else:  # run as a script
    from sharding_scenarios import TRAIN, fsdp2_plugin, make_sharded_trainer, token_dataset

LR = 3e-3
MID_EPOCH_STATE = "02_update"  # 4 of the epoch's 5 batches done
EPOCH_END_STATE = "03_epoch_end"
DAMAGED_SHARD = "dcp/__1_0.distcp"
KILLED_AT = 4  # the save after update 4 is killed halfway through process 1's shard
SAVED = ("00_run_start", "01_update", "02_update", "03_update", "03_epoch_end", "04_update", "06_run_end")


class SaveStates(TrainerCallback):
    """Saves a training state at the save points named in ``names`` into ``folder/<updates>_<point>``;
    finds the latest there."""

    def __init__(self, folder: Path, names=SAVED, kill_at: int | None = None):
        self.folder, self.names, self.kill_at = folder, names, kill_at

    def on_save_point(self, trainer, point, **kwargs):
        name = f"{trainer.completed_update_steps:02d}_{point}"
        if name not in self.names:
            return
        if trainer.completed_update_steps == self.kill_at and trainer.process_index == 1:
            _die_halfway_through_the_next_shard()
        trainer.save_training_state(self.folder / name)

    def latest_training_state(self):
        return find_latest_training_state(self.folder)


class TryAnAsynchronousSave(TrainerCallback):
    """At the first update's save point, tries an asynchronous save: ``error`` says how it was refused."""

    def __init__(self, folder: Path):
        self.folder, self.error = folder, None

    def on_save_point(self, trainer, point, **kwargs):
        if self.error is None and point == "update":
            self.error = _error_of(lambda: trainer.save_training_state(self.folder, asynchronous=True))


def _die_halfway_through_the_next_shard() -> None:
    """The next file DCP writes on this process gets half its bytes, synced, then the process is SIGKILLed."""

    class HalfThenDie(io.RawIOBase):
        def __init__(self, file):
            self.file, self.buffer = file, io.BytesIO()

        def write(self, data) -> int:
            self.buffer.write(data)
            if self.buffer.tell() > 2000:
                self.file.write(self.buffer.getvalue()[: self.buffer.tell() // 2])
                self.file.flush()
                os.fsync(self.file.fileno())
                print(f"KILLED halfway through {self.file.name}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return len(data)

        def tell(self) -> int:
            return self.buffer.tell()

    sharded_state.digesting_writes = HalfThenDie


def sharded_trainer(callbacks=()) -> Trainer:
    trainer = make_sharded_trainer(fsdp2_plugin(), callbacks=callbacks)
    trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=LR, weight_decay=0.01)
    return trainer


def train(trainer: Trainer, resume_from=None) -> None:
    torch.manual_seed(0)
    trainer.train(
        token_dataset(TRAIN["samples"]),
        num_epochs=TRAIN["epochs"],
        per_device_batch_size=TRAIN["batch_size"],
        gradient_accumulation_steps=TRAIN["accumulation"],
        gradient_clip_norm=TRAIN["clip"],
        resume_from=resume_from,
    )


def finish(trainer: Trainer, out: Path, name: str) -> dict:
    """The whole weights and optimizer state, gathered into ``OUT/<name>.pt`` (main process)."""
    trainer.save_checkpoint(out / f"{name}.pt")
    return {
        "process_index": trainer.process_index,
        "completed_update_steps": trainer.completed_update_steps,
        "resumed_from": None if trainer.resumed_from is None else trainer.resumed_from.name,
    }


def _error_of(call) -> str:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the message is the result
        return f"{type(error).__name__}: {error}"
    return "no error"


# ---------------------------------------------------------------------------------------- scenarios


def scenario_uninterrupted(out: Path) -> dict:
    asynchronous = TryAnAsynchronousSave(out / "asynchronous")
    trainer = sharded_trainer([SaveStates(out / "states"), asynchronous])
    train(trainer)
    return {**finish(trainer, out, "uninterrupted"), "asynchronous": asynchronous.error}


def scenario_resumed_mid_epoch(out: Path) -> dict:
    trainer = sharded_trainer()
    train(trainer, resume_from=out / "states" / MID_EPOCH_STATE)
    return finish(trainer, out, "resumed_mid_epoch")


def scenario_resumed_at_epoch_end(out: Path) -> dict:
    trainer = sharded_trainer()
    train(trainer, resume_from=out / "states" / EPOCH_END_STATE)
    return finish(trainer, out, "resumed_at_epoch_end")


def scenario_damaged_shard(out: Path) -> dict:
    """A state whose shard of process 1 has one flipped byte, resumed from on both processes."""
    damaged = out / "damaged" / EPOCH_END_STATE
    trainer = sharded_trainer()
    if trainer.is_world_process_zero:
        shutil.copytree(out / "states" / EPOCH_END_STATE, damaged)
        with open(damaged / DAMAGED_SHARD, "r+b") as file:
            file.seek(1000)
            byte = file.read(1)
            file.seek(1000)
            file.write(bytes([byte[0] ^ 0x01]))
    trainer.wait_for_everyone()
    return {"process_index": trainer.process_index, "refused": _error_of(lambda: train(trainer, damaged))}


def scenario_unsharded_into_sharded(out: Path) -> dict:
    """A state saved by DDP on the same two processes, resumed by an FSDP2 run."""
    unsharded = make_sharded_trainer(callbacks=[SaveStates(out / "ddp_states", names=("02_run_end",))])
    unsharded.optimizer = torch.optim.AdamW(unsharded.model.parameters(), lr=LR, weight_decay=0.01)
    unsharded.train(token_dataset(16), num_epochs=1, per_device_batch_size=4)
    trainer = sharded_trainer()
    refused = _error_of(lambda: train(trainer, out / "ddp_states" / "02_run_end"))
    return {"process_index": trainer.process_index, "refused": refused}


def scenario_killed_in_save(out: Path) -> dict:
    trainer = sharded_trainer([SaveStates(out / "killed_states", kill_at=KILLED_AT)])
    train(trainer)
    raise AssertionError("process 1 was to be killed in the save after update 4")


def scenario_resumed_latest(out: Path) -> dict:
    trainer = sharded_trainer([SaveStates(out / "killed_states", names=())])
    train(trainer, resume_from="latest")
    return finish(trainer, out, "resumed_latest")


SCENARIOS = {
    name[len("scenario_") :]: function for name, function in globals().items() if name.startswith("scenario_")
}

if __name__ == "__main__":
    from distributed_scenarios import main  # beside this script

    sys.exit(main(sys.argv, SCENARIOS))
