"""A training state resumed on another number of processes (2 -> 1, 1 -> 2, 2 -> 3, and an FSDP2 model's
sharded state 2 -> 3): each update reads the samples the uninterrupted run read, in global sample indices
(gathered from every process), and the weights end equal to float tolerance (the reduction order changes);
another global batch is refused, naming what to pass. Runs: ``process_count_scenario.py``, one process in
the test's own, more through torchrun."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.trainer import CheckpointError
from pytorch_accelerated.trainer.process_change import (
    BatchSettings,
    ProcessChange,
    check_global_batch,
    warn_what_differs,
)
from pytorch_accelerated.trainer.random_state import capture_rng_state, derived_rng_state

from ..launching import REPO_ROOT, run_launch, tail, torchrun_command
from . import process_count_scenario as scenario

SCRIPT = Path(scenario.__file__).relative_to(REPO_ROOT)
SAVED_AT = 7  # inside the second epoch (5 updates of 12 samples each)
UPDATES = scenario.NUM_EPOCHS * scenario.NUM_SAMPLES // 12
TOLERANCE = 1e-6  # SGD: the weights differ by the float rounding of another reduction order


def launch(out: Path, num_processes: int, tmp_path: Path, *runs: str) -> None:
    command = torchrun_command(SCRIPT, out, *runs, num_processes=num_processes)
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)


def run_here(
    out: Path, name: str, kind: str, batch_size: int, accumulation: int = 1, save_at=None, resume_from=None
):
    result = scenario.train(out, name, kind, batch_size, accumulation, save_at, resume_from)
    torch.save(result, out / f"{name}.pt")
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Uninterrupted runs (12 samples per update) on one and two processes (and an FSDP2 one on two), each
    saving a state at update 7 and training on; and the two-process resumes of the one-process states."""
    tmp = tmp_path_factory.mktemp("process_count")
    out = tmp / "out"
    for kind in ("map", "stream"):
        run_here(out, f"{kind}1", kind, 12, save_at=SAVED_AT)
    launch(
        out,
        2,
        tmp,
        f"map2:map:6:1:{SAVED_AT}:-",
        f"stream2:stream:6:1:{SAVED_AT}:-",
        f"map12:map:6:1:-:{out / 'map1_state'}",
        f"stream12:stream:6:1:-:{out / 'stream1_state'}",
        f"fsdp2:fsdp:6:1:{SAVED_AT}:-",
    )
    return out


def result(out: Path, name: str) -> dict:
    return torch.load(out / f"{name}.pt", weights_only=False)


def assert_resumed_like(resumed: dict, uninterrupted: dict, what: str) -> None:
    expected = {update: indices for update, indices in uninterrupted["updates"].items() if update >= SAVED_AT}
    assert resumed["updates"] == expected, (
        f"{what}: the resumed run's sample indices per update differ from the uninterrupted run's "
        f"(updates {sorted(resumed['updates'])}, first: {next(iter(resumed['updates'].values()), None)} vs "
        f"{expected[SAVED_AT]})"
    )
    # the epoch resumed inside: its running loss is the sum of every saved process's, and the new steps'
    losses, expected_losses = resumed["train_loss_epoch"], uninterrupted["train_loss_epoch"]
    assert losses == pytest.approx(expected_losses, rel=1e-5), (
        f"{what}: epoch losses {losses} vs {expected_losses}"
    )
    for key, weight in uninterrupted["weights"].items():
        difference = (resumed["weights"][key] - weight).abs().max().item()
        assert difference < TOLERANCE, f"{what}: {key} differs by {difference} from the uninterrupted run's"


def test_the_uninterrupted_runs_record_every_sample_once_per_epoch(runs):
    for name in ("map1", "map2", "stream2"):
        updates = result(runs, name)["updates"]
        assert sorted(updates) == list(range(UPDATES)), f"{name} recorded updates {sorted(updates)}"
        for epoch in range(scenario.NUM_EPOCHS):
            seen = sorted(i for update in range(epoch * 5, epoch * 5 + 5) for i in updates[update])
            assert seen == list(range(scenario.NUM_SAMPLES)), f"{name}, epoch {epoch}: samples seen {seen}"
    assert result(runs, "map1")["updates"][0] != result(runs, "map2")["updates"][0], (
        "the orders should differ"
    )


@pytest.mark.parametrize(
    "kind, batch_size, accumulation",
    [("map", 12, 1), ("map", 6, 2), ("stream", 12, 1)],
    ids=["shuffled-map", "shuffled-map-accumulating", "stream"],
)
def test_a_state_of_two_processes_resumes_on_one_with_the_same_samples(
    runs, tmp_path, kind, batch_size, accumulation
):
    resumed = run_here(
        tmp_path, "resumed", kind, batch_size, accumulation, resume_from=runs / f"{kind}2_state"
    )
    assert resumed["num_processes"] == 1
    assert_resumed_like(
        resumed, result(runs, f"{kind}2"), f"{kind} 2 -> 1 (x{batch_size}, {accumulation} accumulated)"
    )


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_a_state_of_one_process_resumes_on_two_with_the_same_samples(runs, kind):
    resumed = result(runs, f"{kind}12")
    assert resumed["num_processes"] == 2
    assert_resumed_like(resumed, result(runs, f"{kind}1"), f"{kind} 1 -> 2")


def test_a_state_of_two_processes_resumes_on_three_with_the_same_samples(runs, tmp_path):
    out = tmp_path / "out"
    launch(
        out,
        3,
        tmp_path,
        f"map23:map:4:1:-:{runs / 'map2_state'}",
        f"stream23:stream:4:1:-:{runs / 'stream2_state'}",
    )
    for kind in ("map", "stream"):
        resumed = result(out, f"{kind}23")
        assert resumed["num_processes"] == 3
        assert_resumed_like(resumed, result(runs, f"{kind}2"), f"{kind} 2 -> 3")


def test_a_sharded_state_of_two_processes_resumes_on_three_alike(runs, tmp_path):
    manifest = json.loads((runs / "fsdp2_state" / "training_state.json").read_text())
    formats = {storage["format"] for storage in manifest["components"].values()}
    assert result(runs, "fsdp2")["sharded"], "the uninterrupted run was to shard its model with FSDP2"
    assert formats == {"torch.distributed.checkpoint"}, f"the FSDP2 state was not saved sharded: {formats}"
    out = tmp_path / "out"
    launch(out, 3, tmp_path, f"fsdp23:fsdp:4:1:-:{runs / 'fsdp2_state'}")
    resumed = result(out, "fsdp23")
    assert (resumed["num_processes"], resumed["sharded"]) == (3, True), "resumed sharded on 3 processes"
    assert_resumed_like(resumed, result(runs, "fsdp2"), "FSDP2 2 -> 3")


def test_another_global_batch_is_refused_naming_what_to_pass(runs, tmp_path):
    with pytest.raises(CheckpointError) as refused:
        run_here(tmp_path, "refused", "map", 8, resume_from=runs / "map2_state")
    message = str(refused.value)
    assert "2 process(es) x 6 per device x 1 accumulated = 12 samples per update" in message, message
    assert "per_device_batch_size=12, gradient_accumulation_steps=1" in message, message


def test_a_global_batch_that_cannot_be_split_exactly_says_where_it_can():
    saved = BatchSettings(per_device_batch_size=8, num_processes=2, accumulation=1)
    with pytest.raises(CheckpointError, match="16 samples per update do not split exactly over 3 process"):
        check_global_batch(saved, BatchSettings(5, 3, 1), samples_per_epoch=64, where="'state'")
    # another accumulation reads other micro-batches: exact only where every update of an epoch is full
    with pytest.raises(CheckpointError, match="pass per_device_batch_size=16, gradient_accumulation_steps=1"):
        check_global_batch(saved, BatchSettings(8, 1, 2), samples_per_epoch=70, where="'state'")
    check_global_batch(saved, BatchSettings(8, 1, 2), samples_per_epoch=64, where="'state'")


def test_processes_the_saved_run_did_not_have_draw_other_numbers():
    state = capture_rng_state()
    derived = [derived_rng_state(state, index) for index in (2, 3)]
    assert not torch.equal(derived[0]["torch"], derived[1]["torch"]), "two new processes would drop out alike"
    assert not torch.equal(derived[0]["torch"], state["torch"]), "a new process would drop out as process 0"
    assert derived_rng_state(state, 2)["python"] == derived[0]["python"], (
        "the derivation must be reproducible"
    )


def test_a_model_with_dropout_is_said_to_draw_otherwise_after_the_change():
    change = ProcessChange(saved=2, here=3)
    with pytest.warns(UserWarning, match="Dropout draws from each process's own generators"):
        warn_what_differs(
            change, torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.1)), False, False
        )
    with pytest.warns(UserWarning, match="seeded per per-device batch"):
        warn_what_differs(change, torch.nn.Linear(2, 2), batch_changed=True, seeds_fetches=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_what_differs(
            change, torch.nn.Sequential(torch.nn.Dropout(0.0)), batch_changed=False, seeds_fetches=True
        )
