"""How the processes of a two-process run end (two CPU processes, gloo, torchrun), through the
interpreter's exit as a user's script ends: a run that succeeds exits 0 with gloo's threads
joined first. Scenarios: ``tests/core/exit_scenarios.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ..launching import LAUNCH_TIMEOUT_S, REPO_ROOT, free_port, run_launch, tail

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SCRIPT = Path(__file__).resolve().with_name("exit_scenarios.py").relative_to(REPO_ROOT)
GLOO_THREADS = {"pt_gloo_runloop", "gloo_tcp_loop"}
# torchrun ends the other processes this long after one failed: any of them that had not failed
# by itself by then has no result, and the test says so
MONITOR_INTERVAL_S = 60


def launch(scenario: str, tmp_path: Path) -> tuple[int, list[dict], list[dict], str]:
    """Run ``scenario`` on two processes; the exit status, each process's result and exit record, the output."""
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "--monitor-interval", str(MONITOR_INTERVAL_S), str(SCRIPT), scenario, str(out),
    ]  # fmt: skip
    status, output = run_launch(command, tmp_path)
    assert status is not None, f"the launch hung: stopped after {LAUNCH_TIMEOUT_S} s\n{tail(output)}"
    results = [_read(out / f"{scenario}_rank{rank}.json") for rank in range(2)]
    exits = [_read(out / f"{scenario}_exit_rank{rank}.json") for rank in range(2)]
    return status, results, exits, output


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def test_a_successful_run_joins_gloos_threads_before_the_interpreter_ends(tmp_path):
    """A gloo thread still alive when the interpreter finalizes can abort the process (SIGABRT) as it
    lets go of the last collective's tensors: they are gone before, whatever the machine's load."""
    status, results, exits, output = launch("success", tmp_path)
    assert status == 0, tail(output)
    assert [result.get("gathered") for result in results] == [[0.0, 1.0]] * 2, results
    for rank, record in enumerate(exits):
        assert "threads" in record, f"process {rank} did not reach the end of its exit hooks\n{tail(output)}"
        left = GLOO_THREADS & set(record["threads"])
        assert not left, f"process {rank}: gloo's threads {sorted(left)} outlived the exit hooks: {record['threads']}"
