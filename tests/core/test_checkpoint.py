"""save_checkpoint / load_checkpoint: round trips, compiled models, and safe, clear failures."""

import pickle
import re

import pytest
import torch

from pytorch_accelerated.trainer import CheckpointError
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from .helpers import make_trainer


def _trained_trainer(model=None, with_scheduler=True):
    trainer = make_trainer(model=model, optimizer_class=torch.optim.Adam, lr=0.01)
    trainer.train(
        make_tiny_dataset(32),
        num_epochs=1,
        per_device_batch_size=8,
        create_scheduler_fn=(
            (lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9))
            if with_scheduler
            else None
        ),
    )
    return trainer


def test_round_trip_restores_model_optimizer_scheduler_and_user_keys(tmp_path):
    trainer = _trained_trainer()
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(
        path, checkpoint_kwargs={"epoch": 3, "note": "best", "metrics": {"loss": torch.tensor(0.5)}}
    )

    fresh = make_trainer(model=make_tiny_model(seed=7), optimizer_class=torch.optim.Adam, lr=0.01)
    fresh.scheduler = torch.optim.lr_scheduler.StepLR(fresh.optimizer, step_size=1, gamma=0.9)
    extras = fresh.load_checkpoint(path)

    assert extras["epoch"] == 3 and extras["note"] == "best"
    torch.testing.assert_close(extras["metrics"]["loss"], torch.tensor(0.5))
    for a, b in zip(trainer.get_model().state_dict().values(), fresh.get_model().state_dict().values()):
        torch.testing.assert_close(a, b)
    assert (
        fresh.optimizer.state_dict()["state"][0]["step"] == trainer.optimizer.state_dict()["state"][0]["step"]
    )
    assert fresh.scheduler.state_dict() == trainer.scheduler.state_dict()


def test_a_compiled_model_checkpoints_without_the_compile_wrapper(tmp_path):
    """A compiled model trains and checkpoints without the compile wrapper."""
    compiled = torch.compile(make_tiny_model(), backend="eager")
    trainer = _trained_trainer(model=compiled, with_scheduler=False)
    path = tmp_path / "compiled.pt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["model_state_dict"]
    assert not any("_orig_mod" in key for key in state)

    plain = make_trainer(model=make_tiny_model(seed=3))
    plain.load_checkpoint(path, load_optimizer=False)
    for a, b in zip(plain.get_model().parameters(), compiled._orig_mod.parameters()):
        torch.testing.assert_close(a, b)
    # and the other way: plain weights into a compiled model
    recompiled = make_trainer(model=torch.compile(make_tiny_model(seed=5), backend="eager"))
    recompiled.load_checkpoint(path, load_optimizer=False)
    assert recompiled.evaluate(make_tiny_dataset(8))["eval_loss"] == pytest.approx(
        plain.evaluate(make_tiny_dataset(8))["eval_loss"], rel=1e-6
    )


def test_user_keys_that_cannot_be_loaded_safely_are_refused_before_writing(tmp_path):
    trainer = _trained_trainer()
    path = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match=r"checkpoint_kwargs\['thing'\] holds a object"):
        trainer.save_checkpoint(path, checkpoint_kwargs={"thing": object()})
    assert not path.exists()


def test_reserved_keys_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="reserved keys"):
        _trained_trainer().save_checkpoint(tmp_path / "c.pt", checkpoint_kwargs={"model_state_dict": {}})


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as file:
        pickle.dump({"model_state_dict": {}, "payload": Payload()}, file)
    with pytest.raises(CheckpointError, match="was not loaded"):
        make_trainer().load_checkpoint(path)


def test_a_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    trainer = _trained_trainer()
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path)
    other = make_trainer(
        model=torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    )
    with pytest.raises(
        CheckpointError, match=re.escape("are not for this model: 0.weight is (16, 4) there and (8, 4) here")
    ):
        other.load_checkpoint(path)


def test_a_truncated_file_gives_a_clear_error(tmp_path):
    trainer = _trained_trainer()
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        make_trainer().load_checkpoint(path)


def test_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint file at"):
        make_trainer().load_checkpoint(tmp_path / "nope.pt")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = _trained_trainer()
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path, checkpoint_kwargs={"version": 1})
    original = path.read_bytes()

    def failing_save(obj, file, *args, **kwargs):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint(path, checkpoint_kwargs={"version": 2})
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_scheduler_state_needs_a_scheduler(tmp_path):
    trainer = _trained_trainer()
    path = tmp_path / "ckpt.pt"
    trainer.save_checkpoint(path)
    with pytest.raises(CheckpointError, match="no scheduler"):
        make_trainer().load_checkpoint(path)
    make_trainer().load_checkpoint(path, load_scheduler=False)
