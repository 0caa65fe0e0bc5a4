"""TrackerCallback inside real tiny training runs, each tracker's log read back with its own reader:
TensorBoard's EventAccumulator, the MLflow client on a local file store, W&B's offline run file."""

from __future__ import annotations

import importlib.util
import re
import struct
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.tracking import GeneralTracker

from pytorch_accelerated.callbacks import (
    MLflowLoggerCallback,
    SaveTrainingStateCallback,
    TrackerCallback,
)
from pytorch_accelerated.trainer import TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training

from ..launching import free_port, run_scenario_on_two_processes
from . import trackers_distributed_scenario as scenario
from .helpers import CrashAtUpdate, StopAtEpochEnd

# The tiny run: 64 samples in batches of 8, so 8 optimizer updates per epoch.
UPDATES_PER_EPOCH = 8
HAS_WANDB = importlib.util.find_spec("wandb") is not None


class RecordingTracker(GeneralTracker):
    """A tracker of the user's own: records what it was asked to do."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self, fail_from_step: int | None = None):
        super().__init__()
        self.calls: list[tuple] = []
        self.fail_from_step = fail_from_step

    @property
    def tracker(self):
        return self

    def start(self):
        self.calls.append(("start",))

    def store_init_configuration(self, values):
        self.calls.append(("config", dict(values)))

    def log(self, values, step=None, **kwargs):
        if self.fail_from_step is not None and step >= self.fail_from_step:
            raise ConnectionError("the tracking server went away")
        self.calls.append(("log", step, dict(values)))

    def finish(self):
        self.calls.append(("finish",))

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


class FirstStepClock(TrainerCallback):
    """When the first training step started (time.perf_counter), and how many steps ran."""

    def __init__(self):
        self.first_step_at: float | None = None
        self.num_steps = 0

    def on_train_step_start(self, trainer, **kwargs):
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        self.num_steps += 1


@pytest.fixture
def mlflow_env(monkeypatch):
    """No MLflow setting of the test process leaks in, and none the callback sets leaks out."""
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_RUN_ID",
        "MLFLOW_ALLOW_FILE_STORE",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    ):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    yield
    import mlflow

    while mlflow.active_run() is not None:  # a run left open would make the next test's start_run fail
        mlflow.end_run()


def mlflow_client(store: Path):
    from mlflow import MlflowClient

    return MlflowClient(store.resolve().as_uri())


def mlflow_history(client, run_id: str, name: str) -> list[tuple[int, float]]:
    return [(metric.step, metric.value) for metric in client.get_metric_history(run_id, name)]


def tensorboard_hparams(run_dir: Path) -> dict:
    """The hparams TensorBoard holds for a run folder (written to a subfolder by add_hparams)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    # accelerate writes hparams.yml into a folder of its own beside add_hparams's
    (hparams_dir,) = [path for path in run_dir.iterdir() if path.is_dir() and any(path.glob("events.out.*"))]
    events = EventAccumulator(str(hparams_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {key: getattr(value, value.WhichOneof("kind")) for key, value in hparams.items()}


def wandb_records(wandb_dir: Path, timeout_s: float = 60) -> list:
    """The records of every offline W&B run under ``wandb_dir``, in order, parsed with W&B's own
    protobuf schema, once each run file holds its exit record: W&B's core process writes the file
    on its own, and may still be writing it when ``run.finish()`` has returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [
            read_wandb_run_file(path) for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
        ]
        complete = all(any(r.WhichOneof("record_type") == "exit" for r in records) for records in runs)
        if runs and complete or time.monotonic() > deadline:
            return [record for records in runs for record in records]
        time.sleep(0.2)


def read_wandb_run_file(path: Path) -> list:
    """W&B 0.31 ships no Python reader of its run file (its core is in Go); the file is LevelDB's
    log format: a 7-byte header, then 32 KiB blocks of chunks, each with a 7-byte header (CRC,
    length, type: 1 full, 2 first, 3 middle, 4 last); a record is W&B's protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2

    records = []
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left_in_block = 32768 - position % 32768
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left_in_block < 7 or (length == 0 and kind == 0):
            position += left_in_block  # the block's padding
            continue
        if position + 7 + length > len(data):
            break  # a chunk still being written
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(records) -> list[dict]:
    import json

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    return [
        {
            key(item): json.loads(item.value_json)
            for item in record.history.item
            if not key(item).startswith("_")
        }
        | {"_step": record.history.step.num}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]


# ---------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_gets_scalars_at_their_update_step_and_hparams(tmp_path):
    """TensorBoard gets every scalar at its update step and the run settings as hparams."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = TrackerCallback(
        "tensorboard",
        project_name="tiny",
        logging_dir=tmp_path,
        config={"seed": 7, "data": "tiny"},
        log_every_n_steps=4,
    )
    result = run_tiny_training(callbacks=[callback], num_epochs=2)

    events = EventAccumulator(str(tmp_path / "version_0" / "tiny"))  # each run its own version_<n>
    events.Reload()
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert [(s.step, s.value) for s in events.Scalars(name)] == [
            (step, pytest.approx(value, rel=1e-6))
            for step, value in zip([UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH], result.metrics[name])
        ]
    assert [s.step for s in events.Scalars("train_loss_step")] == [4, 8, 12, 16]
    assert {s.step: s.value for s in events.Scalars("epoch")} == {4: 1, 8: 1, 12: 2, 16: 2}

    hparams = tensorboard_hparams(tmp_path / "version_0" / "tiny")
    assert hparams["num_epochs"] == 2 and hparams["train_per_device_batch_size"] == 8
    assert hparams["num_training_steps"] == 2 * UPDATES_PER_EPOCH
    assert hparams["optimizer"] == "SGD" and hparams["optimizer_lr"] == pytest.approx(0.05)
    assert hparams["seed"] == 7 and hparams["data"] == "tiny"


def test_running_the_script_again_writes_a_new_version_folder(tmp_path):
    """Running the same script again writes a new version folder and keeps the first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = TrackerCallback("tensorboard", project_name="tiny", logging_dir=tmp_path)
    run_tiny_training(callbacks=[first], num_epochs=1)
    first_files = sorted(p.relative_to(tmp_path) for p in (tmp_path / "version_0").rglob("*") if p.is_file())
    second = TrackerCallback("tensorboard", project_name="tiny", logging_dir=tmp_path)
    run_tiny_training(callbacks=[second], num_epochs=1)

    assert second.run_folder(None) == tmp_path / "version_1"
    assert (
        sorted(p.relative_to(tmp_path) for p in (tmp_path / "version_0").rglob("*") if p.is_file())
        == first_files
    )
    for version in ("version_0", "version_1"):
        events = EventAccumulator(str(tmp_path / version / "tiny"))
        events.Reload()
        assert [s.step for s in events.Scalars("train_loss_epoch")] == [UPDATES_PER_EPOCH]
    appending = TrackerCallback("tensorboard", project_name="tiny", logging_dir=tmp_path, if_exists="append")
    run_tiny_training(callbacks=[appending], num_epochs=1)
    assert appending.run_folder(None) == tmp_path and (tmp_path / "tiny").is_dir()


# ---------------------------------------------------------------------------------------- MLflow


def test_mlflow_gets_the_metric_history_by_update_step_and_params(tmp_path, mlflow_env):
    """MLflow gets the metric history by update step and the settings as params."""
    callback = TrackerCallback(
        "mlflow", project_name="tests", logging_dir=tmp_path, config={"seed": 7}, log_every_n_steps=4
    )
    result = run_tiny_training(callbacks=[callback], num_epochs=2)
    evaluation = result.trainer.evaluate()

    client = mlflow_client(tmp_path / "mlruns")  # the default store: a local one under logging_dir
    run = client.get_run(callback.run_ids["mlflow"])
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    params = run.data.params
    settings = (params["num_epochs"], params["optimizer"], params["optimizer_lr"], params["seed"])
    assert settings == ("2", "SGD", "0.05", "7")
    assert mlflow_history(client, run.info.run_id, "train_loss_epoch") == list(
        zip([UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH], result.metrics["train_loss_epoch"])
    )
    assert [step for step, _ in mlflow_history(client, run.info.run_id, "train_loss_step")] == [4, 8, 12, 16]
    # evaluate() after training goes to the training's MLflow run, at the step training ended on
    assert mlflow_history(client, run.info.run_id, "eval_loss") == [(16, evaluation["eval_loss"])]


def test_mlflow_logger_goes_on_with_its_mlflow_run_after_a_resume(tmp_path, mlflow_env):
    store, states = tmp_path / "mlruns", tmp_path / "states"

    def callbacks():
        return [
            MLflowLoggerCallback(experiment_name="tests", tracking_uri=store),
            SaveTrainingStateCallback(states, save_every_n_epochs=1, handle_signals=False),
        ]

    first = callbacks()
    with pytest.raises(RuntimeError, match="crash"):
        run_tiny_training(callbacks=[*first, CrashAtUpdate(12, RuntimeError("crash"))], num_epochs=2)
    client = mlflow_client(store)
    assert client.get_run(first[0].run_id).info.status == "FAILED"

    second = callbacks()
    result = run_tiny_training(callbacks=second, num_epochs=2, resume_from=states)
    assert second[0].run_id == first[0].run_id
    run = client.get_run(first[0].run_id)
    assert run.info.status == "FINISHED"
    assert mlflow_history(client, run.info.run_id, "train_loss_epoch") == list(
        zip([UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH], result.metrics["train_loss_epoch"])
    )
    assert len(client.search_runs([run.info.experiment_id])) == 1


# ---------------------------------------------------------------------------------------- W&B


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'trainer-callbacks[wandb]')")
def test_wandb_offline_run_holds_every_metric_at_its_step_and_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = TrackerCallback(
        "wandb", project_name="tiny", logging_dir=tmp_path, config={"seed": 7}, log_every_n_steps=4
    )
    result = run_tiny_training(callbacks=[callback], num_epochs=2)

    records = wandb_records(tmp_path / "version_0")
    history = wandb_history(records)
    assert [row["_step"] for row in history] == [4, 8, 12, 16]
    assert [row["train_loss_epoch"] for row in history if "train_loss_epoch" in row] == pytest.approx(
        result.metrics["train_loss_epoch"], rel=1e-6
    )
    assert [row["_step"] for row in history if "eval_loss_epoch" in row] == [8, 16]
    config = {
        item.key: item.value_json
        for record in records
        if record.WhichOneof("record_type") == "config"
        for item in record.config.update
    }
    assert (config["optimizer"], config["seed"], config["num_epochs"]) == ('"SGD"', "7", "2")
    (exit_record,) = [record.exit for record in records if record.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


# ---------------------------------------------------------------------------------------- ways out of train()


@pytest.mark.parametrize(
    "error, mlflow_status", [(RuntimeError("crash"), "FAILED"), (KeyboardInterrupt(), "KILLED")]
)
def test_a_crash_mid_run_ends_every_tracker(tmp_path, monkeypatch, mlflow_env, error, mlflow_status):
    import mlflow

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    own = RecordingTracker()
    names = ["tensorboard", "mlflow", *(["wandb"] if HAS_WANDB else [])]
    callback = TrackerCallback([*names, own], project_name="tiny", logging_dir=tmp_path, log_every_n_steps=2)
    with pytest.raises(type(error)):
        run_tiny_training(callbacks=[callback, CrashAtUpdate(5, error)], num_epochs=2)

    assert own.kinds() == ["start", "config", "log", "log", "finish"]  # updates 2 and 4 logged, then ended
    assert mlflow.active_run() is None
    assert mlflow_client(tmp_path / "mlruns").get_run(callback.run_ids["mlflow"]).info.status == mlflow_status
    if HAS_WANDB:
        (exit_record,) = [
            r.exit for r in wandb_records(tmp_path / "version_0") if r.WhichOneof("record_type") == "exit"
        ]
        assert exit_record.exit_code == 1


class FailsToFinish(RecordingTracker):
    def finish(self):
        raise ConnectionError("the tracking server went away")


def test_a_tracker_failing_to_end_after_a_crash_leaves_the_crash_raised(tmp_path):
    """A tracker that fails to end after a crash leaves the crash as the error."""
    failing, own = FailsToFinish(), RecordingTracker()
    callback = TrackerCallback([failing, own], logging_dir=tmp_path, on_unreachable="error")
    with pytest.warns(UserWarning, match="the recording tracker failed to end its run"):
        with pytest.raises(RuntimeError, match="crash"):
            run_tiny_training(callbacks=[callback, CrashAtUpdate(3, RuntimeError("crash"))], num_epochs=1)
    assert own.kinds()[-1] == "finish"  # the trackers after the failing one are ended all the same


def test_a_stopped_run_ends_the_trackers_finished(tmp_path, mlflow_env):
    own = RecordingTracker()
    # epoch values only
    callback = TrackerCallback(["mlflow", own], logging_dir=tmp_path, log_every_n_steps=None)
    run_tiny_training(callbacks=[StopAtEpochEnd(), callback], num_epochs=3)
    assert own.kinds() == ["start", "config", "log", "finish"]
    step, values = own.calls[2][1:]
    assert step == UPDATES_PER_EPOCH and values["epoch"] == 1 and "train_loss_epoch" in values
    assert mlflow_client(tmp_path / "mlruns").get_run(callback.run_ids["mlflow"]).info.status == "FINISHED"


# ---------------------------------------------------------------------------------------- a tracker that is
# down


@pytest.mark.timeout(120)  # without a bounded check, MLflow retries an unreachable server for minutes
def test_an_unreachable_mlflow_server_is_warned_about_and_training_starts(tmp_path, mlflow_env):
    """An unreachable MLflow server is warned about and training starts within seconds."""
    uri = f"http://127.0.0.1:{free_port()}"  # a closed port: nothing listens there
    own, clock = RecordingTracker(), FirstStepClock()
    callback = TrackerCallback(
        ["mlflow", own],
        logging_dir=tmp_path,
        init_kwargs={"mlflow": {"tracking_uri": uri}},
        log_every_n_steps=None,
    )
    started = time.perf_counter()
    with pytest.warns(UserWarning, match=re.escape(f"the MLflow tracking server {uri} is unreachable")):
        run_tiny_training(callbacks=[clock, callback], num_epochs=1)
    assert clock.first_step_at - started < 10  # measured about 0.1 s here
    assert own.kinds() == ["start", "config", "log", "finish"]  # the other trackers log as usual
    assert "mlflow" not in callback.run_ids


def test_an_unreachable_server_with_on_unreachable_error_stops_at_once(tmp_path, mlflow_env):
    """An unreachable server with ``on_unreachable="error"`` stops before step 1."""
    uri = f"http://127.0.0.1:{free_port()}"
    clock = FirstStepClock()
    callback = TrackerCallback(
        "mlflow", logging_dir=tmp_path, init_kwargs={"mlflow": {"tracking_uri": uri}}, on_unreachable="error"
    )
    with pytest.raises(ConnectionError, match=re.escape(f"the MLflow tracking server {uri} is unreachable")):
        run_tiny_training(callbacks=[clock, callback], num_epochs=1)
    assert clock.num_steps == 0


def test_a_tracker_failing_mid_run_is_dropped_with_a_warning(tmp_path):
    """A tracker that fails mid-run is dropped with a warning and training goes on."""
    failing, healthy = RecordingTracker(fail_from_step=UPDATES_PER_EPOCH * 2), RecordingTracker()
    callback = TrackerCallback([failing, healthy], logging_dir=tmp_path, log_every_n_steps=None)
    with pytest.warns(
        UserWarning, match="the recording tracker failed to log .*the tracking server went away"
    ):
        result = run_tiny_training(callbacks=[callback], num_epochs=3)
    assert len(result.metrics["train_loss_epoch"]) == 3
    assert [call[1] for call in healthy.calls if call[0] == "log"] == [8, 16, 24]
    assert [call[1] for call in failing.calls if call[0] == "log"] == [8]

    strict = TrackerCallback(RecordingTracker(fail_from_step=1), logging_dir=tmp_path, on_unreachable="error")
    with pytest.raises(ConnectionError, match="went away"):
        run_tiny_training(callbacks=[strict], num_epochs=1)


# ---------------------------------------------------------------------------------------- set-up errors


@pytest.mark.parametrize(
    "name", ["wandb", "comet_ml", "aim", "clearml", "dvclive", "trackio", "mlflow", "tensorboard"]
)
def test_a_tracker_whose_package_is_missing_names_its_extra_at_creation(monkeypatch, name):
    """A tracker whose package is missing names its extra when the callback is created."""
    monkeypatch.setitem(sys.modules, name, None)  # what importing an uninstalled package does
    message = f"TrackerCallback needs {name}: pip install 'trainer-callbacks[{name}]'"
    with pytest.raises(ImportError, match=re.escape(message)):
        TrackerCallback(name)


def test_bad_arguments_are_refused_when_the_callback_is_created(tmp_path):
    with pytest.raises(ValueError, match="Unsupported logging capability: tensorbord"):
        TrackerCallback("tensorbord", logging_dir=tmp_path)
    message = "init_kwargs names trackers this callback does not log to: ['wandb']"
    with pytest.raises(ValueError, match=re.escape(message)):
        TrackerCallback("tensorboard", logging_dir=tmp_path, init_kwargs={"wandb": {"tags": ["a"]}})
    with pytest.raises(ValueError, match="on_unreachable must be 'warn' or 'error'"):
        TrackerCallback("tensorboard", logging_dir=tmp_path, on_unreachable="ignore")


# ---------------------------------------------------------------------------------------- two processes


def test_on_two_processes_only_main_writes_and_unreachable_stops_both(tmp_path, mlflow_env, monkeypatch):
    """On two processes only the main one writes and an unreachable server stops both."""
    results, _ = run_scenario_on_two_processes(scenario.__file__, tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read the store the processes wrote
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    event_files = sorted((out / "logs" / "version_0" / "tiny").glob("events.out.tfevents.*"))
    assert len(event_files) == 1  # one writer: the main process's
    events = EventAccumulator(str(out / "logs" / "version_0" / "tiny"))
    events.Reload()
    updates = results[0]["completed_update_steps"]
    assert [s.step for s in events.Scalars("train_loss_epoch")] == [updates // 2, updates]
    assert [s.value for s in events.Scalars("train_loss_epoch")] == pytest.approx(
        results[1]["train_loss_epoch"]
    )

    client = mlflow_client(out / "logs" / "mlruns")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["num_processes"] == "2"
    # on_unreachable="error": both processes stopped before their first step, with the main one's reason
    assert [result["unreachable_steps"] for result in results] == [0, 0]
    assert "the MLflow tracking server http://127.0.0.1:" in results[0]["unreachable_error"]
    assert "a tracking server is unreachable from the main process" in results[1]["unreachable_error"]


def test_all_means_every_tracker_installed_plus_your_own(tmp_path):
    from accelerate.tracking import get_available_trackers

    own = RecordingTracker()
    callback = TrackerCallback(["all", own], logging_dir=tmp_path)
    assert callback.trackers[0] is own
    assert callback.trackers[1:] == [str(tracker.value) for tracker in get_available_trackers()]
    assert {"tensorboard", "mlflow"} <= set(callback.trackers[1:])


# ------------------------------------------------------------------------ issue 27: what a switcher expects


class RecordsAnImageAndAVector(TrainerCallback):
    """Records a tensor image and a 1-D tensor after every evaluation, as a user's callback would."""

    def on_eval_epoch_end(self, trainer, **kwargs):
        trainer.run_history.update_metric("sample", torch.rand(3, 8, 8))
        trainer.run_history.update_metric("weights", torch.randn(100))


class DrawsWithTheWriter(TrainerCallback):
    """Draws an image of its own with TensorBoard's SummaryWriter, reached through get_tracker."""

    def __init__(self, tracker_callback):
        self.tracker_callback = tracker_callback

    def on_training_run_epoch_end(self, trainer, **kwargs):
        writer = self.tracker_callback.get_tracker("tensorboard", unwrap=True)
        writer.add_image("drawn", torch.zeros(1, 4, 4), global_step=trainer.completed_update_steps)


def test_tensorboard_gets_an_image_tensor_as_image_a_vector_as_histogram(tmp_path):
    """A tensor image reaches TensorBoard as an image and a vector as a histogram."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = TrackerCallback("tensorboard", project_name="tiny", logging_dir=tmp_path)
    run_tiny_training(
        callbacks=[RecordsAnImageAndAVector(), callback, DrawsWithTheWriter(callback)], num_epochs=2
    )

    events = EventAccumulator(
        str(tmp_path / "version_0" / "tiny"), size_guidance={"images": 0, "histograms": 0}
    )
    events.Reload()
    epoch_ends = [UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH]
    images = [(image.step, image.width, image.height) for image in events.Images("sample")]
    assert images == [(step, 8, 8) for step in epoch_ends]
    assert [histogram.step for histogram in events.Histograms("weights")] == epoch_ends
    assert [histogram.histogram_value.num for histogram in events.Histograms("weights")] == [100, 100]
    assert [image.step for image in events.Images("drawn")] == epoch_ends, "get_tracker's SummaryWriter"


def test_get_tracker_names_what_it_has_and_is_empty_on_the_other_processes(tmp_path):
    from pytorch_accelerated.trainer import Trainer

    class NotMainProcessTrainer(Trainer):
        @property
        def is_world_process_zero(self) -> bool:
            return False

    callback = TrackerCallback("tensorboard", logging_dir=tmp_path)
    message = "TrackerCallback has no tracker 'wandb'; its trackers: ['tensorboard']"
    with pytest.raises(ValueError, match=re.escape(message)):
        callback.get_tracker("wandb")
    with pytest.raises(RuntimeError, match="call get_tracker from a callback's event during train"):
        callback.get_tracker("tensorboard")

    seen = []

    class Reaches(TrainerCallback):
        def on_training_run_epoch_end(self, trainer, **kwargs):
            seen.append(callback.get_tracker("tensorboard"))

    run_tiny_training(callbacks=[callback, Reaches()], num_epochs=1, trainer_class=NotMainProcessTrainer)
    assert type(seen[0]) is GeneralTracker, (
        "another process: accelerate's empty tracker, whose calls do nothing"
    )


def test_with_no_options_a_tracker_logs_the_loss_and_the_lr_about_20_times(tmp_path):
    own = RecordingTracker()
    run_tiny_training(callbacks=[TrackerCallback(own, logging_dir=tmp_path)], num_epochs=8)  # 64 updates
    logged = [(step, values) for kind, step, values in (c for c in own.calls if c[0] == "log")]
    loss_steps = [step for step, values in logged if "train_loss_step" in values]
    assert loss_steps == list(range(3, 65, 3)), f"every 3rd of 64 updates (64 // 20): {loss_steps}"
    assert [step for step, values in logged if "lr" in values] == loss_steps
    assert all(values["lr"] == pytest.approx(0.05) for _, values in logged if "lr" in values)
    assert len({step for step, _ in logged}) == len(logged), "one log call per step"


def test_the_default_cadence_reads_the_device_only_at_the_updates_it_logs(tmp_path, monkeypatch):
    reads = []
    for method in ("item", "tolist"):
        original = getattr(torch.Tensor, method)
        counted = lambda tensor, original=original: reads.append(1) or original(tensor)  # noqa: E731
        monkeypatch.setattr(torch.Tensor, method, counted)
    run_tiny_training(num_epochs=8)
    reads_without_tracker = len(reads)
    reads.clear()
    run_tiny_training(callbacks=[TrackerCallback(RecordingTracker(), logging_dir=tmp_path)], num_epochs=8)
    assert len(reads) - reads_without_tracker == len(range(3, 65, 3)), (
        "one read per logged update, none between"
    )


def test_with_a_learning_rate_monitor_the_lr_is_recorded_once_per_update(tmp_path):
    from pytorch_accelerated.callbacks import CSVLoggerCallback, LearningRateMonitorCallback

    own = RecordingTracker()
    callbacks = [
        LearningRateMonitorCallback(),
        TrackerCallback(own, logging_dir=tmp_path),
        CSVLoggerCallback(tmp_path / "m.csv", log_every_n_steps=2),
    ]
    result = run_tiny_training(callbacks=callbacks, num_epochs=2)
    assert [record.step for record in result.run_history.get_metric_records("lr")] == list(range(1, 17))
