"""One process of two at fault, for real (two CPU processes, gloo, launched with torchrun): it cannot
see the training states, it raises StopTrainingError alone. Never a hang; the reason on every process."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from ..launching import REPO_ROOT, free_port, run_launch, tail
from . import process_fault_scenarios as scenarios

NUM_PROCESSES = 2
SCRIPT = Path(__file__).resolve().with_name("process_fault_scenarios.py").relative_to(REPO_ROOT)


def launch(names: list[str], tmp_path: Path) -> tuple[list[dict], dict[str, list[dict]], float]:
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", "--nproc_per_node", str(NUM_PROCESSES),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(SCRIPT), ",".join(names), str(out),
    ]  # fmt: skip
    started = time.monotonic()
    status, output = run_launch(command, tmp_path)
    elapsed = time.monotonic() - started
    results = {}
    for name in names:
        paths = [out / f"{name}_rank{rank}.json" for rank in range(NUM_PROCESSES)]
        found = [json.loads(path.read_text()) for path in paths if path.exists()]
        errors = [result["error"] for result in found if "error" in result]
        if errors or len(found) != NUM_PROCESSES:
            pytest.fail(f"scenario {name!r}: {errors or 'no result from every process'}\n{tail(output)}", pytrace=False)
        results[name] = found
    return status, results, elapsed


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("process_faults")
    # the stop of one process breaks the process group: it runs last
    return launch(["resume_unshared", "stop_every_process", "stop_one_process"], tmp_path)


def test_resume_where_one_process_sees_no_state_fails_on_every_process_naming_what_each_saw(fault_runs):
    _, results, _ = fault_runs
    per_process = results["resume_unshared"]
    assert per_process[0]["saved"] and not per_process[1]["saved"], per_process  # only the main process's folder
    for variant in ("latest", "folder"):
        for result in per_process:
            seen = result[variant]
            assert seen["error_type"] == "CheckpointError", seen
            assert "different training states" in seen["message"], seen
            assert "process 0: " in seen["message"] and "step-" in seen["message"], seen
            assert "process 1: " in seen["message"], seen
            assert "file system that every process shares" in seen["message"], seen
    assert per_process[0]["latest"]["message"] == per_process[1]["latest"]["message"]
    assert "process 1: none found" in per_process[1]["latest"]["message"]


def test_stop_raised_on_every_process_at_the_same_step_stops_them_cleanly(fault_runs):
    _, results, _ = fault_runs
    steps = [result["completed_update_steps"] for result in results["stop_every_process"]]
    assert steps == [scenarios.STOP_STEP - 1] * NUM_PROCESSES


def test_stop_raised_on_one_process_only_fails_every_process_with_its_reason(fault_runs):
    status, results, elapsed = fault_runs
    for result in results["stop_one_process"]:
        assert result["error_type"] == "ProcessesOutOfStepError", result
        assert scenarios.STOP_REASON in result["message"], result
        assert "trainer.any_process" in result["message"], result
    stopper, other = results["stop_one_process"][1], results["stop_one_process"][0]
    assert "raised on process 1" in stopper["message"], stopper
    assert "another process only" in other["message"], other
    # the stopping process gave the other one the agreement's time to stop too, not a collective's timeout
    assert stopper["seconds"] < scenarios.STOP_AGREEMENT_TIMEOUT_S + 20, stopper
    assert status == 0
