"""One of several runs started at once with the same paths, for
``test_run_folders.py::test_runs_started_together_never_share_a_run_folder``.

    python tests/callbacks/run_folders_scenario.py FOLDER BARRIER RUN_ID NUM_RUNS

The run writes ``BARRIER/ready-<RUN_ID>`` and waits until ``NUM_RUNS`` runs have, so that all of
them start training at the same moment; then it trains the tiny model with every callback that
takes a path pointing into ``FOLDER`` (CSV and JSON Lines loggers, SaveBestModelCallback,
ModelEmaCallback, a TensorBoard tracker), recording its ``RUN_ID`` as the metric ``run_id`` every
epoch, and writes ``BARRIER/result-<RUN_ID>.json``: where each callback wrote.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pytorch_accelerated.callbacks import (
    CSVLoggerCallback,
    JSONLinesLoggerCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    TrackerCallback,
)
from pytorch_accelerated.trainer import TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training

NUM_EPOCHS = 2
BARRIER_TIMEOUT_S = 120


class RecordRunId(TrainerCallback):
    """Records which run wrote a row (``run_id``), so that the test can tell the runs' files apart."""

    def __init__(self, run_id: int):
        self.run_id = run_id

    def on_train_epoch_end(self, trainer, **kwargs):
        trainer.run_history.update_metric("run_id", self.run_id)


def wait_for_every_run(barrier: Path, run_id: int, num_runs: int) -> None:
    (barrier / f"ready-{run_id}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while len(list(barrier.glob("ready-*"))) < num_runs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the other runs never reached {barrier}")
        time.sleep(0.01)


def main() -> int:
    folder, barrier = Path(sys.argv[1]), Path(sys.argv[2])
    run_id, num_runs = int(sys.argv[3]), int(sys.argv[4])
    callbacks = [
        RecordRunId(run_id),
        CSVLoggerCallback(folder / "metrics.csv"),
        JSONLinesLoggerCallback(folder / "metrics.jsonl", log_every_n_steps=4),
        # the first epoch saves (run_id never improves after it): best.pt holds this run's id
        SaveBestModelCallback(folder / "best.pt", watch_metric="run_id", load_saved_checkpoint=False),
        ModelEmaCallback(decay=0.5, save_path=folder / "ema.pt", evaluate_during_training=False),
        TrackerCallback("tensorboard", project_name="tb", logging_dir=folder),
    ]
    wait_for_every_run(barrier, run_id, num_runs)
    run_tiny_training(callbacks=callbacks, num_epochs=NUM_EPOCHS)
    paths = {
        "csv": callbacks[1].path,
        "jsonl": callbacks[2].path,
        "best": callbacks[3].save_path,
        "ema": callbacks[4].save_path,
        "tensorboard": callbacks[5].run_folder(None),
    }
    result = {name: str(path) for name, path in paths.items()}
    (barrier / f"result-{run_id}.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
