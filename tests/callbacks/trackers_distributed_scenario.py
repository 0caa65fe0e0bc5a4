"""Training runs with TrackerCallback on several processes, checked by
``test_trackers.py::test_on_two_processes_only_main_writes_and_unreachable_stops_both``.

Run on every process of a launch::

    python -m torch.distributed.run --nproc_per_node 2 tests/callbacks/trackers_distributed_scenario.py \
        /tmp/out

Every process trains the tiny model for two epochs on the CPU (gloo) with a TrackerCallback to
TensorBoard and MLflow (a local file store) pointing at the same folder on every process; then
trains again with an MLflow tracking server that is down (a closed port) and
``on_unreachable="error"``. Each writes ``result_rank<r>.json``; a process that raises writes
``{"error": ...}`` and ends with exit status 1, so that the launcher stops the other one.
"""

from __future__ import annotations

import os
import socket
import sys
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs

from pytorch_accelerated.callbacks import TrackerCallback
from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

sys.path.insert(0, str(Path(__file__).parent))
from loggers_distributed_scenario import main as run_and_report  # noqa: E402

COLLECTIVE_TIMEOUT_S = 60


class StepCounter(TrainerCallback):
    num_steps = 0

    def on_train_step_start(self, trainer, **kwargs):
        self.num_steps += 1


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(callbacks) -> Trainer:
    model = make_tiny_model()
    trainer = Trainer(
        model=model,
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        callbacks=callbacks,
        accelerator_kwargs={
            "cpu": True,
            "kwargs_handlers": [
                InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
            ],
        },
    )
    trainer.train(
        train_dataset=make_tiny_dataset(64),
        eval_dataset=make_tiny_dataset(13, seed=1),
        num_epochs=2,
        per_device_batch_size=4,
    )
    return trainer


def run(out: Path) -> dict:
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    trainer = train(
        [TrackerCallback(["tensorboard", "mlflow"], project_name="tiny", logging_dir=out / "logs")]
    )
    result = {
        "completed_update_steps": trainer.completed_update_steps,
        "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
    }
    counter = StepCounter()
    down = {"mlflow": {"tracking_uri": f"http://127.0.0.1:{closed_port()}"}}
    try:
        train(
            [
                counter,
                TrackerCallback("mlflow", init_kwargs=down, logging_dir=out / "down", on_unreachable="error"),
            ]
        )
        result["unreachable_error"] = "none raised"
    except ConnectionError as error:
        result["unreachable_error"] = str(error)
    result["unreachable_steps"] = counter.num_steps
    return result


def main(argv: list[str]) -> int:
    return run_and_report(argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
