"""Faults injected for real, and what survives them: signals sent with os.kill to a child process;
full disks (a small tmpfs) and read-only folders (a read-only mount); logs of a run branched
from an older state. (Killed writes and corrupted states are in tests/core/test_training_state.py.)"""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.callbacks import (
    CSVLoggerCallback,
    JSONLinesLoggerCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
)
from pytorch_accelerated.schedulers import CosineLrScheduler, WSDLrScheduler
from pytorch_accelerated.trainer import CheckpointError, TrainerCallback, seed_everything
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, final_state, make_tiny_dataset
from tests.callbacks.test_training_state_callback import ACCUMULATION, BATCH_SIZE, NUM_SAMPLES, make_model
from tests.core.helpers import SGD_MOMENTUM, make_trainer
from tests.launching import REPO_ROOT, launch_env

# ---------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("scenario", ["crash", "two", "twice", "twice-signalled"])
def test_sigterm_acts_as_without_the_callback_however_train_ended(tmp_path, scenario):
    """After train() (returned or raised), SIGTERM ends the process; during training, a second
    SIGTERM ends it too, also with the callback's events fired twice."""
    command = [
        sys.executable,
        str(REPO_ROOT / "tests/callbacks/signal_scenario.py"),
        scenario,
        str(tmp_path / "states"),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, env=launch_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == -signal.SIGTERM, output
    assert "RecursionError" not in output
    assert "still running after SIGTERM" not in output
    if scenario != "twice-signalled":
        assert "handlers restored" in done.stdout, output


# ---------------------------------------------------------------------------------------- a run


def train(callbacks=(), num_epochs=2, resume_from=None, model=None, create_scheduler_fn=None):
    seed_everything(3)
    model = model if model is not None else make_model()
    trainer = make_trainer(callbacks, model=model, optimizer_kwargs=SGD_MOMENTUM)
    trainer.train(
        make_tiny_dataset(NUM_SAMPLES),
        num_epochs=num_epochs,
        eval_dataset=make_tiny_dataset(16, seed=1),
        per_device_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=ACCUMULATION,
        create_scheduler_fn=create_scheduler_fn
        or CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=0.5),
        resume_from=resume_from,
    )
    return trainer


def weights_of(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


# ---------------------------------------------------------------------------------------- states that do not
# fit or are damaged


def test_the_wsd_scheduler_refuses_a_cosine_state_leaving_the_weights(tmp_path):
    """A cosine state is refused by the WSD scheduler with the weights untouched."""
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    train([saver])
    model = make_model()
    before = weights_of(model)
    with pytest.raises(
        CheckpointError, match="a CosineLrScheduler scheduler; this run's is a WSDLrScheduler"
    ):
        train(
            resume_from=saver.saved_paths[1],
            model=model,
            create_scheduler_fn=WSDLrScheduler.create_scheduler_fn(),
        )
    assert_bitwise_equal(weights_of(model), before)


def test_resume_from_latest_passes_over_a_corrupted_newest_state(tmp_path):
    """``resume_from="latest"`` passes over a corrupted newest state and says so."""
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    expected = final_state(train([saver]))
    newest, intact = saver.saved_paths[-1], saver.saved_paths[-2]
    content = bytearray((newest / "trainer.pt").read_bytes())
    weight = torch.load(newest / "trainer.pt")["model"]["0.weight"].numpy().tobytes()
    content[bytes(content).find(weight) + 7] ^= 0x01  # one bit of one weight
    (newest / "trainer.pt").write_bytes(bytes(content))
    with pytest.warns(
        UserWarning,
        match=rf"{newest.name}/trainer.pt' is corrupted.*using .*{intact.name}', the newest intact",
    ):
        resumed = train(
            [SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)], resume_from="latest"
        )
    assert resumed.resumed_from == intact
    assert_bitwise_equal(final_state(resumed), expected)


# ---------------------------------------------------------------------------------------- full disks,
# read-only folders


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root or CAP_SYS_ADMIN: skipped otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): these faults need root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Take all but ``leave`` bytes of the disk's free space."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(free - leave, 0))


def files_in(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "filler"
    }


def big_model():
    # ~8 KiB of weights
    return torch.nn.Sequential(torch.nn.Linear(4, 96), torch.nn.ReLU(), torch.nn.Linear(96, 3))


def test_a_full_disk_while_saving_says_so_and_keeps_the_earlier_files(small_disk):
    """A full disk while saving a checkpoint or a state says so and keeps the earlier files."""
    trainer = make_trainer(model=big_model(), optimizer_kwargs=SGD_MOMENTUM)
    trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=8)
    trainer.save_checkpoint(small_disk / "model.pt")
    trainer.save_training_state(small_disk / "state")
    before = files_in(small_disk)
    fill(small_disk, leave=4096)
    with pytest.raises(
        CheckpointError,
        match=(
            rf"No space left on device writing '{small_disk}/model.pt': it needs about \d+\.\d KiB, and .*"
            r" free"
        ),
    ):
        trainer.save_checkpoint(small_disk / "model.pt")
    with pytest.raises(
        CheckpointError,
        match=rf"No space left on device writing the training state '{small_disk}/state': it needs about",
    ):
        trainer.save_training_state(small_disk / "state")
    assert files_in(small_disk) == before  # the earlier files intact, nothing left behind
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "model.pt", "state"]


def test_a_full_disk_while_rewriting_the_csv_leaves_no_temporary_file(small_disk):
    """A full disk while the CSV log is rewritten leaves no temporary file."""
    log = small_disk / "log.csv"
    logger = CSVLoggerCallback(log, if_exists="error")  # the file as given: nothing else on the disk
    trainer = make_trainer([logger], model=make_model(), optimizer_kwargs=SGD_MOMENTUM)
    trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=8)
    before = log.read_bytes()
    fill(small_disk, leave=0)
    with pytest.raises(OSError, match=rf"No space left on device rewriting {log}"):
        trainer.evaluate(make_tiny_dataset(8))  # a new column: the file is rewritten with the wider header
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "log.csv"]
    assert log.read_bytes() == before


@pytest.mark.parametrize(
    "make_callback",
    [
        lambda folder: SaveBestModelCallback(folder / "best.pt", watch_metric="eval_loss_epoch"),
        lambda folder: ModelEmaCallback(save_path=folder / "ema.pt"),
    ],
    ids=["SaveBestModelCallback", "ModelEmaCallback"],
)
def test_a_callback_saving_into_a_read_only_folder_fails_before_step_1(small_disk, make_callback):
    """A callback that saves into a read-only folder fails before the first step."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    steps = []

    class CountsSteps(TrainerCallback):
        def on_train_step_start(self, trainer, **kwargs):
            steps.append(trainer.completed_update_steps)

    callback = make_callback(small_disk)
    with pytest.raises(
        PermissionError,
        match=rf"{type(callback).__name__} cannot write {small_disk}/.*: Read-only file system",
    ):
        train([callback, CountsSteps()], num_epochs=1)
    assert steps == []


# ---------------------------------------------------------------------------------------- a run branched from
# an older state


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_a_branched_run_keeps_the_later_log_records_in_a_backup(tmp_path, logger_class):
    """A run branched from an older state keeps the later log records in a backup and says so."""
    log = tmp_path / "version_0" / "log"  # where a logger given tmp_path / "log" writes (run_folders.py)
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    train([logger_class(tmp_path / "log"), saver], num_epochs=3)
    whole_log = log.read_text()
    older = saver.saved_paths[1]  # after epoch 1: the log held one record then
    with pytest.warns(
        UserWarning,
        match=rf"{log} holds 2 record\(s\) written after the training state .* kept in {log}.before-resume-1",
    ):
        train([logger_class(tmp_path / "log")], num_epochs=3, resume_from=older)
    assert (log.parent / "log.before-resume-1").read_text() == whole_log
    assert log.read_text().splitlines()[0] == whole_log.splitlines()[0]


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_an_interrupted_run_resumed_from_its_newest_state_makes_no_backup(tmp_path, logger_class):
    # the records after the newest state are the interrupted tail: the resumed run writes them again
    log = tmp_path / "log"
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    train([logger_class(log), saver], num_epochs=3)
    assert (tmp_path / "version_0" / "log").is_file()
    shutil.rmtree(saver.saved_paths[-1])  # interrupted after logging its last epoch, before saving it
    newest = saver.saved_paths[-2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train([logger_class(log)], num_epochs=3, resume_from=newest)
    assert not list(tmp_path.rglob("log.before-resume-*"))


def test_a_full_disk_while_backing_up_a_branched_log_leaves_it_whole(small_disk, tmp_path):
    """A full disk while backing up the log of a branched run leaves the log and no partial backup."""
    log = small_disk / "log.csv"
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    train([CSVLoggerCallback(log, if_exists="error"), saver], num_epochs=3)
    before = log.read_bytes()
    fill(small_disk, leave=0)
    with pytest.raises(OSError, match=rf"No space left on device backing up {log} to {log}.before-resume-1"):
        train([CSVLoggerCallback(log, if_exists="error")], num_epochs=3, resume_from=saver.saved_paths[1])
    assert sorted(path.name for path in small_disk.iterdir()) == [
        "filler",
        "log.csv",
    ]  # an empty backup was left
    assert log.read_bytes() == before


def test_a_full_disk_before_the_first_csv_row_says_how_much_the_log_needs(small_disk):
    log = small_disk / "log.csv"

    class FillsTheDisk(TrainerCallback):
        def on_training_run_start(self, trainer, **kwargs):
            fill(small_disk, leave=0)

    with pytest.raises(
        OSError, match=rf"No space left on device rewriting {log}: it needs about [1-9]\d* bytes"
    ):
        # said "about 0 bytes": the empty file's size
        train([FillsTheDisk(), CSVLoggerCallback(log, if_exists="error")], num_epochs=1)
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler", "log.csv"]


class FillsTheDiskAtEpoch(TrainerCallback):
    """Fills the disk when an epoch starts (all the log's columns exist by then): the log's next
    records go into the free end of its last page until one does not fit."""

    def __init__(self, disk: Path, epoch: int):
        self.disk, self.epoch = disk, epoch

    def on_train_epoch_start(self, trainer, **kwargs):
        if trainer.run_history.current_epoch == self.epoch:
            fill(self.disk, leave=0)


def whole_records(log: Path) -> list:
    """The log's records, checked whole: a line end after the last, each CSV row as wide as the header."""
    text = log.read_text()
    assert text.endswith("\n"), f"{log} ends in half a record: {text[-80:]!r}"
    if log.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert all(len(row) == len(rows[0]) for row in rows), f"{log} has a torn row: {rows[-3:]}"
        return rows[1:]
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("name", ["log.csv", "log.jsonl"])
def test_a_logger_on_a_full_disk_names_the_file_and_leaves_whole_records(small_disk, name):
    """A full disk under a logger names the file and leaves whole records."""
    log = small_disk / name
    logger_class = CSVLoggerCallback if name.endswith(".csv") else JSONLinesLoggerCallback
    logger = logger_class(log, if_exists="error", log_every_n_steps=1)
    expected = rf"No space left on device writing a record to {log}: .*Free some space"  # was [Errno 28]
    with pytest.raises(OSError, match=expected):
        train([logger, FillsTheDiskAtEpoch(small_disk, epoch=2)], num_epochs=1000)
    records = whole_records(log)
    assert len(records) == logger._num_records > 20  # every record written before the disk filled is there


@pytest.mark.parametrize("name", ["log.csv", "log.jsonl"])
def test_a_logger_cuts_off_half_a_record_left_at_the_end_of_its_file(tmp_path, name):
    log = tmp_path / name
    logger_class = CSVLoggerCallback if name.endswith(".csv") else JSONLinesLoggerCallback
    train([logger_class(log, if_exists="append")], num_epochs=1)
    whole = log.read_text()
    with open(log, "a") as file:
        file.write(whole.splitlines()[-1][:7])  # a process killed while writing its next record
    with pytest.warns(UserWarning, match=rf"{log} ended in half a record \(7 bytes without a line end"):
        train([logger_class(log, if_exists="append")], num_epochs=1)
    records = whole_records(log)
    assert log.read_text().startswith(whole) and len(records) == 2 * len(whole_records_of(whole, name))


def whole_records_of(text: str, name: str) -> list[str]:
    return text.splitlines()[1:] if name.endswith(".csv") else text.splitlines()


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_a_file_logger_closes_its_file_when_train_raises(tmp_path, logger_class):
    """A file logger closes its file when train raises, so a later evaluate logs."""

    class Crash(TrainerCallback):
        def on_training_run_epoch_end(self, trainer, **kwargs):
            raise KeyboardInterrupt

    logger = logger_class(tmp_path / "log")
    trainer = make_trainer([logger, Crash()], model=make_model(), optimizer_kwargs=SGD_MOMENTUM)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(make_tiny_dataset(16), num_epochs=2, per_device_batch_size=8)
    assert logger._file is None  # was left open
    trainer.evaluate(make_tiny_dataset(8))
    assert "eval_loss" in logger.path.read_text()  # was not logged: the logger thought the run went on


def test_a_new_run_refuses_a_save_dir_of_damaged_states(tmp_path):
    """A new run refuses a ``save_dir`` of damaged states instead of writing over them."""
    saver = SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)
    train([saver], num_epochs=1)
    for state in saver.saved_paths:
        manifest = state / "training_state.json"
        manifest.write_bytes(b"z" + manifest.read_bytes()[1:])  # a flipped bit
    kept = {state.name: (state / "trainer.pt").read_bytes() for state in saver.saved_paths}
    with pytest.raises(
        FileExistsError,
        match=rf"{tmp_path / 'states'} holds only damaged training states.*choose another save_dir",
    ):
        train([SaveTrainingStateCallback(tmp_path / "states", save_every_n_epochs=1)], num_epochs=1)
    for name, content in kept.items():  # were written over by the new run's states of the same names
        assert (tmp_path / "states" / f".{name}.damaged" / "trainer.pt").read_bytes() == content
