"""How the processes of a two-process run end (two CPU processes, gloo, torchrun), through the
interpreter's exit as a user's script ends: a run that succeeds exits 0 with gloo's threads
joined first; a process that fails exits at once, its dataloader workers with it, and the other
fails by itself soon after, naming it. Scenarios: ``tests/core/exit_scenarios.py``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from ..launching import LAUNCH_TIMEOUT_S, REPO_ROOT, run_launch, tail, torchrun_command
from . import exit_scenarios as scenarios
from .helpers import is_running

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SCRIPT = Path(__file__).resolve().with_name("exit_scenarios.py").relative_to(REPO_ROOT)
GLOO_THREADS = {"pt_gloo_runloop", "gloo_tcp_loop"}
# torchrun ends the other processes this long after one failed: any of them that had not failed
# by itself by then has no result, and the test says so
MONITOR_INTERVAL_S = 60


def launch(scenario: str, tmp_path: Path) -> tuple[int, list[dict], list[dict], str]:
    """Run ``scenario`` on two processes: the exit status, each process's result and exit record, output."""
    out = tmp_path / "out"
    command = torchrun_command(SCRIPT, scenario, out, options=("--monitor-interval", str(MONITOR_INTERVAL_S)))
    status, output = run_launch(command, tmp_path)
    assert status is not None, f"the launch hung: stopped after {LAUNCH_TIMEOUT_S} s\n{tail(output)}"
    results = [_read(out / f"{scenario}_rank{rank}.json") for rank in range(2)]
    exits = [_read(out / f"{scenario}_exit_rank{rank}.json") for rank in range(2)]
    return status, results, exits, output


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("scenario", ["success", "fsdp2_success"])
def test_a_successful_run_joins_gloos_threads_before_the_interpreter_ends(scenario, tmp_path):
    """A gloo thread still alive when the interpreter finalizes can abort the process (SIGABRT) as it
    lets go of the last collective's tensors: they are gone before, whatever the machine's load.
    DDP's reducer holds the process group; under FSDP2, the sharded modules' meshes do."""
    status, results, exits, output = launch(scenario, tmp_path)
    assert status == 0, tail(output)
    assert [result.get("gathered") for result in results] == [[0.0, 1.0]] * 2, results
    for rank, record in enumerate(exits):
        assert "threads" in record, f"process {rank} did not reach the end of its exit hooks\n{tail(output)}"
        left = GLOO_THREADS & set(record["threads"])
        assert not left, f"process {rank}: gloo's threads {sorted(left)} outlived the exit hooks: {record}"


def test_a_run_with_persistent_workers_held_to_the_end_exits_0(tmp_path):
    """A run with persistent workers whose trainer is held to the end exits 0.

    Its workers (started from a forkserver, they leave SIGTERM to the training process) are alive at
    exit: multiprocessing's exit sent them SIGTERM and waited for them for good."""
    status, results, exits, output = launch("persistent_workers", tmp_path)
    assert status == 0, tail(output)
    assert all(result.get("completed_update_steps") for result in results), results
    for rank, record in enumerate(exits):
        assert not GLOO_THREADS & set(record.get("threads", GLOO_THREADS)), f"process {rank}: {record}"


def check_failure_named_on_every_process(scenario: str, error_type: str, reason: str, tmp_path: Path) -> None:
    status, results, _, output = launch(scenario, tmp_path)
    assert status != 0, tail(output)
    failed, other = results[scenarios.FAILING_PROCESS], results[1 - scenarios.FAILING_PROCESS]
    assert failed.get("error_type") == error_type and reason in failed["message"], f"{failed}\n{tail(output)}"
    assert other.get("error_type") == "ProcessesOutOfStepError", (
        f"process 0 did not fail by itself within {MONITOR_INTERVAL_S} s: {other}\n{tail(output)}"
    )
    named = f"Training failed on process {scenarios.FAILING_PROCESS} ({error_type}: "
    assert named in other["message"], other
    assert reason in other["message"], other
    workers = failed["workers"] + other["workers"]
    deadline = time.monotonic() + 30  # a killed worker's end is reported by its forkserver, soon
    while time.monotonic() < deadline and any(map(is_running, workers)):
        time.sleep(0.1)
    left = [pid for pid in workers if is_running(pid)]
    assert not left, f"dataloader workers {left} of {workers} outlived the launch"


def test_a_callback_failing_on_one_process_fails_every_process(tmp_path):
    """A callback failing on one process with workers fails every process.

    The other process failed with gloo's "Connection closed by peer" alone, not saying why."""
    check_failure_named_on_every_process("callback_fails", "RuntimeError", scenarios.FAILURE, tmp_path)


def test_a_dataloader_worker_failing_on_one_process_fails_every_process(tmp_path):
    """The failing process waited at exit for its other worker (which leaves SIGTERM to it), and the other
    process in DDP's collective, for good: the launch never ended."""
    check_failure_named_on_every_process("worker_fails", "OSError", scenarios.WORKER_FAILURE, tmp_path)


def test_a_getitem_that_never_returns_fails_every_process_in_time(tmp_path):
    """A ``__getitem__`` that never returns fails every process after the batch limit.

    torch's DataLoader waits for a batch for good by default: the trainer gives worker loaders a limit."""
    reason = f"DataLoader timed out after {scenarios.BATCH_TIMEOUT_S} seconds"
    check_failure_named_on_every_process("worker_hangs", "RuntimeError", reason, tmp_path)
