"""Run folders that never lose a run (run_folders.py): re-running with the same paths writes a fresh
``version_<n>`` folder, nothing of an earlier run is replaced, writing into an existing file is an
explicit choice. (Resuming into the run's own folder: test_resume.py; two processes agreeing on the
folder: test_watching.py::test_watchers_on_two_processes_stop_together_and_save_once.)"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytorch_accelerated.callbacks import (
    CSVLoggerCallback,
    JSONLinesLoggerCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
    TrackerCallback,
)
from pytorch_accelerated.callbacks.run_folders import (
    RunFolder,
    RunPath,
    choose_run_folder,
    claim_version,
    next_version,
)
from pytorch_accelerated.trainer import TrainerCallback, safe_torch_load
from pytorch_accelerated.trainer.testing import run_tiny_training

from ..launching import LAUNCH_TIMEOUT_S, REPO_ROOT, launch_env, stop_process_tree, tail
from . import run_folders_scenario as scenario

SCENARIO = str(Path(scenario.__file__).resolve().relative_to(REPO_ROOT))


def the_script(folder):
    """What a user's script creates: every path-taking callback, all pointing into ``folder``."""
    return [
        CSVLoggerCallback(folder / "metrics.csv"),
        JSONLinesLoggerCallback(folder / "metrics.jsonl", log_every_n_steps=4),
        SaveBestModelCallback(folder / "best_model.pt"),
        ModelEmaCallback(decay=0.5, save_path=folder / "ema_model.pt", evaluate_during_training=False),
    ]


def test_running_the_same_script_twice_keeps_both_runs_whole(tmp_path):
    first = run_tiny_training(callbacks=the_script(tmp_path), num_epochs=2)
    second = run_tiny_training(callbacks=the_script(tmp_path), num_epochs=1)

    assert sorted(path.name for path in tmp_path.iterdir()) == ["version_0", "version_1"]
    for version, result in (("version_0", first), ("version_1", second)):
        folder = tmp_path / version
        assert sorted(path.name for path in folder.iterdir()) == [
            "best_model.pt",
            "ema_model.pt",
            "metrics.csv",
            "metrics.jsonl",
        ]
        with open(folder / "metrics.csv", newline="") as file:
            rows = list(csv.DictReader(file))
        assert [float(row["train_loss_epoch"]) for row in rows if row["train_loss_epoch"]] == result.metrics[
            "train_loss_epoch"
        ]
        epochs = [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
        assert max(epochs) == len(result.metrics["train_loss_epoch"])
        assert safe_torch_load(folder / "best_model.pt")["epoch"] <= len(result.metrics["train_loss_epoch"])


def test_the_callbacks_say_where_their_run_writes(tmp_path):
    callbacks = the_script(tmp_path)
    assert [callback.path for callback in callbacks[:2]] == [
        tmp_path / "metrics.csv",
        tmp_path / "metrics.jsonl",
    ]
    result = run_tiny_training(callbacks=callbacks, num_epochs=1)
    assert [c.path for c in callbacks[:2]] + [c.save_path for c in callbacks[2:]] == [
        tmp_path / "version_0" / name
        for name in ("metrics.csv", "metrics.jsonl", "best_model.pt", "ema_model.pt")
    ]
    # the same callbacks keep their folder for a later train() call and evaluate()
    result.trainer.train(result.trainer.train_dataset, num_epochs=1, eval_dataset=result.trainer.eval_dataset)
    result.trainer.evaluate()
    assert callbacks[0].path == tmp_path / "version_0" / "metrics.csv"
    assert not (tmp_path / "version_1").exists()


class CountSteps(TrainerCallback):
    count = 0

    def on_train_step_start(self, trainer, **kwargs):
        self.count += 1


@pytest.mark.parametrize(
    "make_callback",
    [
        lambda path: SaveBestModelCallback(path),
        lambda path: ModelEmaCallback(save_path=path, evaluate_during_training=False),
    ],
    ids=["save-best", "ema"],
)
def test_another_runs_checkpoint_is_never_replaced(tmp_path, make_callback):
    earlier = tmp_path / "model.pt"
    earlier.write_bytes(b"another run's checkpoint")
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_0" / "model.pt").write_bytes(b"another run's version_0")

    callback = make_callback(earlier)
    run_tiny_training(callbacks=[callback], num_epochs=1)
    assert (
        callback.save_path == tmp_path / "version_1" / "model.pt" and callback.save_path.stat().st_size > 100
    )
    assert earlier.read_bytes() == b"another run's checkpoint"
    assert (tmp_path / "version_0" / "model.pt").read_bytes() == b"another run's version_0"

    # writing over it is a choice: refused before the first step with "error", done with "overwrite"
    steps = CountSteps()
    with pytest.raises(FileExistsError, match=r"model.pt already exists.*if_exists='overwrite'"):
        run_tiny_training(
            callbacks=[type(callback)(**_with(callback, earlier, "error")), steps], num_epochs=1
        )
    assert steps.count == 0 and earlier.read_bytes() == b"another run's checkpoint"
    overwriting = type(callback)(**_with(callback, earlier, "overwrite"))
    run_tiny_training(callbacks=[overwriting], num_epochs=1)
    assert overwriting.save_path == earlier and safe_torch_load(earlier)


def _with(callback, path, if_exists) -> dict:
    extra = {"evaluate_during_training": False} if isinstance(callback, ModelEmaCallback) else {}
    return {"save_path": path, "if_exists": if_exists, **extra}


def test_an_unknown_or_meaningless_if_exists_is_refused_at_creation(tmp_path):
    """An unknown or meaningless ``if_exists`` is refused when the callback is created."""
    with pytest.raises(
        ValueError, match="if_exists must be one of 'new_version', 'error', 'overwrite'; got 'append'"
    ):
        SaveBestModelCallback(tmp_path / "best.pt", if_exists="append")
    with pytest.raises(ValueError, match="CSVLoggerCallback: if_exists must be one of .*got 'replace'"):
        CSVLoggerCallback(tmp_path / "m.csv", if_exists="replace")


def test_a_version_is_never_used_again_once_its_folder_exists(tmp_path):
    (tmp_path / "version_0").mkdir()  # a run killed before its first record, or one starting now
    assert next_version(tmp_path) == 1
    (tmp_path / "version_7" / "states").mkdir(parents=True)  # never reused, as Lightning numbers them
    assert next_version(tmp_path) == 8
    assert claim_version(tmp_path) == 8 and claim_version(tmp_path) == 9
    assert claim_version(tmp_path, start=3) == 10


def test_runs_started_together_never_share_a_run_folder(tmp_path):
    """Two scripts with the same paths, started at the same moment (each waits for the other at a
    barrier before train()): each writes every file into a version folder of its own."""
    folder, barrier = tmp_path / "runs", tmp_path / "barrier"
    barrier.mkdir()
    logs = [tmp_path / f"run-{run_id}.log" for run_id in range(2)]
    runs = []
    for run_id, log in enumerate(logs):
        with open(log, "w") as output:
            command = [sys.executable, SCENARIO, str(folder), str(barrier), str(run_id), "2"]
            env = launch_env(tmp_path)
            runs.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=output))
    for run, log in zip(runs, logs):
        try:
            assert run.wait(timeout=LAUNCH_TIMEOUT_S) == 0, tail(log.read_text())
        except subprocess.TimeoutExpired:
            stop_process_tree(run)
            pytest.fail(f"a run hung:\n{tail(log.read_text())}")

    results = [json.loads((barrier / f"result-{run_id}.json").read_text()) for run_id in range(2)]
    folders = [{Path(p) if key == "tensorboard" else Path(p).parent for key, p in r.items()} for r in results]
    assert all(len(run_folders) == 1 for run_folders in folders), f"a run's files are spread out: {results}"
    assert folders[0] != folders[1], f"both runs wrote into {folders[0]}"
    for run_id, result in enumerate(results):
        with open(result["csv"], newline="") as file:
            rows = [row for row in csv.DictReader(file) if row["run_id"]]
        assert [row["run_id"] for row in rows] == [str(run_id)] * scenario.NUM_EPOCHS, result["csv"]
        lines = [json.loads(line) for line in Path(result["jsonl"]).read_text().splitlines()]
        assert {line["run_id"] for line in lines if "run_id" in line} == {run_id}, result["jsonl"]
        assert safe_torch_load(result["best"])["run_id"] == run_id, f"{result['best']} is the other run's"
        assert safe_torch_load(result["ema"])["model_state_dict"]
        event_files = list((Path(result["tensorboard"]) / "tb").glob("events.out.tfevents.*"))
        assert len(event_files) == 1, f"two TensorBoard writers in {result['tensorboard']}: {event_files}"


class TrackerFolder(TrainerCallback):
    """What a tracker callback does with its ``logging_dir``."""

    def __init__(self, logging_dir):
        self.logging_dir = logging_dir
        self.folder = None

    def on_training_run_start(self, trainer, **kwargs):
        self.folder = choose_run_folder(trainer, self.logging_dir)


def test_trackers_share_the_runs_versioned_folder_with_the_file_loggers(tmp_path):
    """A trackers folder is the versioned folder of the run it shares with the file loggers."""
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_0" / "events").write_text("an earlier run's events")
    csv_logger, tracker = CSVLoggerCallback(tmp_path / "metrics.csv"), TrackerFolder(tmp_path)
    run_tiny_training(callbacks=[csv_logger, tracker], num_epochs=1)
    assert (
        tracker.folder == tmp_path / "version_1" and csv_logger.path == tmp_path / "version_1" / "metrics.csv"
    )


class TrackerWithState(TrainerCallback):
    """A tracker's folder as a callback keeps it: chosen at the run's start, carried in its state."""

    def __init__(self, logging_dir):
        self.folder = RunFolder(logging_dir)

    def on_training_run_start(self, trainer, **kwargs):
        self.folder.start_run(trainer)

    def on_train_step_end(self, trainer, **kwargs):
        self.folder.path.mkdir(parents=True, exist_ok=True)
        (self.folder.path / "events").write_text(f"step {trainer.completed_update_steps}")

    def state_dict(self):
        return self.folder.state_dict()

    def load_state_dict(self, state_dict):
        self.folder.load_state_dict(state_dict)


def test_a_resumed_run_continues_its_trackers_folder_a_new_run_the_next(tmp_path):
    """A resumed run continues its trackers folder and a new run takes the next."""
    from pytorch_accelerated.callbacks import SaveTrainingStateCallback

    logs = tmp_path / "logs"
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    run_tiny_training(callbacks=[TrackerWithState(logs), saver], num_epochs=2)
    # a new process: a fresh callback, which learns its folder from the state
    resumed = TrackerWithState(logs)
    run_tiny_training(callbacks=[resumed], num_epochs=2, resume_from=saver.saved_paths[1])
    assert resumed.folder.path == logs / "version_0"
    fresh = TrackerWithState(logs)
    run_tiny_training(callbacks=[fresh], num_epochs=1)
    assert fresh.folder.path == logs / "version_1"
    with pytest.raises(ValueError, match="RunFolder: if_exists must be one of 'new_version', 'append'"):
        RunFolder(logs, if_exists="overwrite")


class InterruptAtEpochEnd(TrainerCallback):
    """Interrupts the run at the end of ``epoch``, after the loggers wrote it, before its state is saved."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_training_run_epoch_end(self, trainer, **kwargs):
        if trainer.run_history.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_run_folder_moved_elsewhere_resumes_in_its_new_place(tmp_path):
    def the_run(folder):
        saver = SaveTrainingStateCallback(folder / "states", save_every_n_epochs=1)
        tracker = TrackerCallback("tensorboard", project_name="tb", logging_dir=folder)
        return [*the_script(folder), tracker, saver]

    old, new = tmp_path / "old", tmp_path / "moved" / "new"
    with pytest.raises(KeyboardInterrupt):
        run_tiny_training(callbacks=[*the_run(old), InterruptAtEpochEnd(2)], num_epochs=3)
    shutil.move(old, new)  # the whole run folder, as to another machine
    callbacks = the_run(new)
    run_tiny_training(callbacks=callbacks, num_epochs=3, resume_from="latest")

    assert not old.exists(), f"the resumed run wrote into the old folder: {sorted(old.rglob('*'))}"
    assert sorted(path.name for path in new.iterdir()) == ["states", "version_0"]
    run = new / "version_0"
    csv_logger, jsonl_logger, best, ema, tracker = callbacks[:5]
    paths = [csv_logger.path, jsonl_logger.path, best.save_path, ema.save_path, tracker.run_folder(None)]
    names = ["metrics.csv", "metrics.jsonl", "best_model.pt", "ema_model.pt"]
    assert paths == [*(run / name for name in names), run]
    with open(run / "metrics.csv", newline="") as file:
        assert [row["epoch"] for row in csv.DictReader(file) if row["train_loss_epoch"]] == ["1", "2", "3"]
    logged_epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged_epochs == sorted(logged_epochs) and logged_epochs[-1] == 3
    assert safe_torch_load(run / "ema_model.pt") and safe_torch_load(run / "best_model.pt")["epoch"] >= 1
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 2  # the interrupted and the resumed run's


def test_a_state_that_holds_the_absolute_path_as_0_4_0_saved_it_loads(tmp_path):
    run_path, folder = RunPath(tmp_path / "metrics.csv"), RunFolder(tmp_path / "runs")
    run_path.load_state_dict({"run_path": "/elsewhere/version_2/metrics.csv"})
    folder.load_state_dict({"run_folder": "/elsewhere/runs/version_2"})
    assert run_path.path == Path("/elsewhere/version_2/metrics.csv")
    assert folder.path == Path("/elsewhere/runs/version_2")
    # the next state saved holds it as the new format does
    assert run_path.state_dict() == folder.state_dict() == {"run_subfolder": "version_2"}
    run_path.load_state_dict({"run_subfolder": "version_2"})
    assert run_path.path == tmp_path / "version_2" / "metrics.csv"
    assert run_path.state_dict() == {"run_subfolder": "version_2"}
