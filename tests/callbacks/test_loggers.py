"""The loggers inside real tiny training runs, their logs read back with each tool's own reader."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.callbacks.extras import require_extra
from pytorch_accelerated.callbacks import (
    CSVLoggerCallback,
    JSONLinesLoggerCallback,
    MLflowLoggerCallback,
    TensorBoardLoggerCallback,
)
from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, run_tiny_training

from ..launching import run_launch, tail, torchrun_command
from . import loggers_distributed_scenario as scenario
from .helpers import StopAtEpochEnd

# The tiny run: 64 samples in batches of 8, so 8 optimizer updates per epoch.
UPDATES_PER_EPOCH = 8


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def version(path: Path, number: int = 0) -> Path:
    """Where a logger given ``path`` writes its ``number``-th run (by default: a version_<n> folder)."""
    return path.parent / f"version_{number}" / path.name


class BatchLosses(TrainerCallback):
    """The training loss of every batch, by the optimizer update it belongs to (1-based)."""

    def __init__(self):
        self.by_update: dict[int, list[float]] = {}

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.by_update.setdefault(trainer.completed_update_steps + 1, []).append(batch_output["loss"].item())


class RecordsLateMetric(TrainerCallback):
    """Records ``late_metric`` from the second epoch on only."""

    def on_train_epoch_end(self, trainer, **kwargs):
        if trainer.run_history.current_epoch >= 2:
            trainer.run_history.update_metric("late_metric", 10.0 * trainer.run_history.current_epoch)


class NotMainProcessTrainer(Trainer):
    """A single-process trainer that reports not being the main process."""

    @property
    def is_world_process_zero(self) -> bool:
        return False


# ---------------------------------------------------------------------------------------- CSV / JSON Lines


def test_csv_has_one_row_per_epoch_with_the_history_and_the_evaluation(tmp_path):
    """The CSV has one row per epoch with the run history's values and the evaluation."""
    path = tmp_path / "logs" / "metrics.csv"
    result = run_tiny_training(callbacks=[CSVLoggerCallback(path)], num_epochs=2)
    evaluation = result.trainer.evaluate()

    rows = read_csv(version(path))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert [int(row["step"]) for row in rows] == [UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH]
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert [float(row[name]) for row in rows] == result.metrics[name]
    # evaluate() after training, at the last epoch's step: a column of that step's row
    assert rows[0]["eval_loss"] == "" and float(rows[1]["eval_loss"]) == evaluation["eval_loss"]
    result.trainer.evaluate(make_tiny_dataset(16, seed=5))  # another eval_loss at that step: a row of its own
    assert [row["eval_loss"] != "" for row in read_csv(version(path))] == [False, True, True]


def test_csv_keeps_one_header_when_a_metric_appears_later(tmp_path):
    path = tmp_path / "metrics.csv"
    result = run_tiny_training(callbacks=[RecordsLateMetric(), CSVLoggerCallback(path)], num_epochs=3)

    lines = version(path).read_text().splitlines()
    assert lines[0].startswith("epoch,step,") and sum(line.startswith("epoch,") for line in lines) == 1
    rows = read_csv(version(path))
    assert [row["late_metric"] for row in rows] == ["", "20.0", "30.0"]
    assert [float(row["train_loss_epoch"]) for row in rows] == result.metrics["train_loss_epoch"]


def test_jsonl_has_one_record_per_epoch_and_one_per_evaluation(tmp_path):
    path = tmp_path / "metrics.jsonl"
    result = run_tiny_training(callbacks=[JSONLinesLoggerCallback(path)], num_epochs=2)
    evaluation = result.trainer.evaluate()

    records = read_jsonl(version(path))
    assert records[:2] == [
        {
            "epoch": epoch,
            "step": epoch * UPDATES_PER_EPOCH,
            "train_loss_epoch": result.metrics["train_loss_epoch"][epoch - 1],
            "eval_loss_epoch": result.metrics["eval_loss_epoch"][epoch - 1],
        }
        for epoch in (1, 2)
    ]
    assert records[2] == {"epoch": 2, "step": 2 * UPDATES_PER_EPOCH, "eval_loss": evaluation["eval_loss"]}


def test_step_losses_are_logged_every_n_updates_as_the_update_mean(tmp_path):
    path = tmp_path / "metrics.jsonl"
    losses = BatchLosses()
    run_tiny_training(
        callbacks=[losses, JSONLinesLoggerCallback(path, log_every_n_steps=3)],
        num_epochs=2,
        gradient_accumulation_steps=2,
    )
    # 8 batches per epoch, accumulation 2: 4 updates per epoch, 8 in all; updates 3 and 6 logged
    step_records = [record for record in read_jsonl(version(path)) if "train_loss_step" in record]
    assert [(record["epoch"], record["step"]) for record in step_records] == [(1, 3), (2, 6)]
    for record in step_records:
        batch_losses = losses.by_update[record["step"]]
        assert len(batch_losses) == 2
        assert record["train_loss_step"] == pytest.approx(sum(batch_losses) / 2, rel=1e-6)


def test_step_losses_are_read_from_the_device_only_when_logged(tmp_path, monkeypatch):
    """Without the logger the run reads no per-step value; with it, one read (item or tolist) per logged
    update."""
    reads = []
    for method in ("item", "tolist"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(
            torch.Tensor, method, lambda tensor, original=original: reads.append(1) or original(tensor)
        )

    run_tiny_training(num_epochs=2)
    reads_without_logger = len(reads)
    reads.clear()
    run_tiny_training(
        callbacks=[JSONLinesLoggerCallback(tmp_path / "m.jsonl", log_every_n_steps=4)], num_epochs=2
    )
    assert len(reads) - reads_without_logger == 2 * UPDATES_PER_EPOCH // 4


class StepCounter(TrainerCallback):
    def __init__(self):
        self.count = 0

    def on_train_step_start(self, trainer, **kwargs):
        self.count += 1


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_an_existing_log_is_never_replaced_silently(tmp_path, logger_class):
    path = tmp_path / "metrics.log"
    path.write_text("earlier results\n")
    steps = StepCounter()
    # refused when the run starts (not when the callback is created: a resumed run continues its file)
    with pytest.raises(FileExistsError, match=re.escape("if_exists='append'")) as error:
        run_tiny_training(callbacks=[logger_class(path, if_exists="error"), steps], num_epochs=1)
    assert "if_exists='overwrite'" in str(error.value)
    assert steps.count == 0
    assert path.read_text() == "earlier results\n"


def test_if_exists_append_adds_rows_and_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "metrics.csv"
    run_tiny_training(callbacks=[CSVLoggerCallback(path, if_exists="error")], num_epochs=2)
    run_tiny_training(
        callbacks=[CSVLoggerCallback(path, if_exists="append", log_every_n_steps=8)], num_epochs=1
    )
    rows = read_csv(path)
    # the appended run's train_loss_step column was added to the earlier rows' header too; its step 8 is
    # the epoch's last: one row
    assert [(row["epoch"], row["train_loss_step"] != "", row["train_loss_epoch"] != "") for row in rows] == [
        ("1", False, True),
        ("2", False, True),
        ("1", True, True),
    ]

    result = run_tiny_training(callbacks=[CSVLoggerCallback(path, if_exists="overwrite")], num_epochs=1)
    rows = read_csv(path)
    assert len(rows) == 1 and float(rows[0]["train_loss_epoch"]) == result.metrics["train_loss_epoch"][0]


def test_the_same_logger_appends_its_later_runs(tmp_path):
    path = tmp_path / "metrics.jsonl"
    logger = JSONLinesLoggerCallback(path)
    result = run_tiny_training(callbacks=[logger], num_epochs=1)
    result.trainer.train(result.trainer.train_dataset, num_epochs=1)
    assert logger.path == version(path)
    assert [record["epoch"] for record in read_jsonl(logger.path)] == [1, 1]


class CloseCounter(JSONLinesLoggerCallback):
    num_closes = 0

    def close(self):
        self.num_closes += 1
        super().close()


def test_a_stopped_run_logs_its_last_epoch_and_closes_the_file_once(tmp_path):
    logger = CloseCounter(tmp_path / "metrics.jsonl")
    # The stop comes before the logger's on_training_run_epoch_end: epoch 2 is logged all the same.
    result = run_tiny_training(callbacks=[StopAtEpochEnd(2), logger], num_epochs=4)
    assert "on_stop_training_error" in result.events
    assert [record["epoch"] for record in read_jsonl(logger.path)] == [1, 2]
    assert [record["train_loss_epoch"] for record in read_jsonl(logger.path)] == result.metrics[
        "train_loss_epoch"
    ]
    assert logger.num_closes == 1


def test_processes_other_than_the_main_one_write_nothing(tmp_path):
    loggers = [
        CSVLoggerCallback(tmp_path / "metrics.csv", log_every_n_steps=1),
        JSONLinesLoggerCallback(tmp_path / "metrics.jsonl", log_every_n_steps=1),
        TensorBoardLoggerCallback(tmp_path / "tensorboard", log_every_n_steps=1),
    ]
    result = run_tiny_training(callbacks=loggers, num_epochs=1, trainer_class=NotMainProcessTrainer)
    result.trainer.evaluate()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad_interval", [0, -1])
def test_log_every_n_steps_must_be_positive(tmp_path, bad_interval):
    with pytest.raises(ValueError, match="log_every_n_steps"):
        CSVLoggerCallback(tmp_path / "m.csv", log_every_n_steps=bad_interval)


# ---------------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_scalars_read_back_with_the_event_accumulator(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "tensorboard"
    result = run_tiny_training(
        callbacks=[TensorBoardLoggerCallback(log_dir, log_every_n_steps=4)], num_epochs=2
    )
    evaluation = result.trainer.evaluate()

    events = EventAccumulator(str(log_dir))
    events.Reload()
    # every scalar against the update step (TrackerCallback's x-axis; epochs were x before), the epoch a
    # scalar
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        scalars = events.Scalars(name)
        assert [scalar.step for scalar in scalars] == [UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH]
        assert [scalar.value for scalar in scalars] == pytest.approx(result.metrics[name], rel=1e-6)
    assert [scalar.step for scalar in events.Scalars("train_loss_step")] == [4, 8, 12, 16]
    epochs = {scalar.step: scalar.value for scalar in events.Scalars("epoch")}
    assert epochs == {4: 1, 8: 1, 12: 2, 16: 2}
    (evaluation_scalar,) = events.Scalars("eval_loss")
    assert evaluation_scalar.step == 2 * UPDATES_PER_EPOCH
    assert evaluation_scalar.value == pytest.approx(evaluation["eval_loss"], rel=1e-6)


# ---------------------------------------------------------------------------------------- MLflow


def test_mlflow_logs_metrics_and_the_run_config_to_a_local_file_store(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the callback sets it for a file store
    store = tmp_path / "mlruns"
    logger = MLflowLoggerCallback(
        experiment_name="tests", run_name="tiny", tracking_uri=store, log_every_n_steps=8
    )
    result = run_tiny_training(callbacks=[logger], num_epochs=2)
    evaluation = result.trainer.evaluate()

    assert logger.tracking_uri == store.resolve().as_uri()
    client = MlflowClient(store.resolve().as_uri())
    run = client.get_run(logger.run_id)
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    assert run.data.params["num_epochs"] == "2"
    assert run.data.params["num_training_steps"] == str(2 * UPDATES_PER_EPOCH)

    def history(name):
        return [(metric.step, metric.value) for metric in client.get_metric_history(logger.run_id, name)]

    # every metric against the update step (TrackerCallback's x-axis; epochs were MLflow's step before)
    for name in ("train_loss_epoch", "eval_loss_epoch"):
        assert history(name) == list(zip([UPDATES_PER_EPOCH, 2 * UPDATES_PER_EPOCH], result.metrics[name]))
    assert history("eval_loss") == [(2 * UPDATES_PER_EPOCH, evaluation["eval_loss"])]
    assert dict(history("epoch")) == {
        8: 1,
        16: 2,
    }  # with every record: the per-step ones, the epoch's, evaluate()'s
    assert [step for step, _ in history("train_loss_step")] == [8, 16]


def test_mlflow_uri_defaults_to_a_local_folder_and_keeps_explicit_uris(tmp_path, monkeypatch):
    """MLflow's ``tracking_uri`` defaults to a local folder and keeps explicit URIs."""
    monkeypatch.chdir(tmp_path)
    assert MLflowLoggerCallback().tracking_uri == (tmp_path / "mlruns").resolve().as_uri()
    assert (
        MLflowLoggerCallback(tracking_uri="elsewhere").tracking_uri
        == (tmp_path / "elsewhere").resolve().as_uri()
    )
    assert MLflowLoggerCallback(tracking_uri="sqlite:///mlflow.db").tracking_uri == "sqlite:///mlflow.db"
    assert not (tmp_path / "mlruns").exists()  # nothing is written before a run


# ---------------------------------------------------------------------------------------- optional extras


@pytest.mark.parametrize(
    "make_logger, module, extra",
    [
        (lambda path: TensorBoardLoggerCallback(path), "tensorboard", "tensorboard"),
        (lambda path: MLflowLoggerCallback(tracking_uri=path), "mlflow", "mlflow"),
    ],
)
def test_a_missing_extra_is_named_when_the_logger_is_created(
    tmp_path, monkeypatch, make_logger, module, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # what importing an uninstalled package does
    with pytest.raises(
        ImportError, match=re.escape(f"needs {module}: pip install 'trainer-callbacks[{extra}]'")
    ):
        make_logger(tmp_path)


def test_require_extra_returns_the_module_or_names_the_extra(monkeypatch):
    assert require_extra("json", "none") is json
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(ImportError, match=r"^TensorBoardLoggerCallback needs tensorboard: ") as error:
        require_extra("tensorboard", "tensorboard", "TensorBoardLoggerCallback")
    assert isinstance(error.value.__cause__, ImportError)


def test_the_callbacks_import_without_any_extra_installed(tmp_path):
    code = (
        "import sys\n"
        "for name in ('tensorboard', 'mlflow', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "import pytorch_accelerated.callbacks\n"
        "from pytorch_accelerated.callbacks import loggers, monitors, plotting\n"
        f"loggers.CSVLoggerCallback({str(tmp_path / 'm.csv')!r}); monitors.ThroughputMonitorCallback()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------- two processes


def test_two_processes_write_one_complete_log_from_the_main_process(tmp_path):
    out = tmp_path / "out"
    command = torchrun_command(scenario.__file__, out)
    status, output = run_launch(command, tmp_path)  # stops the launch if it hangs: status None
    paths = [out / f"result_rank{rank}.json" for rank in range(2)]
    results = [json.loads(path.read_text()) for path in paths if path.exists()]
    errors = [result["error"] for result in results if "error" in result]
    report = f"exit status {status}:\n{tail(output)}\n" + "\n".join(errors)
    assert status == 0 and len(results) == 2 and not errors, report

    assert [result["num_opens"] for result in results] == [{"csv": 3, "jsonl": 3}, {"csv": 0, "jsonl": 0}]
    metrics = results[0]["metrics"]
    assert results[1]["metrics"]["train_loss_epoch"] == metrics["train_loss_epoch"]

    # the CSV logger logs every value of the history: also the train_loss_step the JSON Lines logger records
    all_rows = read_csv(out / "version_0" / "metrics.csv")[1:]  # after the evaluate() before training
    assert len({(row["epoch"], row["step"]) for row in all_rows}) == len(all_rows), "one row per step"
    rows = [row for row in all_rows if row["train_loss_epoch"]]
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert [float(row["train_loss_epoch"]) for row in rows] == metrics["train_loss_epoch"]
    assert [float(row["eval_loss_epoch"]) for row in rows] == metrics["eval_loss_epoch"]
    # the evaluate() after training, at its step
    assert float(rows[1]["eval_loss"]) == metrics["eval_loss"][-1]
    step_rows = [row for row in all_rows if row["train_loss_step"]]
    assert [float(row["train_loss_step"]) for row in step_rows] == metrics["train_loss_step"]

    sizes = scenario.SIZES
    updates = results[0]["completed_update_steps"]
    assert updates == sizes["num_epochs"] * sizes["train_samples"] // (2 * sizes["batch_size"])
    records = read_jsonl(out / "version_0" / "metrics.jsonl")
    every = sizes["log_every_n_steps"]
    assert [r["step"] for r in records if "train_loss_step" in r] == list(range(every, updates + 1, every))
    assert [r["epoch"] for r in records if "train_loss_epoch" in r] == [1, 2]

    # the step-based evaluations: every one logged (main process only) at its update, the same on both
    # processes
    evaluations = list(range(sizes["eval_every_n_steps"], updates + 1, sizes["eval_every_n_steps"]))
    assert [result["steps"]["step_eval_loss"] for result in results] == [evaluations, evaluations]
    logged = [
        (int(row["step"]), float(row["step_eval_loss"]))
        for row in read_csv(out / "version_0" / "metrics.csv")
        if row["step_eval_loss"]
    ]
    assert logged == list(zip(evaluations, metrics["step_eval_loss"]))
    assert results[1]["metrics"]["step_eval_loss"] == metrics["step_eval_loss"]

    # samples of both processes were counted: rate * time is the whole epoch's samples
    for rate, seconds in zip(metrics["train_samples_per_second"], metrics["train_epoch_time_seconds"]):
        assert rate * seconds == pytest.approx(sizes["train_samples"])


# ---------------------------------------------------------------------------------------- every value at its
# step


def test_step_based_evaluations_and_lrs_are_logged_at_their_update_step(tmp_path):
    """Every step-based evaluation and every LR is logged at its update step."""
    from pytorch_accelerated.callbacks import LearningRateMonitorCallback, StepBasedEvaluationCallback

    csv_path, jsonl_path = tmp_path / "m.csv", tmp_path / "m.jsonl"
    callbacks = [
        StepBasedEvaluationCallback(eval_every_n_steps=2),
        LearningRateMonitorCallback(log_every_n_steps=3),
        CSVLoggerCallback(csv_path),
        JSONLinesLoggerCallback(jsonl_path, log_every_n_steps=4),
    ]
    result = run_tiny_training(callbacks=callbacks, num_epochs=2)
    history = result.trainer.run_history

    # 16 updates, an evaluation after every 2nd: 8 evaluations, 8 logged values, each at its step and epoch
    expected = [(2 * k, 1 if 2 * k <= UPDATES_PER_EPOCH else 2) for k in range(1, 9)]
    csv_path, jsonl_path = callbacks[2].path, callbacks[3].path  # the run's version_0 folder
    # the CSV logger logs every lr recorded; the JSON Lines logger those of every 4th update (Lightning's
    # rule)
    for rows, lr_steps in ((read_csv(csv_path), [3, 6, 9, 12, 15]), (read_jsonl(jsonl_path), [12])):
        logged = [
            (int(r["step"]), int(r["epoch"]), float(r["step_eval_loss"]))
            for r in rows
            if r.get("step_eval_loss") not in (None, "")
        ]
        assert [(step, epoch) for step, epoch, _ in logged] == expected
        assert [value for *_, value in logged] == history.get_metric_values("step_eval_loss")
        lrs = [(int(r["step"]), float(r["lr"])) for r in rows if r.get("lr") not in (None, "")]
        assert lrs == [(step, 0.05) for step in lr_steps]
        losses = [int(r["step"]) for r in rows if r.get("train_loss_step") not in (None, "")]
        assert losses == [4, 8, 12, 16]  # recorded by the JSON Lines logger, logged by both
        epoch_rows = [
            (int(r["step"]), int(r["epoch"])) for r in rows if r.get("eval_loss_epoch") not in (None, "")
        ]
        assert epoch_rows == [(8, 1), (16, 2)]
    assert [r.step for r in history.get_metric_records("train_loss_step")] == [4, 8, 12, 16]


def test_a_second_run_logs_the_step_losses_of_its_own_updates(tmp_path):
    logger = JSONLinesLoggerCallback(tmp_path / "m.jsonl", log_every_n_steps=8)
    result = run_tiny_training(callbacks=[logger], num_epochs=1)
    result.trainer.train(result.trainer.train_dataset, num_epochs=1)  # its updates count from 0 again
    assert [r["step"] for r in read_jsonl(logger.path) if "train_loss_step" in r] == [8, 8]


# ---------------------------------------------------------------------------------- cadence and rows (issue
# 27)


class RecordsEveryUpdate(TrainerCallback):
    """Records ``mine`` (the update's number) at every update, as a per-step callback of a user's would."""

    def on_optimizer_step_end(self, trainer, **kwargs):
        trainer.run_history.update_metric("mine", float(trainer.completed_update_steps))


def test_log_every_n_steps_applies_to_every_value_recorded_in_updates(tmp_path):
    """``log_every_n_steps`` applies to every value recorded during the updates."""
    logger = CSVLoggerCallback(tmp_path / "m.csv", log_every_n_steps=3)
    result = run_tiny_training(callbacks=[RecordsEveryUpdate(), logger], num_epochs=2)
    rows = read_csv(logger.path)
    logged = [int(row["step"]) for row in rows if row["mine"]]
    assert logged == [
        3,
        6,
        9,
        12,
        15,
    ], f"a value recorded every update is logged every 3rd (Lightning): {logged}"
    assert [int(row["step"]) for row in rows if row["lr"]] == [3, 6, 9, 12, 15], "the lr, at the same updates"
    assert len(result.metrics["mine"]) == 16, "the run history keeps every value"


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_an_epoch_ending_on_a_logged_update_shares_its_row(tmp_path, logger_class):
    from pytorch_accelerated.callbacks import StepBasedEvaluationCallback

    logger = logger_class(tmp_path / "m.log", log_every_n_steps=4)
    run_tiny_training(callbacks=[RecordsEveryUpdate(), StepBasedEvaluationCallback(2), logger], num_epochs=2)
    rows = read_csv(logger.path) if logger_class is CSVLoggerCallback else read_jsonl(logger.path)
    steps = [int(row["step"]) for row in rows]
    assert steps == [2, 4, 6, 8, 10, 12, 14, 16], f"one row per step: {steps}"
    epoch_rows = [row for row in rows if row.get("train_loss_epoch") not in (None, "")]
    assert [int(row["step"]) for row in epoch_rows] == [8, 16]
    assert all(
        row["train_loss_step"] not in (None, "") and row["mine"] not in (None, "") for row in epoch_rows
    )


def test_a_value_recorded_late_for_a_written_row_goes_into_that_row(tmp_path):
    from pytorch_accelerated.callbacks import GradientNormCallback

    logger = CSVLoggerCallback(tmp_path / "m.csv", log_every_n_steps=2)
    run_tiny_training(callbacks=[GradientNormCallback(log_every_n_steps=8), logger], num_epochs=1)
    rows = read_csv(logger.path)
    assert [int(row["step"]) for row in rows] == [2, 4, 6, 8], "the norms of updates 2-6, read at update 8"
    assert all(row["grad_norm"] and row["train_loss_step"] for row in rows)


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_a_tensor_image_is_skipped_with_one_warning_naming_it(tmp_path, logger_class):
    class RecordsAnImage(TrainerCallback):
        def on_eval_epoch_end(self, trainer, **kwargs):
            trainer.run_history.update_metric("sample", torch.rand(3, 8, 8))

    logger = logger_class(tmp_path / "m.log")
    warning = f"{logger_class.__name__} does not log 'sample', a tensor of shape (3, 8, 8)"
    with pytest.warns(UserWarning, match=re.escape(warning)) as caught:
        result = run_tiny_training(callbacks=[RecordsAnImage(), logger], num_epochs=3)
    assert sum("'sample'" in str(warning.message) for warning in caught) == 1, (
        "one warning, not one per epoch"
    )
    rows = read_csv(logger.path) if logger_class is CSVLoggerCallback else read_jsonl(logger.path)
    assert [float(row["train_loss_epoch"]) for row in rows] == result.metrics["train_loss_epoch"]
    assert all("sample" not in row for row in rows)
