"""A training run with file loggers and the throughput monitor on several processes, checked by
``test_loggers.py::test_two_processes_write_one_complete_log_from_the_main_process``.

Run on every process of a launch::

    python -m torch.distributed.run --nproc_per_node 2 tests/callbacks/loggers_distributed_scenario.py \
        /tmp/out

Every process trains the tiny model for two epochs on the CPU (gloo), evaluating every 3 updates
(``StepBasedEvaluationCallback``), then evaluates, with a CSV logger and a JSON Lines logger that both point
at files in the output folder (the same
paths on every process), and writes ``result_rank<r>.json``: its run history and how many times
its loggers opened their file. A process that raises writes ``{"error": ...}`` and ends with exit
status 1, so that the launcher stops the other one.
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

from pytorch_accelerated.callbacks.loggers import CSVLoggerCallback, JSONLinesLoggerCallback
from pytorch_accelerated.callbacks.monitors import ThroughputMonitorCallback
from pytorch_accelerated.callbacks.training_control import StepBasedEvaluationCallback
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

SIZES = {
    "train_samples": 64,
    "eval_samples": 13,
    "batch_size": 4,
    "num_epochs": 2,
    "log_every_n_steps": 2,
    "eval_every_n_steps": 3,
}
COLLECTIVE_TIMEOUT_S = 60


class OpenCounter:
    """Counts how many times a logger opened its file."""

    num_opens = 0

    def open(self, trainer):
        self.num_opens += 1
        super().open(trainer)


class CountingCSVLogger(OpenCounter, CSVLoggerCallback):
    pass


class CountingJSONLinesLogger(OpenCounter, JSONLinesLoggerCallback):
    pass


def run(out: Path) -> dict:
    csv_logger = CountingCSVLogger(out / "metrics.csv")
    jsonl_logger = CountingJSONLinesLogger(
        out / "metrics.jsonl", log_every_n_steps=SIZES["log_every_n_steps"]
    )
    model = make_tiny_model()
    trainer = Trainer(
        model=model,
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=[
            StepBasedEvaluationCallback(SIZES["eval_every_n_steps"]),
            csv_logger,
            jsonl_logger,
            ThroughputMonitorCallback(),
        ],
        accelerator_kwargs={
            "cpu": True,
            "kwargs_handlers": [
                InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
            ],
        },
    )
    # an evaluate() before training: the main process alone chooses the loggers' version folder
    # (only it writes); train() must still agree on it without waiting for the others forever
    trainer.evaluate(make_tiny_dataset(SIZES["eval_samples"], seed=1))
    trainer.train(
        train_dataset=make_tiny_dataset(SIZES["train_samples"]),
        eval_dataset=make_tiny_dataset(SIZES["eval_samples"], seed=1),
        num_epochs=SIZES["num_epochs"],
        per_device_batch_size=SIZES["batch_size"],
    )
    trainer.evaluate()
    history = trainer.run_history
    return {
        "process_index": trainer.accelerator.process_index,
        "num_processes": trainer.num_processes,
        "completed_update_steps": trainer.completed_update_steps,
        "metrics": {name: history.get_metric_values(name) for name in history.get_metric_names()},
        "steps": {
            name: [r.step for r in history.get_metric_records(name)] for name in history.get_metric_names()
        },
        "num_opens": {"csv": csv_logger.num_opens, "jsonl": jsonl_logger.num_opens},
    }


def write_result(out: Path, rank: int, result: dict) -> None:
    path = out / f"result_rank{rank}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(result, indent=1))
    os.replace(temporary, path)


def main(argv: list[str], run=None) -> int:
    """Run ``run(out)`` (this scenario's, or another scenario's) on this process and write its
    result, or its error, for the test to read."""
    run = run if run is not None else globals()["run"]
    if len(argv) != 2:
        print(f"usage: {argv[0]} OUTPUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    try:
        result = run(out)
    except BaseException:  # noqa: BLE001 - reported to the test, then the launch is ended
        error = traceback.format_exc()
        write_result(out, rank, {"error": error})
        print(f"[rank {rank}] failed:\n{error}", file=sys.stderr, flush=True)
        os._exit(1)  # do not wait in a collective for a process that went on
    write_result(out, rank, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
