"""Training states written in the background (``save_training_state(..., asynchronous=True)``): the
state written is the state when saved while training goes on, it resumes exactly, the run's end
(or failure) waits for the write, and a failed write is raised at the next save or at the run's end.

A write is held at a point the test chooses (``HeldWrites``: a slow disk) to show what runs while
it is in flight. Killed background writes (SIGKILL) and two processes are in
tests/callbacks/test_resume.py and tests/core/test_process_faults.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

import pytorch_accelerated.trainer.state_format as state_format
from pytorch_accelerated.trainer import CheckpointError, TrainerCallback
from pytorch_accelerated.trainer.async_saving import HostCopies
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, final_state

from .test_training_state import SaveAtEverySavePoint, scramble_random_generators, train_run

WRITER_THREAD = "training-state-writer"


class HeldWrites:
    """Holds the write of each state's ``trainer.pt`` until ``release`` is set or ``timeout_s`` has
    passed, noting which (``released``) and in which thread the write ran."""

    def __init__(self, monkeypatch, timeout_s: float):
        self.release = threading.Event()
        self.released: list[bool] = []
        self.threads: list[str] = []
        write = state_format.write_with_digest

        def held_write(path, fill):
            if Path(path).name == state_format.SHARED_FILE_NAME:
                self.threads.append(threading.current_thread().name)
                self.released.append(self.release.wait(timeout_s))
            return write(path, fill)

        monkeypatch.setattr(state_format, "write_with_digest", held_write)


class SaveInTheBackground(TrainerCallback):
    """Saves asynchronously into ``path`` at update ``at`` (``"run_end"``: at the run's end)."""

    def __init__(self, path: Path, at):
        self.path, self.at = path, at
        self.saved_weights = None

    def on_save_point(self, trainer, point, **kwargs):
        if (point == "update" and trainer.completed_update_steps == self.at) or point == self.at:
            trainer.save_training_state(self.path, asynchronous=True)
            self.saved_weights = {
                name: tensor.clone() for name, tensor in trainer.get_model().state_dict().items()
            }


def test_the_host_copy_reuses_its_buffers_and_keeps_the_state_dict_kind():
    """The host copy is a copy kept in the same buffers, with the kind of the state dict."""
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10))
    model[1].weight = model[0].weight  # tied weights
    copies = HostCopies()
    state = {"model": model.state_dict(), "run": [1, ("a", 2.5)], "pos": {"steps": torch.tensor(3)}}
    first = copies.copy(state)
    assert (
        type(first["model"]) is type(state["model"]) and first["model"]._metadata == state["model"]._metadata
    )
    assert first["model"]["0.weight"] is first["model"]["1.weight"], "a tied weight is copied once"
    assert first["run"] == [1, ("a", 2.5)] and first["run"] is not state["run"]
    weight = first["model"]["0.weight"]
    with torch.no_grad():
        model[0].weight.add_(1)
    assert not torch.equal(weight, model[0].weight), "the copy changed with the model"
    second = copies.copy({**state, "model": model.state_dict()})
    assert second["model"]["0.weight"].data_ptr() == weight.data_ptr(), (
        "the next copy goes into the same buffer"
    )
    assert_bitwise_equal(second["model"], model.state_dict())


def test_states_saved_in_the_background_at_every_save_point_resume_exactly(tmp_path):
    saver = SaveAtEverySavePoint(tmp_path, asynchronous=True)
    expected = final_state(train_run([saver]))
    assert {"run_start", "update", "epoch_end", "run_end"} <= {
        path.name.split("-", 1)[1] for path in saver.saved
    }
    for path in saver.saved:
        scramble_random_generators()
        assert_bitwise_equal(final_state(train_run(resume_from=path)), expected, path.name)


def test_the_state_written_is_the_state_when_saved_while_training_goes_on(tmp_path, monkeypatch):
    held = HeldWrites(monkeypatch, timeout_s=120)
    path = tmp_path / "state"
    saver = SaveInTheBackground(path, at=2)

    class ReleaseAtUpdate4(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            if point == "update" and trainer.completed_update_steps == 4:
                held.release.set()

    expected = final_state(train_run([saver, ReleaseAtUpdate4()]))
    assert held.released == [True], (
        "the write of the state saved at update 2 did not wait for update 4: training waited for it"
    )
    assert held.threads[0].startswith(WRITER_THREAD), held.threads
    written = torch.load(path / "trainer.pt", weights_only=True)
    assert written["position"]["completed_update_steps"] == 2
    # not those of update 4
    assert_bitwise_equal(written["model"], saver.saved_weights, "the weights written")
    assert_bitwise_equal(final_state(train_run(resume_from=path)), expected)


class RaiseAtUpdate(TrainerCallback):
    def __init__(self, update: int):
        self.update = update

    def on_train_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps == self.update:
            raise RuntimeError(f"a step failed after update {self.update}")


@pytest.mark.parametrize("ending", ["ends", "fails"])
def test_the_runs_end_waits_for_the_state_being_written(tmp_path, monkeypatch, ending):
    """The write is held until the run's last event (or 3 s): it must end before that event."""
    held = HeldWrites(monkeypatch, timeout_s=3)
    path = tmp_path / "state"

    class ReleaseAtTheLastEvent(TrainerCallback):
        def on_training_run_end(self, trainer, **kwargs):
            held.release.set()

        def on_training_run_error(self, trainer, error, **kwargs):
            held.release.set()

    callbacks = [SaveInTheBackground(path, at="run_end" if ending == "ends" else 2), ReleaseAtTheLastEvent()]
    if ending == "ends":
        train_run(callbacks)
    else:
        with pytest.raises(RuntimeError, match="a step failed after update 3"):
            train_run([*callbacks, RaiseAtUpdate(3)])
    assert held.threads and held.threads[0].startswith(WRITER_THREAD), held.threads
    assert held.released == [False], f"the run {ending} before the state was written"
    assert state_format.read_manifest(path)["position"]["completed_update_steps"] == (
        2 if ending == "fails" else 9
    )
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith(WRITER_THREAD)]


@pytest.mark.parametrize("surfaces_at", ["the next save", "the run's end"])
def test_a_failed_background_write_is_raised_at_the_next_save_or_end(tmp_path, surfaces_at):
    """A failed background write is raised at the next save or the run's end."""
    (tmp_path / "a_file").write_text("not a folder")
    failing = tmp_path / "a_file" / "state"  # its folder cannot be made: the background write fails
    events = []

    class Records(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            events.append(f"{point} {trainer.completed_update_steps}")

        def on_training_run_error(self, trainer, error, **kwargs):
            events.append("run error")

    callbacks = [
        Records(),
        SaveInTheBackground(failing, at=2 if surfaces_at == "the next save" else "run_end"),
    ]
    if surfaces_at == "the next save":
        callbacks.append(SaveInTheBackground(tmp_path / "next", at=4))
    with pytest.raises(
        CheckpointError,
        match=rf"Writing the training state '{failing}' in the background failed: FileExistsError",
    ):
        train_run(callbacks)
    assert events[-2:] == (
        ["update 4", "run error"] if surfaces_at == "the next save" else ["run_end 9", "run error"]
    )
    assert not (tmp_path / "next").exists()


def test_a_failed_run_raises_its_error_and_warns_of_a_failed_write(tmp_path):
    """A failed run raises its own error and warns of a failed background write."""
    (tmp_path / "a_file").write_text("not a folder")
    failing = tmp_path / "a_file" / "state"
    with pytest.warns(
        UserWarning,
        match=rf"The run failed .*a step failed.*, and so did a training state's write: .*'{failing}'",
    ):
        with pytest.raises(RuntimeError, match="a step failed after update 3"):
            train_run([SaveInTheBackground(failing, at=2), RaiseAtUpdate(3)])


def test_saving_in_the_background_after_the_run_is_refused(tmp_path):
    trainer = train_run()
    with pytest.raises(CheckpointError, match=r"after train\(\) returns, save with asynchronous=False"):
        trainer.save_training_state(tmp_path / "state", asynchronous=True)
    assert not (tmp_path / "state").exists()
