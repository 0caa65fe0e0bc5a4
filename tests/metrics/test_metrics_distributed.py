"""MetricsCallback on two CPU processes (gloo), launched with torchrun: training and evaluation sets
that do not split evenly, and an evaluation set smaller than one batch (one process sees nothing).
Values must equal scikit-learn's over the whole datasets, every sample counted exactly once, with no
collective inside a step.

One launch runs every task of ``metrics_distributed_scenario.py``; each process writes its results
as JSON, and the references come from the weights and step outputs the run saved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..launching import REPO_ROOT, run_launch, torchrun_command
from . import metrics_distributed_scenario as scenario
from . import references

NUM_PROCESSES = 2
LAUNCH_TIMEOUT_S = 240
SCRIPT = Path(scenario.__file__).resolve().relative_to(REPO_ROOT)


def launch(out_dir: Path) -> tuple[int | None, str]:
    """Run every task under torchrun; returns (exit status, or None on timeout, and the output)."""
    command = torchrun_command(SCRIPT, ",".join(scenario.TASKS), out_dir, num_processes=NUM_PROCESSES)
    return run_launch(command, out_dir, timeout_s=LAUNCH_TIMEOUT_S)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("metrics_torchrun")
    status, output = launch(out_dir)
    return out_dir, f"exit status {status}; launch output (tail):\n{output[-6000:]}"


def results_of(launched, task_name: str) -> list[dict]:
    """Each process's results (index = rank); fails with the task's error or the launch's output."""
    out_dir, launch_report = launched
    paths = [out_dir / f"{task_name}_rank{rank}.json" for rank in range(NUM_PROCESSES)]
    results = [json.loads(path.read_text()) for path in paths if path.exists()]
    errors = [result["error"] for result in results if "error" in result]
    if errors:
        pytest.fail(f"task {task_name!r} raised:\n" + "\n".join(errors), pytrace=False)
    if len(results) != NUM_PROCESSES:
        pytest.fail(f"task {task_name!r} did not finish on every process; {launch_report}", pytrace=False)
    assert [(r["process_index"], r["num_processes"]) for r in results] == [(0, 2), (1, 2)]
    return results


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_eval_metrics_equal_sklearn_over_the_whole_uneven_eval_set(launched, task_name):
    references.check_eval_values(task_name, results_of(launched, task_name), launched[0])


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_train_metrics_skip_the_padded_duplicates(launched, task_name):
    results = results_of(launched, task_name)
    # the last step really was padded: the processes saw more samples than the epoch holds
    seen_in_first_epoch = sum(len(step["ids"]) for r in results for step in r["steps"] if step["epoch"] == 1)
    assert seen_in_first_epoch > scenario.SIZES["train_samples"]
    references.check_train_values(task_name, results)


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_every_sample_counts_exactly_once_across_processes(launched, task_name):
    references.check_every_sample_counted_once(results_of(launched, task_name))


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_a_consumer_placed_before_reads_this_epochs_value(launched, task_name):
    references.check_consumer_before_reads_this_epoch(task_name, results_of(launched, task_name))


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_no_collective_runs_inside_a_step(launched, task_name):
    for result in results_of(launched, task_name):
        assert result["collectives_in_steps"] == 0
        assert result["collectives_in_run"] > 0  # the counter does see the epoch-end syncs


def test_metrics_live_on_the_trainers_device(launched):
    for task_name in scenario.TASKS:
        assert all(result["metrics_on_trainer_device"] for result in results_of(launched, task_name))
