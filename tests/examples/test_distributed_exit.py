"""The distributed example launched many times, two launches at a time on the loaded machine: every
launch exits 0. A gloo thread that let go of the last collective's tensors late used to abort a
process that had trained well ("terminate called without an active exception", exit code -6) in a
few launches out of a hundred; ``tests/core/test_process_exit.py`` checks the cause directly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.launching import run_launch, tail, torchrun_command

from .test_heavy_examples import DISTRIBUTED_ARGS, TWO_PROCESSES_LINE

AT_A_TIME = 2


def launch_example(tmp_path: Path) -> tuple[int | None, str]:
    command = torchrun_command("-m", "pytorch_accelerated.examples.distributed_cpu", *DISTRIBUTED_ARGS)
    return run_launch(command, tmp_path)


def check_launches_exit_0(num_launches: int, tmp_path: Path) -> None:
    with ThreadPoolExecutor(AT_A_TIME) as pool:
        outcomes = list(pool.map(lambda _: launch_example(tmp_path), range(num_launches)))
    failed = [(status, out) for status, out in outcomes if status != 0 or out.count(TWO_PROCESSES_LINE) != 1]
    report = "\n\n".join(f"exit status {status}:\n{tail(output, 2000)}" for status, output in failed[:3])
    assert not failed, f"{len(failed)} of {num_launches} launches failed; the first ones:\n{report}"


def test_launches_of_the_distributed_example_two_at_a_time_exit_0(tmp_path):
    check_launches_exit_0(4, tmp_path)


@pytest.mark.slow
def test_thirty_launches_of_the_distributed_example_two_at_a_time_exit_0(tmp_path):
    check_launches_exit_0(30, tmp_path)
