"""Training states of FSDP2 models (issue 26.2): every process writes its shards with
torch.distributed.checkpoint into the state's hidden folder, with digests in the manifest; a run resumed
from one on the same two processes ends bitwise as the uninterrupted run; a flipped byte in a shard is
refused by name; a process killed for real in the middle of a sharded save loses no earlier state; and a
state saved on two processes loads its model and optimizer into a plain model on one
(``sharded_state_scenarios.py``, two launches)."""

from __future__ import annotations

import json

import pytest
import torch
from pytorch_accelerated.trainer import Trainer, list_training_states
from pytorch_accelerated.trainer.safe_files import file_digest
from pytorch_accelerated.trainer.state_format import check_digests, read_manifest

from . import sharded_state_scenarios as scenarios
from .sharding_scenarios import TinyTransformer, next_token_loss
from .test_sharding import Launch

RUNS = (
    "uninterrupted",
    "resumed_mid_epoch",
    "resumed_at_epoch_end",
    "damaged_shard",
    "resumed_latest",
    "unsharded_into_sharded",
)
DCP = "torch.distributed.checkpoint"


@pytest.fixture(scope="module")
def launches(tmp_path_factory) -> tuple[Launch, Launch]:
    """A run killed in a sharded save, then (same folder) the uninterrupted run, the resumed ones and the
    resume of the killed run from its latest state."""
    tmp_dir = tmp_path_factory.mktemp("sharded_states")
    killed = Launch("sharded_state_scenarios.py", ["killed_in_save"], 2, tmp_dir)
    return killed, Launch("sharded_state_scenarios.py", RUNS, 2, tmp_dir)


@pytest.fixture(scope="module")
def runs(launches) -> Launch:
    return launches[1]


def whole_state(launch: Launch, name: str) -> dict:
    """The whole weights and optimizer state a scenario gathered at its end."""
    return torch.load(launch.out / f"{name}.pt", weights_only=True)


def assert_bitwise_equal(got: dict, expected: dict) -> None:
    for name, weights in expected["model_state_dict"].items():
        assert torch.equal(got["model_state_dict"][name], weights), name
    assert got["optimizer_state_dict"]["param_groups"] == expected["optimizer_state_dict"]["param_groups"]
    for index, state in expected["optimizer_state_dict"]["state"].items():
        for key, value in state.items():
            assert torch.equal(got["optimizer_state_dict"]["state"][index][key], value), (index, key)


def test_fsdp2_state_stores_each_process_shards_with_dcp_and_their_digests(runs):
    runs.results("uninterrupted")
    state = runs.out / "states" / scenarios.EPOCH_END_STATE
    manifest = json.loads((state / "training_state.json").read_text())
    assert {name: storage["format"] for name, storage in manifest["components"].items()} == {
        "model": DCP,
        "optimizer": DCP,
    }
    dcp_files = sorted(name for name in manifest["files"] if name.startswith("dcp/"))
    assert dcp_files == ["dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp"], "one file per process"
    for name in dcp_files:  # computed as written, never read back: equal to the file's digest now
        assert manifest["xxh3_128"][name] == file_digest(state / name), name
    shared = torch.load(state / "trainer.pt", weights_only=True)
    assert "model" not in shared and "optimizer" not in shared, "nothing gathered to the main process"


def test_a_sharded_state_resumes_bitwise_mid_epoch_and_at_an_epoch_end(runs):
    expected = whole_state(runs, "uninterrupted")
    for name, state in (
        ("resumed_mid_epoch", scenarios.MID_EPOCH_STATE),
        ("resumed_at_epoch_end", scenarios.EPOCH_END_STATE),
    ):
        assert [result["resumed_from"] for result in runs.results(name)] == [state, state]
        assert runs.results(name)[0]["completed_update_steps"] == 6
        assert_bitwise_equal(whole_state(runs, name), expected)


def test_a_flipped_byte_in_a_shard_is_refused_by_name_on_every_process(runs):
    for result in runs.results("damaged_shard"):
        assert result["refused"].startswith("CheckpointError: "), result
        assert f"{scenarios.DAMAGED_SHARD}' is corrupted" in result["refused"], result


def test_a_state_of_an_unsharded_run_is_not_resumed_into_a_sharded_one(runs):
    for result in runs.results("unsharded_into_sharded"):
        refused = result["refused"]
        assert refused.startswith("CheckpointError: "), result
        assert "saved by an unsharded run (one process or DDP) and this run shards the model" in refused
        assert "resume it unsharded, or start from its weights with load_checkpoint" in refused


def test_asynchronous_saves_of_a_sharded_model_are_refused_naming_the_fix(runs):
    for result in runs.results("uninterrupted"):
        assert result["asynchronous"].startswith(
            "CheckpointError: save_training_state(asynchronous=True) is not supported for sharded (FSDP) "
        ), result["asynchronous"]
        assert "asynchronous=False" in result["asynchronous"]
    assert not (runs.out / "asynchronous").exists()


def test_a_kill_in_a_sharded_save_loses_nothing_and_latest_resumes(launches):
    killed_launch, resumed = launches
    output = killed_launch.output
    assert killed_launch.status != 0 and "KILLED halfway through" in output, output[-3000:]
    assert "/.04_update.incomplete/dcp/__1_0.distcp" in output, "killed inside the save of update 4"
    states = list_training_states(resumed.out / "killed_states")  # after the resume: the same earlier ones
    names = [state.name for state in states]
    assert names[: names.index("03_epoch_end") + 1] == [
        "00_run_start",
        "01_update",
        "02_update",
        "03_update",
        "03_epoch_end",
    ], names
    for state in states:
        check_digests(state, read_manifest(state))
    assert [result["resumed_from"] for result in resumed.results("resumed_latest")] == ["03_epoch_end"] * 2
    assert_bitwise_equal(whole_state(resumed, "resumed_latest"), whole_state(resumed, "uninterrupted"))


def test_a_state_saved_sharded_on_two_processes_loads_into_a_plain_model(runs):
    runs.results("uninterrupted")
    last = list_training_states(runs.out / "states")[-1]
    model = TinyTransformer(seed=7)  # other weights
    trainer = Trainer(model, next_token_loss, torch.optim.AdamW(model.parameters(), lr=1.0, weight_decay=0.5))
    returned = trainer.load_training_state(last)
    assert returned == {"current_epoch": 3, "completed_update_steps": 6}
    whole = {"model_state_dict": model.state_dict(), "optimizer_state_dict": trainer.optimizer.state_dict()}
    assert_bitwise_equal(whole, whole_state(runs, "uninterrupted"))
