"""Metric values in one process equal scikit-learn's over the whole dataset, for each task of the
scenario module: accuracy and F1 (multiclass), mean squared error, F1 and exact match (multi-label)."""

import pytest

from . import metrics_distributed_scenario as scenario
from . import references


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each task's single-process run: (results, the folder its weights were saved to)."""
    out_dir = tmp_path_factory.mktemp("single_process")
    return {task_name: ([scenario.run_task(task_name, out_dir)], out_dir) for task_name in scenario.TASKS}


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_eval_metrics_equal_sklearn_over_the_whole_eval_set(runs, task_name):
    results, out_dir = runs[task_name]
    references.check_eval_values(task_name, results, out_dir)


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_train_metrics_equal_sklearn_over_what_the_steps_saw(runs, task_name):
    references.check_train_values(task_name, runs[task_name][0])


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_every_sample_counts_once(runs, task_name):
    references.check_every_sample_counted_once(runs[task_name][0])


@pytest.mark.parametrize("task_name", list(scenario.TASKS))
def test_a_consumer_placed_before_reads_this_epochs_value(runs, task_name):
    references.check_consumer_before_reads_this_epoch(task_name, runs[task_name][0])
