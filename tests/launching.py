"""Launching a test script on several processes: a free port, a clean environment, a time limit
that stops a hanging launch and every worker it started."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil

LAUNCH_TIMEOUT_S = 180
REPO_ROOT = Path(__file__).resolve().parents[1]

_launch_ids = itertools.count()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(
    script: str | Path, *args: str | Path, num_processes: int = 2, options: tuple[str, ...] = ()
) -> list[str]:
    """torch's launcher (``python -m torch.distributed.run``) of ``script args`` on local CPU processes.

    Args:
        script: the script every process runs, or ``"-m"`` with the module's name first in ``args``.
        args: the script's arguments.
        num_processes: how many processes it starts.
        options: further options of the launcher (``("--monitor-interval", "0.1")``).
    """
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(num_processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        *options,
        str(script),
        *map(str, args),
    ]


def launch_env(tmp_dir: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # A launch must not inherit the distributed settings of whatever started pytest.
        if not key.startswith("ACCELERATE_")
        and key not in {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    # accelerate launch reads a default config from here: keep the user's config out of the tests.
    env["HF_HOME"] = str(tmp_dir / "hf_home")
    return env


def run_launch(
    command: list[str], tmp_dir: Path, timeout_s: float = LAUNCH_TIMEOUT_S
) -> tuple[int | None, str]:
    """Run one launch; returns (exit status, or None when it ran past ``timeout_s``, output).

    The output goes to a file, not a pipe: torch's launcher starts each worker in a session of
    its own, so a worker left behind could hold a pipe open and block the reading forever.
    """
    log_path = tmp_dir / f"launch-{next(_launch_ids)}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=launch_env(tmp_dir), stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            status = process.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_process_tree(process)
    output = log_path.read_text(errors="replace")
    if timed_out:
        return None, f"{output}\n*** launch stopped after {timeout_s} s (a hang?) ***"
    return status, output


def stop_process_tree(process: subprocess.Popen) -> None:
    """Stop a launcher and the workers it started, by their process ids."""
    launcher = psutil.Process(process.pid)
    workers = launcher.children(recursive=True)
    launcher.terminate()  # torch's launcher and accelerate's stop their workers on SIGTERM
    _, alive = psutil.wait_procs([launcher, *workers], timeout=10)
    for leftover in alive:
        leftover.kill()
    psutil.wait_procs(alive, timeout=10)
    process.wait()


def tail(text: str, num_chars: int = 6000) -> str:
    return text if len(text) <= num_chars else "...\n" + text[-num_chars:]


def run_scenario_on_two_processes(scenario_file: str, tmp_dir: Path) -> tuple[list[dict], str]:
    """Launch ``scenario_file OUT`` on two gloo processes with torch.distributed.run, where each rank
    writes ``OUT/result_rank<r>.json`` (``{"error": ...}`` if it failed); assert that both ran cleanly
    and return their results, in rank order, and the launch's output."""
    out = tmp_dir / "out"
    status, output = run_launch(torchrun_command(scenario_file, out), tmp_dir)
    paths = [out / f"result_rank{rank}.json" for rank in range(2)]
    results = [json.loads(path.read_text()) for path in paths if path.exists()]
    assert status == 0 and len(results) == 2 and all("error" not in r for r in results), tail(output) + str(
        results
    )
    return results, output
