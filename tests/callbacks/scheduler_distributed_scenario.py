"""A two-process scheduler run, checked by ``test_schedulers.py``.

Launched with torchrun, every process trains the tiny model with a ``CosineLrScheduler`` sized by
placeholders, on a dataset that does not split evenly across processes, and writes the learning
rates it used to ``rank<r>.json`` in the folder given::

    python -m torch.distributed.run --nproc_per_node 2 tests/callbacks/scheduler_distributed_scenario.py \
        OUT_DIR

An error is written as ``{"error": <traceback>}``; the process then exits at once, so that the
launcher stops the other process instead of leaving it waiting in a collective.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs

from pytorch_accelerated.schedulers import CosineLrScheduler
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when launched
from tests.core.helpers import LrRecorder  # noqa: E402

# The test recomputes the expected schedule from these.
SIZES = {
    "num_samples": 45,
    "batch_size": 4,
    "accumulation": 2,
    "num_epochs": 4,
    "lr": 0.1,
    "num_warmup_epochs": 1,
    "num_cooldown_epochs": 1,
    "min_lr_ratio": 0.1,
    "k_decay": 2.0,
}


def run() -> dict:
    recorder = LrRecorder()
    model = make_tiny_model()
    trainer = Trainer(
        model=model,
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=SIZES["lr"]),
        callbacks=[recorder],
        accelerator_kwargs={
            "cpu": True,
            "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=60))],
        },
    )
    trainer.train(
        train_dataset=make_tiny_dataset(SIZES["num_samples"]),
        num_epochs=SIZES["num_epochs"],
        per_device_batch_size=SIZES["batch_size"],
        gradient_accumulation_steps=SIZES["accumulation"],
        create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(
            num_warmup_epochs=SIZES["num_warmup_epochs"],
            num_cooldown_epochs=SIZES["num_cooldown_epochs"],
            min_lr_ratio=SIZES["min_lr_ratio"],
            k_decay=SIZES["k_decay"],
        ),
    )
    return {
        "num_processes": trainer.num_processes,
        "process_index": trainer.accelerator.process_index,
        "train_dataloader_len": trainer.run_config.train_dataloader_len,
        "completed_update_steps": trainer.completed_update_steps,
        "scheduler_num_updates": trainer.scheduler.num_updates,
        "scheduler_total_steps": trainer.scheduler.total_steps,
        "used_lrs": recorder.used,
        "lrs_after_updates": recorder.after,
    }


def write_result(out_dir: Path, rank: int, result: dict) -> None:
    path = out_dir / f"rank{rank}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(result))
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTPUT_DIR", file=sys.stderr)
        return 2
    out_dir = Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = run()
    except BaseException:  # noqa: BLE001 - reported to the test, then this process ends
        write_result(out_dir, rank, {"error": traceback.format_exc()})
        sys.stdout.flush()
        os._exit(1)
    write_result(out_dir, rank, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
