"""An elastic restart for real: two torchrun agents on this machine (``--nnodes=1:2``, one c10d rendezvous,
one worker each, ``--max-restarts=2``), one worker SIGKILLed inside an epoch; the agents restart both
workers, which resume the newest state (``resume_from="latest"``), and the run ends with the samples per
update and the weights of an uninterrupted run. Script: ``elastic_scenario.py``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ..launching import (
    REPO_ROOT,
    free_port,
    launch_env,
    run_launch,
    stop_process_tree,
    tail,
    torchrun_command,
)
from . import elastic_scenario as scenario

SCRIPT = str(Path(scenario.__file__).relative_to(REPO_ROOT))
UPDATES = scenario.NUM_EPOCHS * scenario.NUM_SAMPLES // scenario.GLOBAL_BATCH
KILL_AT = 7  # the third update of the second epoch
AGENTS_TIMEOUT_S = 420


def updates_recorded(out: Path) -> dict[int, dict]:
    return {
        int(path.stem.split("_")[1]): json.loads(path.read_text())
        for path in sorted(out.glob("update_*.json"))
    }


def start_agent(
    tmp_path: Path, name: str, port: int, out: Path, *fault: str
) -> tuple[subprocess.Popen, Path]:
    env = launch_env(tmp_path)
    # pytorch#135712: with the rendezvous store shared (torch's default), a restarted worker can read the dead
    # peer's address from the round before and fail to connect: the README's recipe sets this too
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1:2",
        "--nproc-per-node=1",
        "--max-restarts=2",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{port}",
        "--rdzv-id=elastic-test",
        "--rdzv-conf=last_call_timeout=5,join_timeout=120",
        "--monitor-interval=0.5",
        SCRIPT,
        str(out),
        *fault,
    ]
    log_path = tmp_path / f"agent_{name}.log"
    with open(log_path, "w") as log:
        agent = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return agent, log_path


def wait_for(agents: list[subprocess.Popen]) -> list[int | None]:
    deadline = time.monotonic() + AGENTS_TIMEOUT_S
    statuses = []
    for agent in agents:
        try:
            statuses.append(agent.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            stop_process_tree(agent)
            statuses.append(None)
    return statuses


@pytest.mark.slow
def test_an_elastic_run_with_a_killed_worker_sees_the_same_samples(tmp_path):
    reference = tmp_path / "reference"
    command = torchrun_command(SCRIPT, reference)
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)

    out, port = tmp_path / "elastic", free_port()
    agent_a, log_a = start_agent(tmp_path, "a", port, out)
    time.sleep(3)  # agent A hosts the rendezvous store; B joins it
    agent_b, log_b = start_agent(tmp_path, "b", port, out, "--kill-at", str(KILL_AT))
    statuses = wait_for([agent_a, agent_b])
    logs = "\n".join(
        f"agent {name}:\n{tail(log.read_text(errors='replace'), 4000)}"
        for name, log in (("A", log_a), ("B", log_b))
    )
    assert statuses == [0, 0], f"agents exited {statuses}\n{logs}"
    assert (out / "killed").exists(), f"the worker was never killed\n{logs}"

    got, expected = updates_recorded(out), updates_recorded(reference)
    assert sorted(got) == list(range(UPDATES)), f"updates recorded: {sorted(got)}\n{logs}"
    different = [update for update in range(UPDATES) if got[update]["indices"] != expected[update]["indices"]]
    assert not different, f"updates {different} read other samples than the uninterrupted run's"
    before, after = {got[u]["pid"] for u in range(KILL_AT)}, {got[u]["pid"] for u in range(KILL_AT, UPDATES)}
    assert len(before) == len(after) == 1 and before != after, (
        f"rank 0's pids before the kill {before}, after {after}: the updates after it should run in a restart"
    )
    weights, expected_weights = torch.load(out / "final.pt"), torch.load(reference / "final.pt")
    for key, weight in expected_weights.items():
        difference = (weights[key] - weight).abs().max().item()
        assert difference < 1e-6, f"{key} differs by {difference} from the uninterrupted run's"
