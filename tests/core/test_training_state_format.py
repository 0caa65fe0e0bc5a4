"""The training-state format names where and how each large component is stored, so that a sharded
model's weights and optimizer can later be stored another way (torch.distributed.checkpoint); its
files carry digests computed as they were written; states of the previous formats still load, and
their damage is still found; one of a newer format is refused by name, never passed over."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.trainer import (
    CheckpointError,
    TrainerCallback,
    find_latest_training_state,
    list_training_states,
)
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, final_state
from pytorch_accelerated.trainer.safe_files import FILE_DIGEST, file_digest
from pytorch_accelerated.trainer.state_format import _manifest_digest

from .test_training_state import SaveAtEverySavePoint, train_run

# what format version 1 (trainer-core 0.3.0) wrote in training_state.json
VERSION_1_FIELDS = {"format", "format_version", "saved_at", "num_processes", "position", "files", "sha256"}


class SavesAtUpdate4(TrainerCallback):
    def __init__(self, path: Path):
        self.path = path

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps == 4:
            trainer.save_training_state(self.path)


@pytest.fixture
def saved(tmp_path):
    """A state saved at update 4 of a run, and that (uninterrupted) run's final state."""
    path = tmp_path / "states" / "state"
    run = train_run([SavesAtUpdate4(path)])
    return path, final_state(run)


def _manifest(path: Path) -> dict:
    return json.loads((path / "training_state.json").read_text())


def _record(path: Path, manifest: dict, name: str) -> None:
    """The size and digest of the file ``name`` in the manifest, as its writer records them."""
    manifest["files"][name] = (path / name).stat().st_size
    manifest[FILE_DIGEST][name] = file_digest(path / name)


def _as_written_before_format_3(path: Path, manifest: dict) -> dict:
    """The manifest with SHA-256 file digests, as formats 1 and 2 (trainer-core 0.3 and 0.4) recorded them."""
    del manifest[FILE_DIGEST]
    manifest["sha256"] = {
        name: hashlib.sha256((path / name).read_bytes()).hexdigest() for name in manifest["files"]
    }
    return manifest


def _write_manifest(path: Path, manifest: dict) -> None:
    """Written as a trainer-core that wrote this content would: with its digest (none in version 1)."""
    manifest = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    if manifest["format_version"] > 1:
        manifest["manifest_sha256"] = _manifest_digest(manifest)
    (path / "training_state.json").write_text(json.dumps(manifest))


def test_the_manifest_names_where_and_how_each_part_is_stored(saved):
    """The manifest names where and how the model and optimizer are stored."""
    path, _ = saved
    manifest = _manifest(path)
    assert manifest["format_version"] == 3
    assert manifest["components"] == {
        "model": {"format": "torch.save", "file": "trainer.pt", "key": "model"},
        "optimizer": {"format": "torch.save", "file": "trainer.pt", "key": "optimizer"},
    }
    shared = torch.load(path / "trainer.pt", weights_only=True)
    assert {"model", "optimizer"} <= set(shared)


def test_each_file_has_the_digest_of_its_bytes_in_the_manifest(saved):
    path, _ = saved
    manifest = _manifest(path)
    assert sorted(manifest[FILE_DIGEST]) == sorted(manifest["files"]) == ["process_0.pt", "trainer.pt"]
    for name, digest in manifest[FILE_DIGEST].items():
        assert digest == file_digest(path / name), (
            f"{name}: the digest computed while writing is not the file's"
        )


def test_a_state_of_format_version_1_still_loads_and_resumes_exactly(saved):
    path, expected = saved
    manifest = _as_written_before_format_3(path, _manifest(path))
    # the files are what version 1 wrote; only the manifest says more now
    del (
        manifest["components"],
        manifest["manifest_sha256"],
    )
    manifest["format_version"] = 1
    assert set(manifest) == VERSION_1_FIELDS
    _write_manifest(path, manifest)
    assert_bitwise_equal(final_state(train_run(resume_from=path)), expected)


def test_a_format_2_state_loads_and_its_sha256_digests_find_damage(saved):
    """A state of format version 2 still loads and its SHA-256 digests find damage."""
    path, expected = saved
    manifest = _as_written_before_format_3(path, _manifest(path))
    manifest["format_version"] = 2
    _write_manifest(path, manifest)
    assert_bitwise_equal(final_state(train_run(resume_from=path)), expected)
    content = bytearray((path / "process_0.pt").read_bytes())
    content[len(content) // 2] ^= 0x01
    (path / "process_0.pt").write_bytes(bytes(content))
    with pytest.raises(
        CheckpointError, match=r"process_0\.pt' is corrupted: .* the digest \(sha256\) recorded"
    ):
        train_run(resume_from=path)


def test_a_component_stored_in_a_file_of_its_own_loads(saved):
    """The model's state is separable from the small shared parts: stored elsewhere, it is found there."""
    path, expected = saved
    shared = torch.load(path / "trainer.pt", weights_only=True)
    torch.save({"weights": shared.pop("model")}, path / "model.pt")
    torch.save(shared, path / "trainer.pt")
    manifest = _manifest(path)
    for name in ("trainer.pt", "model.pt"):
        _record(path, manifest, name)
    manifest["components"]["model"] = {"format": "torch.save", "file": "model.pt", "key": "weights"}
    _write_manifest(path, manifest)
    assert_bitwise_equal(final_state(train_run(resume_from=path)), expected)


def test_a_part_in_a_storage_format_unknown_here_is_refused_by_name(saved):
    """A component stored in a format this trainer-core cannot read is refused by name."""
    path, _ = saved
    manifest = _manifest(path)
    manifest["components"]["model"] = {"format": "dcp", "folder": "model"}  # as a sharded save might store it
    (path / "trainer.pt").write_bytes(b"")  # refused before the files are loaded: reading this one would fail
    _record(path, manifest, "trainer.pt")
    _write_manifest(path, manifest)
    with pytest.raises(
        CheckpointError,
        match=r"stores its model state in the format 'dcp', which this trainer-core cannot read",
    ):
        train_run(resume_from=path)
    # not mistaken for a damaged state: listing states leaves it where it is
    assert find_latest_training_state(path.parent) == path


@pytest.mark.parametrize(
    "components, message",
    [
        (None, "does not say where"),
        ({"model": {"format": "torch.save", "file": "trainer.pt", "key": "model"}}, "does not say where"),
        (
            {
                "model": {"format": "torch.save", "file": "elsewhere.pt", "key": "model"},
                "optimizer": {"format": "torch.save", "file": "trainer.pt", "key": "optimizer"},
            },
            "in a file it does not list",
        ),
        (
            {
                "model": {"format": "torch.save", "file": "trainer.pt", "key": "weights"},
                "optimizer": {"format": "torch.save", "file": "trainer.pt", "key": "optimizer"},
            },
            "has no 'weights'",
        ),
    ],
)
def test_a_manifest_that_misstates_the_components_is_a_clear_error(saved, components, message):
    path, _ = saved
    manifest = _manifest(path)
    manifest["components"] = components
    _write_manifest(path, manifest)
    with pytest.raises(CheckpointError, match=message):
        train_run(resume_from=path)


def test_a_format_1_state_without_digests_loads_unchecked_with_a_warning(saved):
    """A state of format version 1 without digests loads unchecked with a warning.

    trainer-core 0.2 wrote format 1 without SHA-256s: its states still load, saying that they are not checked.
    """
    path, expected = saved
    manifest = _manifest(path)
    del manifest["components"], manifest["manifest_sha256"], manifest[FILE_DIGEST]
    manifest["format_version"] = 1
    _write_manifest(path, manifest)
    with pytest.warns(
        UserWarning, match="written by trainer-core 0.2, without SHA-256 digests: its files are loaded"
    ):
        assert_bitwise_equal(final_state(train_run(resume_from=path)), expected)


def test_a_manifest_missing_one_files_digest_is_refused_in_any_format(saved):
    """A manifest missing the digest of one file is refused in any format."""
    path, _ = saved
    manifest = _manifest(path)
    del manifest[FILE_DIGEST]["trainer.pt"]
    _write_manifest(path, manifest)
    with pytest.raises(
        CheckpointError, match=r"has no xxh3_128 digest for \['trainer\.pt'\], where training-state format 3"
    ):
        train_run(resume_from=path)
    manifest = _as_written_before_format_3(path, _manifest(path))
    del manifest["sha256"]["trainer.pt"]
    for version in (2, 1):
        manifest["format_version"] = version
        _write_manifest(path, manifest)
        with pytest.raises(
            CheckpointError,
            match=rf"has no sha256 digest for \['trainer\.pt'\], where training-state format {version}",
        ):
            train_run(resume_from=path)


class FindsTheLatestIn(TrainerCallback):
    """What train(resume_from="latest") asks, as SaveTrainingStateCallback answers it."""

    def __init__(self, folder: Path):
        self.folder = folder

    def latest_training_state(self):
        return find_latest_training_state(self.folder)


def test_a_state_of_a_newer_format_is_refused_by_name_and_never_set_aside(tmp_path):
    # before, "latest" renamed it .damaged and resumed from an older state, whose run then wrote over its step
    states = tmp_path / "states"
    saver = SaveAtEverySavePoint(states)
    train_run([saver], num_epochs=1)
    newest = saver.saved[-1]
    manifest = _manifest(newest)
    manifest["format_version"] = 4  # as a newer trainer-core would write it, with its digest
    _write_manifest(newest, manifest)
    listed = sorted(path.name for path in states.iterdir())
    refused = (
        rf"'{newest}' was written by a newer trainer-core \(training-state format 4; .*\): upgrade"
        r" trainer-core"
    )
    for resume_from, callbacks in (("latest", [FindsTheLatestIn(states)]), (states, []), (newest, [])):
        with pytest.raises(CheckpointError, match=refused):
            train_run(callbacks, resume_from=resume_from, num_epochs=1)
    with pytest.raises(CheckpointError, match=refused):
        list_training_states(states)
    assert sorted(path.name for path in states.iterdir()) == listed, "a state was set aside or written"
    assert _manifest(newest) == {**manifest, "manifest_sha256": _manifest(newest)["manifest_sha256"]}
