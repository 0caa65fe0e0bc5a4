"""Exact resume, proven on real processes: a run killed with SIGKILL (inside an accumulation
window, just before an update, on an epoch boundary, halfway through writing a state) and resumed
each time from the latest state ends bitwise like the uninterrupted run, on one process and on two
(gloo), with its random augmentation loaded by two dataloader workers or in the main process;
SIGTERM makes a run save and stop, and it resumes as well.

Each launch runs ``resume_scenario.py`` (a few seconds each). The suite kills each run at two points
(every kind of point, on one process and on two), so that no test runs for a minute; the test marked
``slow`` kills one run at ten random points in a row (``pytest -m slow``; CI runs it in a step of
its own). The kill points are drawn at random; set ``RESUME_KILL_SEED`` to replay a failing draw
(the seed is in every failure message). The tests share one uninterrupted run per number of
processes and of workers (one per pytest-xdist worker).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.trainer.testing import assert_bitwise_equal

from ..launching import REPO_ROOT, launch_env, run_launch, stop_process_tree, tail, torchrun_command
from . import resume_scenario as scenario

SCRIPT = str(Path(scenario.__file__).resolve().relative_to(REPO_ROOT))
NUM_KILLS_IN_A_ROW = 10
ONE_PROCESS_AND_TWO = pytest.mark.parametrize("num_processes", [1, 2], ids=["one-process", "two-processes"])


def command(out: Path, num_processes: int, *args: str) -> list[str]:
    if num_processes == 1:
        return [sys.executable, SCRIPT, str(out), *args]
    return torchrun_command(SCRIPT, out, *args, num_processes=num_processes)


def launch(
    out: Path, num_processes: int, tmp_path: Path, *args: str, workers: int = 2, asynchronous: bool = False
) -> tuple[int | None, str]:
    extra = ["--asynchronous"] if asynchronous else []
    return run_launch(command(out, num_processes, *args, "--workers", str(workers), *extra), tmp_path)


def results(out: Path, num_processes: int) -> list[dict]:
    return [torch.load(out / f"result_rank{rank}.pt", weights_only=True) for rank in range(num_processes)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run's results and CSV log, per number of processes and of dataloader workers."""
    runs = {}

    def get(num_processes: int, workers: int = 2):
        if (num_processes, workers) not in runs:
            tmp = tmp_path_factory.mktemp(f"uninterrupted{num_processes}-{workers}")
            status, output = launch(tmp / "out", num_processes, tmp, workers=workers)
            assert status == 0, tail(output)
            runs[num_processes, workers] = (
                results(tmp / "out", num_processes),
                (tmp / "out" / "version_0" / "metrics.csv").read_text(),
            )
        return runs[num_processes, workers]

    return get


def _batch_points(num_processes: int) -> tuple[list[int], list[int]]:
    """The batches a run may be killed in (never the last of an epoch: that is an epoch boundary),
    as (inside an accumulation window, just before an update)."""
    per_epoch = scenario.batches_per_epoch(num_processes)
    total = per_epoch * scenario.NUM_EPOCHS

    def ends_window(batch: int) -> bool:
        in_epoch = (batch - 1) % per_epoch + 1
        return in_epoch % scenario.ACCUMULATION_STEPS == 0 or in_epoch == per_epoch

    batches = [b for b in range(2, total) if b % per_epoch]
    return [b for b in batches if not ends_window(b)], [b for b in batches if ends_window(b)]


def draw_kill_point(rng: random.Random, kind: str, num_processes: int) -> tuple[int, str]:
    """One kill point of ``kind`` as (the batch it follows, ``resume_scenario``'s ``--kill`` value)."""
    inside, before_update = _batch_points(num_processes)
    if kind == "epoch":
        epoch = rng.randrange(1, scenario.NUM_EPOCHS)
        return epoch * scenario.batches_per_epoch(num_processes), f"epoch:{epoch}"
    # mid-epoch: a batch after the epoch's state saved at its second update, so the resume starts inside the
    # epoch
    per_epoch = scenario.batches_per_epoch(num_processes)
    mid_epoch = [
        b for b in inside + before_update if (b - 1) % per_epoch + 1 > 2 * scenario.ACCUMULATION_STEPS
    ]
    pools = {
        "inside-window": inside,
        "before-update": before_update,
        "write": inside + before_update,
        "mid-epoch": mid_epoch,
    }
    batch = rng.choice(pools[kind])
    return batch, f"{'write' if kind == 'write' else 'batch'}:{batch}"


def draw_kill_points(rng: random.Random, kinds: list[str], num_processes: int) -> list[str]:
    """One kill point per kind, at distinct batches, in the order a run reaches them."""
    while True:
        points = [draw_kill_point(rng, kind, num_processes) for kind in kinds]
        if len({batch for batch, _ in points}) == len(points):
            return [point for _, point in sorted(points)]


def killed_and_resumed_ends_like_the_uninterrupted_run(
    tmp_path,
    num_processes,
    kinds,
    uninterrupted,
    workers: int = 2,
    kill_points: list[str] | None = None,
    asynchronous: bool = False,
) -> None:
    """Kill a run at one point per kind (drawn at random; or at ``kill_points``), resume, compare.
    ``asynchronous``: the killed and resumed launches write their states in the background."""
    if kill_points is None:
        seed = int(os.environ.get("RESUME_KILL_SEED", time.time_ns() % 2**32))
        kill_points = draw_kill_points(random.Random(seed), kinds, num_processes)
        context = f"RESUME_KILL_SEED={seed}, kill points {kill_points}, {workers} workers"
    else:
        context = f"kill points {kill_points}, {workers} workers"
    out = tmp_path / "out"
    for kill_point in kill_points:
        status, output = launch(
            out, num_processes, tmp_path, "--kill", kill_point, workers=workers, asynchronous=asynchronous
        )
        assert status != 0 and "KILLED" in output, (
            f"{context}: the launch to kill at {kill_point} was not killed\n{tail(output)}"
        )
        assert not (out / "result_rank0.pt").exists()
        if asynchronous and kill_point.startswith("write"):
            assert "(thread training-state-writer" in output, (
                f"{context}: not killed in the background write\n{tail(output)}"
            )
    status, output = launch(out, num_processes, tmp_path, workers=workers, asynchronous=asynchronous)
    assert status == 0, f"{context}\n{tail(output)}"
    assert "Resuming training run from" in output
    assert "loading again the batches" not in output, (
        "the resume replayed the epoch instead of skipping to its position"
    )

    expected_results, expected_log = uninterrupted(num_processes, workers)
    for rank, (result, expected) in enumerate(zip(results(out, num_processes), expected_results)):
        assert_bitwise_equal(result, expected, f"{context}: rank {rank}")
    # the resumed launches went on writing the interrupted run's own folder (run_folders.py)
    assert (out / "version_0" / "metrics.csv").read_text() == expected_log, context
    assert not (out / "version_1").exists(), context
    states = sorted(path.name for path in (out / "states").iterdir())
    assert len(states) == 3 and not [name for name in states if name.startswith(".")], f"{context}: {states}"


@ONE_PROCESS_AND_TWO
@pytest.mark.parametrize(
    ("kinds", "workers"),
    [(["inside-window", "epoch"], 2), (["before-update", "write", "mid-epoch"], 0)],
    ids=[
        "inside-a-window-and-at-an-epoch-end-two-workers",
        "before-an-update-mid-write-and-mid-epoch-no-workers",
    ],
)
def test_a_run_killed_twice_ends_bitwise_like_the_uninterrupted_run(
    tmp_path, num_processes, kinds, workers, uninterrupted
):
    """Each process count with both ways of loading: in two workers, and in the main process, where
    accelerate's dataloader (two processes) loads the batch after a save point before the save; one
    kill ("mid-epoch") is after a state saved inside its epoch, so that at least one resume starts
    inside an epoch (replaying the loading fails that one on two processes)."""
    killed_and_resumed_ends_like_the_uninterrupted_run(tmp_path, num_processes, kinds, uninterrupted, workers)


@ONE_PROCESS_AND_TWO
def test_background_states_survive_a_kill_mid_write_and_resume_exactly(
    tmp_path, num_processes, uninterrupted
):
    """States written in the background survive a kill mid-write and resume exactly.

    Every state written in the background (``asynchronous=True``): a SIGKILL halfway through one,
    in the writer thread while training goes on, leaves the states before it intact; a kill just before
    an update, and the resume from the latest, end bitwise like the uninterrupted run that saved
    synchronously (so saving in the background changes nothing the run computes)."""
    killed_and_resumed_ends_like_the_uninterrupted_run(
        tmp_path, num_processes, ["write", "before-update"], uninterrupted, workers=0, asynchronous=True
    )


def test_a_kill_before_the_start_state_is_written_resumes_in_its_folder(tmp_path, uninterrupted):
    """Killed in batch 3 while the state saved at its start was still being written in the background
    (held there until the kill): that state is written before the first step, so that the next launch
    resumes from it and goes on writing the log in the run folder claimed at the start (the start
    state, written in the background, was lost: the next launch started a new run in version_1)."""
    killed_and_resumed_ends_like_the_uninterrupted_run(
        tmp_path, 1, [], uninterrupted, workers=0, kill_points=["start:3"], asynchronous=True
    )


def test_a_run_killed_while_pruning_a_state_leaves_no_half_deleted_state(tmp_path, uninterrupted):
    """Killed after deleting one file of the oldest state, pruned once epoch 1's end was saved: the
    state was renamed out of the listing first, and the next write removes the rest (a half-deleted
    folder stayed under its name, never listed nor pruned, or was set aside as damaged: four entries)."""
    killed_and_resumed_ends_like_the_uninterrupted_run(
        tmp_path, 1, [], uninterrupted, workers=0, kill_points=["prune:12"]
    )


def test_a_resume_inside_an_epoch_keeps_the_next_epochs_data_order(tmp_path, uninterrupted):
    """An epoch resumed inside leaves the next epoch's order as the uninterrupted run draws it.

    Killed in epoch 1's 8th batch of 12, two processes resume from the state saved after its 6th:
    there, two workers have asked accelerate's sharded sampler for index lists up to the
    epoch's 11th, and the resumed epoch (one look-ahead further) for its 12th, for which the
    shuffling sampler makes its draw at its end. The saved state of its generator, put back
    after that, undid the draw: epochs 2 to 5 were shuffled otherwise."""
    killed_and_resumed_ends_like_the_uninterrupted_run(
        tmp_path, 2, [], uninterrupted, workers=2, kill_points=["batch:8"]
    )


@pytest.mark.slow
@ONE_PROCESS_AND_TWO
def test_a_run_killed_ten_times_ends_bitwise_like_the_uninterrupted_run(
    tmp_path, num_processes, uninterrupted
):
    """A run killed at ten random points in a row ends bitwise like the uninterrupted run.

    Ten kills, two or three of each kind, then the resume (twelve launches: minutes on two cores)."""
    kinds = ["inside-window"] * 3 + ["before-update"] * 3 + ["epoch"] * 2 + ["write"] * 2
    assert len(kinds) == NUM_KILLS_IN_A_ROW
    killed_and_resumed_ends_like_the_uninterrupted_run(tmp_path, num_processes, kinds, uninterrupted)


def _start(out: Path, num_processes: int, tmp_path: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    log_path = tmp_path / f"signal-launch-{time.time_ns()}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command(out, num_processes, *args),
            cwd=REPO_ROOT,
            env=launch_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


def _wait_for(path: Path, process: subprocess.Popen, log_path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_tree(process) if process.poll() is None else None
            pytest.fail(f"the run never reached {path.name}:\n{tail(log_path.read_text())}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("num_processes", "signal_number", "rank_signalled", "workers", "asynchronous"),
    [
        (1, signal.SIGTERM, 0, 0, False),
        (1, signal.SIGINT, 0, 2, False),
        (2, signal.SIGTERM, 1, 0, False),
        (2, signal.SIGTERM, 0, 0, True),
    ],
    ids=[
        "sigterm-no-workers",
        "sigint-two-workers",
        "sigterm-to-one-of-two-processes-no-workers",
        "sigterm-to-two-processes-saving-in-the-background",
    ],
)
def test_a_signal_saves_a_state_stops_cleanly_and_the_run_resumes_exactly(
    tmp_path, num_processes, signal_number, rank_signalled, workers, asynchronous, uninterrupted
):
    out = tmp_path / "out"
    extra = ["--asynchronous"] if asynchronous else []
    process, log_path = _start(
        out, num_processes, tmp_path, "--slow-after", "5", "--workers", str(workers), *extra
    )
    marker = out / f"ready_rank{rank_signalled}"
    _wait_for(marker, process, log_path)
    os.kill(int(marker.read_text()), signal_number)
    try:
        status = process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stop_process_tree(process)
        pytest.fail(f"the run did not stop after the signal:\n{tail(log_path.read_text())}")
    output = log_path.read_text()
    name = signal.Signals(signal_number).name
    assert status == 0, tail(output)
    assert f"Stopped by {name}: the training state is saved in" in output, tail(output)
    saved = sorted(path.name for path in (out / "states").iterdir())
    assert not saved[-1].endswith(("-end", "-stopped")), saved  # a state to continue from
    assert not [name for name in saved if name.startswith(".")], saved  # no write left unfinished

    for leftover in [*out.glob("ready_rank*"), *out.glob("result_rank*")]:
        leftover.unlink()  # the stopped run returned normally and wrote its (partial) results
    status, output = launch(out, num_processes, tmp_path, workers=workers, asynchronous=asynchronous)
    assert status == 0, tail(output)
    expected_results, expected_log = uninterrupted(num_processes, workers)
    for rank, (result, expected) in enumerate(zip(results(out, num_processes), expected_results)):
        assert_bitwise_equal(result, expected, f"rank {rank}")
    # the resumed launches went on writing the interrupted run's own folder (run_folders.py)
    assert (out / "version_0" / "metrics.csv").read_text() == expected_log


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run folder as TensorBoard's reader shows it: (step, value) by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    reader.Reload()
    tags = reader.Tags()["scalars"]
    return {tag: [(event.step, event.value) for event in reader.Scalars(tag)] for tag in tags}


def test_tensorboard_shows_a_resumed_run_as_the_uninterrupted_one(tmp_path):
    """TensorBoard shows a killed and resumed run as the uninterrupted one.

    Killed after update 7 (its rows logged, the state saved at 6), then after epoch 2's metrics are
    logged (its state not saved yet; the one before was saved at its last update, with values
    waiting for the epoch's row): TensorBoard's reader sees every step's values once, as in the
    run never killed (they showed twice: the interrupted run's and the resumed run's)."""
    pytest.importorskip("tensorboard")
    expected = tmp_path / "expected"
    status, output = launch(expected, 1, tmp_path, "--tensorboard", workers=0)
    assert status == 0, tail(output)
    out = tmp_path / "out"
    for kill_point in ["batch:22", "logged:2"]:
        status, output = launch(out, 1, tmp_path, "--tensorboard", "--kill", kill_point, workers=0)
        assert status != 0 and "KILLED" in output, f"not killed at {kill_point}:\n{tail(output)}"
    status, output = launch(out, 1, tmp_path, "--tensorboard", workers=0)
    assert status == 0, tail(output)
    for logged in ["tb_steps", "tb_epochs"]:
        resumed = tensorboard_scalars(out / logged / "version_0" / "tb")
        assert resumed == tensorboard_scalars(expected / logged / "version_0" / "tb"), logged
        assert len(list((out / logged / "version_0" / "tb").glob("events.out.tfevents.*"))) == 3
