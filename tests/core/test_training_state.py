"""Training states: a run resumed from any save point ends exactly as the uninterrupted run, and
bad, incomplete or mismatched states give clear errors without harming the states on disk.

The multi-process runs and the runs killed with SIGKILL / stopped with SIGTERM are in
tests/callbacks/test_resume.py, with SaveTrainingStateCallback.
"""

from __future__ import annotations

import functools
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pytorch_accelerated.trainer import (
    CheckpointError,
    StopTrainingError,
    Trainer,
    TrainerCallback,
    TrainerPlaceholderValues,
    find_latest_training_state,
    list_training_states,
    seed_everything,
)
from pytorch_accelerated.trainer.safe_files import FILE_DIGEST, file_digest
from pytorch_accelerated.trainer.state_format import _manifest_digest, read_manifest  # noqa
from pytorch_accelerated.trainer.testing import (
    EventRecorder,
    assert_bitwise_equal,
    final_state,
    make_tiny_dataset,
)

# ---------------------------------------------------------------------------------------- a run


def make_model(hidden=16, seed=0):
    # dropout draws from torch's generator on every training step: the resumed run must too
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(hidden, 3)
        )


class SaveAtEverySavePoint(TrainerCallback):
    def __init__(self, folder, asynchronous=False):
        self.folder = Path(folder)
        self.asynchronous = asynchronous
        self.saved: list[Path] = []

    def on_save_point(self, trainer, point, **kwargs):
        path = self.folder / f"{len(self.saved):03d}-{point}"
        trainer.save_training_state(path, asynchronous=self.asynchronous)
        self.saved.append(path)


class CountsSteps(TrainerCallback):
    """A callback with state of each kind: shared (steps) and per process (losses summed)."""

    def __init__(self):
        self.steps = 0

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.steps += 1

    def on_train_epoch_end(self, trainer, **kwargs):
        trainer.run_history.update_metric("steps_seen", self.steps)

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state_dict):
        self.steps = state_dict["steps"]


class EndsEpochAfter(TrainerCallback):
    """Asks for the epoch's end after ``limit`` batches, like a batch limit."""

    def __init__(self, limit):
        self.limit = limit
        self.seen = 0

    def on_train_epoch_start(self, trainer, **kwargs):
        self.seen = 0

    def on_train_step_end(self, trainer, **kwargs):
        self.seen += 1
        if self.seen >= self.limit:
            trainer.request_epoch_end()

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state_dict):
        self.seen = state_dict["seen"]


RUN = dict(
    num_samples=70, batch_size=8, num_epochs=3, accumulation=3, workers=0, max_steps=None, epoch_limit=None
)


def train_run(
    callbacks=(),
    resume_from=None,
    model=None,
    optimizer_class=torch.optim.AdamW,
    scheduler=True,
    counter=True,
    create_scheduler_fn=None,
    **overrides,
):
    settings = {**RUN, **overrides}
    seed_everything(7)
    model = model if model is not None else make_model()
    extra = [EndsEpochAfter(settings["epoch_limit"])] if settings["epoch_limit"] else []
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        optimizer_class(model.parameters(), lr=0.01),
        callbacks=[*([CountsSteps()] if counter else []), *extra, *callbacks],
    )
    create_scheduler_fn = create_scheduler_fn or functools.partial(
        torch.optim.lr_scheduler.OneCycleLR,
        max_lr=0.05,
        total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
    )
    trainer.train(
        make_tiny_dataset(settings["num_samples"]),
        num_epochs=settings["num_epochs"],
        eval_dataset=make_tiny_dataset(20, seed=1),
        per_device_batch_size=settings["batch_size"],
        gradient_accumulation_steps=settings["accumulation"],
        max_num_train_steps=settings["max_steps"],
        create_scheduler_fn=create_scheduler_fn if scheduler else None,
        train_dataloader_kwargs={"num_workers": settings["workers"]},
        resume_from=resume_from,
    )
    return trainer


def scramble_random_generators():
    random.seed()
    np.random.seed()
    torch.seed()


# ---------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="accumulation-dropout-scheduler"),
        pytest.param({"workers": 2, "accumulation": 1, "num_epochs": 2}, id="dataloader-workers"),
        pytest.param({"max_steps": 7}, id="max-steps-mid-epoch"),
        pytest.param({"epoch_limit": 5, "num_epochs": 2}, id="epoch-ended-early"),
    ],
)
def test_resuming_from_every_save_point_ends_like_the_uninterrupted_run(tmp_path, overrides):
    """Resuming from every save point ends bitwise like the uninterrupted run."""
    saver = SaveAtEverySavePoint(tmp_path)
    expected = final_state(train_run([saver], **overrides))
    points = [path.name.split("-", 1)[1] for path in saver.saved]
    assert {"run_start", "update", "epoch_end", "run_end"} <= set(points)
    for path in saver.saved:
        scramble_random_generators()
        resumed = train_run(resume_from=path, **overrides)
        assert resumed.resumed_from == path
        assert_bitwise_equal(final_state(resumed), expected, path.name)


def test_the_check_can_fail_a_resume_that_loses_the_random_state(tmp_path, monkeypatch):
    """The comparison above is sharp: without the generators, resumed runs differ."""
    saver = SaveAtEverySavePoint(tmp_path)
    expected = final_state(train_run([saver]))
    import pytorch_accelerated.trainer.resuming as resuming_module

    monkeypatch.setattr(resuming_module, "restore_rng_state", lambda *args, **kwargs: None)
    scramble_random_generators()
    resumed = train_run(resume_from=saver.saved[1])
    with pytest.raises(AssertionError, match=r"state differs: state\['weights'\]"):
        assert_bitwise_equal(final_state(resumed), expected)


def test_a_mid_epoch_resume_replays_its_start_then_loads_callback_states(tmp_path):
    """A resume inside an epoch replays its start then loads the callback states."""
    path = tmp_path / "state"
    log = []

    class Watcher(EventRecorder):
        def __init__(self):
            super().__init__()
            self.events = log

        def state_dict(self):
            return {"saved": True}

        def load_state_dict(self, state_dict):
            log.append("load_state_dict")

    class SaveAtUpdate4(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            if point == "update" and trainer.completed_update_steps == 4:
                trainer.save_training_state(path)

    train_run([Watcher(), SaveAtUpdate4()])
    log.clear()
    trainer = train_run([Watcher()], resume_from=path)
    # 70 samples / batch 8 = 9 batches; accumulation 3: update 4 is the first of epoch 2
    assert log[:5] == [
        "on_init_end",
        "on_training_run_start",
        "on_train_epoch_start",
        "load_state_dict",
        "on_train_step_start",
    ]
    assert "on_save_point" not in log[:5]  # no run_start point for a resumed run
    assert log.count("on_train_step_start") == 2 * 9 - 3
    assert trainer.completed_update_steps == 9


def test_a_state_saved_after_the_run_was_stopped_ends_at_once_when_resumed(tmp_path):
    path = tmp_path / "stopped"

    class StopAtUpdate5(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 5:
                raise StopTrainingError("enough")

    class SaveAtRunEnd(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            if point == "run_end":
                trainer.save_training_state(path)

    expected = final_state(train_run([StopAtUpdate5(), SaveAtRunEnd()]))
    recorder = EventRecorder()
    resumed = train_run([recorder], resume_from=path)
    assert "on_train_step_start" not in recorder.events
    assert recorder.events[-1] == "on_training_run_end"
    assert_bitwise_equal(final_state(resumed), expected)


def test_a_finished_run_can_be_extended_with_more_epochs(tmp_path):
    saver = SaveAtEverySavePoint(tmp_path)
    trainer = train_run([saver], num_epochs=2, scheduler=False)
    extended = train_run(resume_from=saver.saved[-1], num_epochs=3, scheduler=False)
    assert extended.run_history.current_epoch == 4
    assert len(extended.run_history.get_metric_values("train_loss_epoch")) == 3
    assert extended.completed_update_steps == trainer.completed_update_steps * 3 // 2


def test_resume_from_a_folder_takes_the_state_that_got_furthest(tmp_path):
    saver = SaveAtEverySavePoint(tmp_path)
    train_run([saver], num_epochs=1)
    assert list_training_states(tmp_path) == saver.saved
    assert find_latest_training_state(tmp_path) == saver.saved[-1]
    # names do not matter, progress does: rename the newest so that it sorts first by name
    renamed = saver.saved[-1].rename(tmp_path / "000-aaa")
    resumed = train_run(resume_from=tmp_path, num_epochs=1)
    assert resumed.resumed_from == renamed


def test_resume_from_latest_needs_a_callback_that_saves_states():
    with pytest.raises(ValueError, match="SaveTrainingStateCallback"):
        train_run(resume_from="latest")


# ---------------------------------------------------------------------------------------- misuse and bad
# states


def _saved_state(tmp_path, **overrides) -> Path:
    path = tmp_path / "state"

    class SaveAtUpdate4(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            if point == "update" and trainer.completed_update_steps == 4:
                trainer.save_training_state(path)

    train_run([SaveAtUpdate4()], **overrides)
    return path


def test_saving_inside_a_training_step_or_before_training_is_refused(tmp_path):
    class SavesMidStep(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            trainer.save_training_state(tmp_path / "x")

    with pytest.raises(CheckpointError, match="on_save_point"):
        train_run([SavesMidStep()])
    model = make_model()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match="Nothing to save yet"):
        trainer.save_training_state(tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_an_epoch_records_its_data_order_only_if_a_callback_can_save_in_it(tmp_path, monkeypatch):
    """An epoch records its data order only where a callback can save inside it."""
    from pytorch_accelerated.trainer import resuming

    captures = []
    capture = resuming.capture_rng_state
    monkeypatch.setattr(resuming, "capture_rng_state", lambda *args: captures.append(args) or capture(*args))

    class FailsInTheThirdStep(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            if trainer.completed_epoch_batches == 2:
                raise RuntimeError("a failure inside the epoch")

    class CouldSave(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs): ...

    def failed_run(callbacks):
        model = make_model()
        trainer = Trainer(
            model,
            torch.nn.CrossEntropyLoss(),
            torch.optim.SGD(model.parameters(), lr=0.1),
            callbacks=callbacks,
        )
        with pytest.raises(RuntimeError, match="a failure inside the epoch"):
            trainer.train(make_tiny_dataset(40), num_epochs=1, per_device_batch_size=4)
        return trainer

    # nothing handles on_save_point: the epoch's start is not captured (~0.2 ms a epoch), and a state
    # saved inside that epoch afterwards, which could not resume exactly, is refused
    trainer = failed_run([FailsInTheThirdStep()])
    assert captures == []
    with pytest.raises(CheckpointError, match="its data order was not recorded.*SaveTrainingStateCallback"):
        trainer.save_training_state(tmp_path / "state")
    assert not (tmp_path / "state").exists()
    # with a callback that could save inside the epoch, its start is captured and the state is saved
    trainer = failed_run([FailsInTheThirdStep(), CouldSave()])
    assert len(captures) == 1
    trainer.save_training_state(tmp_path / "state")
    assert read_manifest(tmp_path / "state")


def test_a_callback_state_unsafe_to_load_is_refused_when_saving(tmp_path):
    """A callback state that cannot be loaded safely is refused when saving."""

    class HoldsAnObject(TrainerCallback):
        def state_dict(self):
            return {"when": object()}

    class SaveOnce(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            trainer.save_training_state(tmp_path / "state")

    with pytest.raises(CheckpointError, match=r"HoldsAnObject\.state_dict\(\)\['when'\] holds a object"):
        train_run([HoldsAnObject(), SaveOnce()])
    assert list(tmp_path.iterdir()) == []


def test_a_state_of_another_model_names_what_does_not_match(tmp_path):
    path = _saved_state(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape("0.weight is (16, 4) there and (8, 4) here")):
        train_run(resume_from=path, model=make_model(hidden=8))
    assert find_latest_training_state(tmp_path) == path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"optimizer_class": torch.optim.SGD},
            "holds the state of a AdamW optimizer; this trainer's is a SGD",
        ),
        ({"scheduler": False}, "holds a scheduler state and this run has none"),
        ({"batch_size": 4}, "train_per_device_batch_size 8 there, 4 here"),
        ({"counter": False}, "callbacks this trainer does not have: ['CountsSteps']"),
    ],
)
def test_a_state_of_another_run_set_up_names_the_difference(tmp_path, change, message):
    path = _saved_state(tmp_path)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        train_run(resume_from=path, **change)


def test_a_missing_or_truncated_part_is_named_and_earlier_states_load(tmp_path):
    """A missing or truncated part names the file and the earlier state still loads."""
    saver = SaveAtEverySavePoint(tmp_path)
    expected = final_state(train_run([saver]))
    newest, earlier = saver.saved[-1], saver.saved[-2]

    shared = newest / "trainer.pt"
    shared.write_bytes(shared.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"trainer\.pt' is truncated or was changed"):
        train_run(resume_from=newest)
    with pytest.warns(UserWarning, match=r"damaged and passed over .*trainer\.pt' is truncated"):
        # incomplete states are passed over, and said so
        assert find_latest_training_state(tmp_path) == earlier

    (earlier / "process_0.pt").unlink()
    with pytest.raises(CheckpointError, match=r"is missing its part 'process_0\.pt'"):
        train_run(resume_from=earlier)

    (saver.saved[-3] / "training_state.json").unlink()
    with pytest.raises(CheckpointError, match="it has no training_state.json"):
        train_run(resume_from=saver.saved[-3])

    with pytest.raises(CheckpointError, match="No training state at"):
        train_run(resume_from=tmp_path / "nowhere")

    resumed = train_run(resume_from=saver.saved[-4])
    assert_bitwise_equal(final_state(resumed), expected)


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    path = _saved_state(tmp_path)
    shared = path / "trainer.pt"
    torch.save({"model": functools.partial(print, "unpickled!")}, shared)
    manifest = json.loads((path / "training_state.json").read_text())
    manifest["files"]["trainer.pt"] = shared.stat().st_size
    manifest[FILE_DIGEST]["trainer.pt"] = file_digest(shared)  # a forged manifest too
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "training_state.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="holds objects other than tensors and plain data"):
        train_run(resume_from=path)


def test_a_failed_write_leaves_the_state_under_that_name_as_it_was(tmp_path, monkeypatch):
    path = _saved_state(tmp_path)
    before = {file.name: file.read_bytes() for file in path.iterdir()}
    import pytorch_accelerated.trainer.state_format as training_state

    written = []

    def fail_on_second_file(file_path, write):
        written.append(file_path)
        if len(written) == 2:
            raise OSError("disk full")
        return real_write(file_path, write)

    real_write = training_state.write_with_digest
    monkeypatch.setattr(training_state, "write_with_digest", fail_on_second_file)

    class SaveOverIt(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            trainer.save_training_state(path)

    with pytest.raises(OSError, match="disk full"):
        train_run([SaveOverIt()])
    assert {file.name: file.read_bytes() for file in path.iterdir()} == before
    assert sorted(item.name for item in tmp_path.iterdir()) == ["state"]  # no leftovers


def test_a_write_killed_between_its_renames_is_recovered_by_the_next_write(tmp_path):
    path = _saved_state(tmp_path)
    hidden = tmp_path / ".state.replaced"
    path.rename(hidden)  # as if killed after moving the old state aside
    (tmp_path / ".other.incomplete").mkdir()  # and a write killed midway
    assert find_latest_training_state(tmp_path) == path  # put back when looking for one to resume
    path.rename(hidden)

    class SaveElsewhere(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            if point == "run_end":
                trainer.save_training_state(tmp_path / "final")

    train_run([SaveElsewhere()], num_epochs=1)
    assert sorted(item.name for item in tmp_path.iterdir()) == ["final", "state"]


# ---------------------------------------------------------------------------------------- faults, injected
# for real

_KILLED_BETWEEN_RENAMES = """
import os, signal, sys
from pathlib import Path
from pytorch_accelerated.trainer import TrainerCallback
from tests.core.test_training_state import train_run

state = Path(sys.argv[1]) / "now"
real_replace = os.replace

def replace_then_die(source, destination):
    real_replace(source, destination)
    if Path(source) == state:  # the old state was just moved aside; the new one is not renamed yet
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace_then_die

class SaveTwice(TrainerCallback):
    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps in (2, 4):
            trainer.save_training_state(state)

train_run([SaveTwice()])
"""


def test_a_state_replacement_killed_between_renames_is_put_back(tmp_path):
    """A state whose replacement was killed between renames is put back on resume and on the next write."""
    killed = tmp_path / "killed"
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, str(killed)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr
    assert sorted(item.name for item in killed.iterdir()) == [".now.incomplete", ".now.replaced"]
    expected = final_state(train_run())
    for case in ("state", "folder", "next write"):
        states = shutil.copytree(killed, tmp_path / case)
        if case == "next write":
            train_run([SaveAtEverySavePoint(states)], num_epochs=1)
            assert read_manifest(states / "now")["position"]["completed_update_steps"] == 4  # the newer one
            assert not [item for item in states.iterdir() if item.name.startswith(".")]
            continue
        resumed = train_run(resume_from=states / "now" if case == "state" else states)
        assert resumed.resumed_from == states / "now"
        assert read_manifest(states / "now")["position"]["completed_update_steps"] == 4
        assert_bitwise_equal(final_state(resumed), expected)


def _flip_a_byte_inside(path: Path, tensor: torch.Tensor) -> None:
    content = bytearray(path.read_bytes())
    start = bytes(content).find(tensor.numpy().tobytes())
    assert start > 0
    content[start + tensor.nbytes // 2] ^= 0x10
    path.write_bytes(bytes(content))


def test_a_flipped_weight_bit_falls_back_to_the_newest_intact_state(tmp_path):
    """A flipped bit in a weight is refused by name and a folder resumes from the newest intact state."""

    def damage(newest):
        _flip_a_byte_inside(newest / "trainer.pt", torch.load(newest / "trainer.pt")["model"]["0.weight"])

    _check_the_damaged_newest_is_refused_and_the_one_before_resumes(
        tmp_path, damage, r"trainer\.pt' is corrupted: its content no longer matches the digest \(xxh3_128\)"
    )


def _check_the_damaged_newest_is_refused_and_the_one_before_resumes(tmp_path, damage, error: str) -> None:
    """Save at every save point, ``damage`` the newest state: resuming from it raises ``error``, and
    from the folder resumes exactly from the state before it, with a warning."""
    saver = SaveAtEverySavePoint(tmp_path)
    expected = final_state(train_run([saver]))
    newest = saver.saved[-1]
    damage(newest)
    with pytest.raises(CheckpointError, match=error):
        train_run(resume_from=newest)
    with pytest.warns(
        UserWarning, match=rf"damaged and passed over .*{newest.name}.*; using .*{saver.saved[-2].name}"
    ):
        resumed = train_run(resume_from=tmp_path)
    assert resumed.resumed_from == saver.saved[-2]
    assert_bitwise_equal(final_state(resumed), expected)


def test_a_flipped_manifest_bit_falls_back_to_the_newest_intact_state(tmp_path):
    # the manifest's values (the position, the parts' sizes and digests) are covered by its own digest:
    # before, a changed digit resumed at another position, silently
    """A flipped bit in the manifest's step count is refused; a folder resumes from its newest intact
    state."""

    def damage(newest):
        manifest = newest / "training_state.json"
        content = bytearray(manifest.read_bytes())
        steps = read_manifest(newest)["position"]["completed_update_steps"]
        digit = bytes(content).index(f'"completed_update_steps": {steps}'.encode()) + len(
            '"completed_update_steps": '
        )
        content[digit] ^= 0x01  # '4' -> '5', still a number
        manifest.write_bytes(bytes(content))
        assert json.loads(content)["position"]["completed_update_steps"] != steps

    _check_the_damaged_newest_is_refused_and_the_one_before_resumes(
        tmp_path,
        damage,
        r"training_state\.json' is damaged: its content no longer matches the SHA-256 it was written with",
    )


def test_a_manifest_whose_digests_were_removed_is_refused_by_name(tmp_path):
    # before, a manifest without digests loaded unchecked: a flipped bit in a weight (~9e36 off) went
    # unnoticed
    path = _saved_state(tmp_path)
    _flip_a_byte_inside(path / "trainer.pt", torch.load(path / "trainer.pt")["model"]["0.weight"])
    manifest = json.loads((path / "training_state.json").read_text())
    del manifest["manifest_sha256"], manifest[FILE_DIGEST]
    (path / "training_state.json").write_text(json.dumps(manifest, indent=2))
    model = make_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"training_state\.json' has no 'manifest_sha256', which training-state format"
    ):
        train_run(resume_from=path, model=model)
    assert_bitwise_equal(model.state_dict(), before)

    manifest[FILE_DIGEST] = {"process_0.pt": file_digest(path / "process_0.pt")}
    # one digest left out, the manifest's own recomputed
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "training_state.json").write_text(json.dumps(manifest, indent=2))
    with pytest.raises(
        CheckpointError, match=r"has no xxh3_128 digest for \['trainer\.pt'\], where training-state format 3"
    ):
        train_run(resume_from=path)


def test_a_dataset_of_another_length_is_refused_mid_epoch(tmp_path):
    # 90 and 89 samples make 12 batches of 8 each: the settings matched, and the epoch went on in another
    # order
    """A dataset of another length with as many batches is refused mid-epoch."""
    path = tmp_path / "state"

    class SaveAtUpdate2(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            if point == "update" and trainer.completed_update_steps == 2:
                trainer.save_training_state(path)

    train_run([SaveAtUpdate2()], num_samples=90)
    model = make_model(seed=1)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=re.escape("over other training data (dataset length 90 there, 89 here)")
    ):
        train_run(resume_from=path, model=model, num_samples=89)
    assert_bitwise_equal(model.state_dict(), before)
    train_run(resume_from=path, num_samples=90)


def test_resume_from_a_checkpoint_file_names_load_checkpoint(tmp_path):
    """Resume from a checkpoint file says it is one and names ``load_checkpoint``."""
    trainer = train_run(num_epochs=1)
    trainer.save_checkpoint(tmp_path / "model.pt")
    with pytest.raises(
        CheckpointError, match=r"model\.pt' is a checkpoint written by save_checkpoint.*load_checkpoint"
    ):
        train_run(resume_from=tmp_path / "model.pt")
    path = _saved_state(tmp_path)
    with pytest.raises(
        CheckpointError, match=rf"trainer\.pt' is a file of the training state '{path}': pass that folder"
    ):
        train_run(resume_from=path / "trainer.pt")
    (tmp_path / "notes.txt").write_text("not a state")
    with pytest.raises(CheckpointError, match=r"notes\.txt' is a file; a training state is a folder that"):
        train_run(resume_from=tmp_path / "notes.txt")


def test_a_scheduler_of_another_class_is_refused_before_any_change(tmp_path):
    """A scheduler of another class is refused before anything is applied."""
    path = _saved_state(tmp_path)  # a OneCycleLR state
    model = make_model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=2)
    with pytest.raises(
        CheckpointError, match="holds the state of a OneCycleLR scheduler; this run's is a StepLR"
    ):
        train_run(resume_from=path, model=model, create_scheduler_fn=step_lr)
    assert_bitwise_equal(model.state_dict(), before)


def test_a_dataloader_of_another_make_is_refused_before_any_change(tmp_path):
    """A dataloader of another make is refused before the weights are replaced."""
    path = _saved_state(tmp_path)
    model = make_model(seed=1)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)

    class TrainerWithAGenerator(Trainer):
        def create_train_dataloader(self, batch_size, dataloader_kwargs):
            return torch.utils.data.DataLoader(
                self.train_dataset, batch_size=batch_size, shuffle=True, generator=generator
            )

    trainer = TrainerWithAGenerator(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.01),
        callbacks=[CountsSteps()],
    )
    with pytest.raises(
        CheckpointError, match=re.escape("draws from 1 random generator(s), the saved run from 0")
    ):
        trainer.train(
            make_tiny_dataset(70),
            num_epochs=3,
            per_device_batch_size=8,
            gradient_accumulation_steps=3,
            create_scheduler_fn=functools.partial(
                torch.optim.lr_scheduler.OneCycleLR,
                max_lr=0.05,
                total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
            ),
            resume_from=path,
        )
    assert_bitwise_equal(model.state_dict(), before)


def test_a_folder_of_only_damaged_states_is_an_error_not_a_fresh_start(tmp_path):
    """A folder whose every state is damaged is an error not a fresh start."""
    path = _saved_state(tmp_path)
    _flip_a_byte_inside(path / "trainer.pt", torch.load(path / "trainer.pt")["model"]["0.weight"])
    with pytest.raises(
        CheckpointError, match=rf"No intact training state in '{tmp_path}'.*trainer\.pt' is corrupted"
    ):
        find_latest_training_state(tmp_path)
    assert sorted(item.name for item in tmp_path.iterdir()) == [".state.damaged"]  # kept for inspection


# ---------------------------------------------------------------------------------------- the test kit


class CountsBatches(TrainerCallback):
    def __init__(self):
        self.batches = 0

    def on_train_step_end(self, trainer, **kwargs):
        self.batches += 1

    def on_train_epoch_end(self, trainer, **kwargs):
        trainer.run_history.update_metric("batches", self.batches)


class CountsBatchesAndSavesThem(CountsBatches):
    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state_dict):
        self.batches = state_dict["batches"]


def test_the_test_kit_finds_a_callback_that_forgets_its_state(tmp_path):
    from pytorch_accelerated.trainer.testing import check_exact_resume

    with pytest.raises(
        AssertionError, match=r"saved at 001-update, the run ends differently: \['run history'\]"
    ):
        check_exact_resume(lambda: [CountsBatches()], tmp_path / "forgets")
    states = check_exact_resume(lambda: [CountsBatchesAndSavesThem()], tmp_path / "keeps")
    assert len(states) == 1 + 2 * (4 + 1) + 1  # start, 2 epochs of 4 updates and an end, run end


def test_persistent_dataloader_workers_are_warned_about_when_resuming(tmp_path):
    path = _saved_state(tmp_path)
    seed_everything(7)
    model = make_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.01),
        callbacks=[CountsSteps()],
    )
    with pytest.warns(UserWarning, match="persistent_workers=True"):
        trainer.train(
            make_tiny_dataset(70),
            num_epochs=1,
            per_device_batch_size=8,
            gradient_accumulation_steps=3,
            create_scheduler_fn=functools.partial(
                torch.optim.lr_scheduler.OneCycleLR, max_lr=0.05, total_steps=100
            ),
            train_dataloader_kwargs={"num_workers": 1, "persistent_workers": True},
            resume_from=path,
        )


def test_a_damaged_manifest_is_a_clear_error(tmp_path):
    path = _saved_state(tmp_path)
    (path / "training_state.json").write_text(
        json.dumps({"format": "pytorch_accelerated.training_state", "format_version": 1})
    )
    with pytest.raises(CheckpointError, match="is damaged: it lacks some of"):
        train_run(resume_from=path)
    (path / "training_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="Cannot read"):
        train_run(resume_from=path)
    with pytest.raises(CheckpointError, match="No intact training state .* Cannot read"):
        find_latest_training_state(tmp_path)  # never None: resume_from="latest" would start afresh


def test_the_kit_compares_states_bitwise_and_names_the_first_difference():
    """The kit compares states bit for bit and names the first difference."""
    state = {"weights": torch.tensor([1.0, float("nan")]), "history": [0.5, float("nan")], "step": 3}
    assert_bitwise_equal({**state, "weights": state["weights"].clone()}, state)
    for changed, message in [
        ({"weights": torch.tensor([1.0 + 2**-20, float("nan")])}, r"\['weights'\]: 1 of 2 values differ"),
        ({"weights": state["weights"].double()}, r"torch.float64\[2\] != torch.float32\[2\]"),
        ({"history": [0.5]}, r"\['history'\]"),
        ({"step": 4}, r"\['step'\]: 4 != 3"),
    ]:
        with pytest.raises(AssertionError, match=message):
            assert_bitwise_equal({**state, **changed}, state)


def test_states_saved_by_a_resumed_run_resume_exactly_too(tmp_path):
    """Interrupted again and again: every state a resumed run saves (in the epoch it resumed
    inside, too) resumes to the same end."""
    saver = SaveAtEverySavePoint(tmp_path / "first")
    expected = final_state(train_run([saver]))
    for index, state in enumerate(saver.saved[1:8:2]):
        again = SaveAtEverySavePoint(tmp_path / f"resumed-{index}")
        assert_bitwise_equal(final_state(train_run([again], resume_from=state)), expected, state.name)
        for second in again.saved[:3]:
            scramble_random_generators()
            resumed = train_run(resume_from=second)
            assert_bitwise_equal(final_state(resumed), expected, f"{state.name}, then {second.name}")


def test_a_damaged_manifest_is_passed_over_with_a_warning(tmp_path):
    """A state with a damaged manifest is passed over with a warning and is never a fresh start."""
    path = _saved_state(tmp_path)
    shutil.copytree(path, tmp_path / "copy")
    manifest = path / "training_state.json"
    manifest.write_bytes(b"z" + manifest.read_bytes()[1:])  # a flipped bit in the manifest's first byte
    with pytest.warns(
        UserWarning,
        match=rf"damaged and passed over \(Cannot read '{path}/training_state.json'.*using '{tmp_path}/copy'",
    ):
        assert find_latest_training_state(tmp_path) == tmp_path / "copy"
    manifest = tmp_path / "copy" / "training_state.json"
    manifest.write_text(manifest.read_text().replace('"num_processes": 1', '"num_processes": "1"'))
    with pytest.raises(
        CheckpointError,
        match=rf"No intact training state in '{tmp_path}'.*copy/training_state.json' is damaged",
    ):
        find_latest_training_state(tmp_path)  # was None: resume_from="latest" started afresh over them
    assert sorted(item.name for item in tmp_path.iterdir()) == [".copy.damaged", ".state.damaged"]
