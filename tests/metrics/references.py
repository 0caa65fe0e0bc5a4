"""Reference values for the scenario runs, computed directly with scikit-learn over whole datasets,
and the checks that the single-process and two-process tests share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error

from . import metrics_distributed_scenario as scenario

SIZES = scenario.SIZES
# The evaluations a run makes: two during training, then evaluate() on a set smaller than a batch.
EVAL_SETS = (("eval_samples", 1), ("eval_samples", 1), ("tiny_eval_samples", 2))


def expected_values(task_name: str, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Each of the task's metrics over all of ``outputs``, computed with scikit-learn."""
    outputs, targets = outputs.double().numpy(), targets.numpy()
    if task_name == "classification":
        predictions = outputs.argmax(axis=1)
        return {
            "accuracy": accuracy_score(targets, predictions),
            "f1": f1_score(targets, predictions, average="macro"),
        }
    if task_name == "regression":
        return {"mse": mean_squared_error(targets, outputs[:, 0])}
    predictions = (outputs > 0).astype(int)  # sigmoid(x) > 0.5
    return {
        "f1": f1_score(targets, predictions, average="macro", zero_division=0),
        "exact_match": accuracy_score(targets, predictions),
    }


def model_outputs(task_name: str, state_dict: dict, dataset) -> torch.Tensor:
    model = scenario.TASKS[task_name].make_model()
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return model(dataset.tensors[0])


def first_occurrences(results: list[dict], epoch: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The outputs and targets the training steps of ``epoch`` saw, each sample once: the padding
    that evens out the last batches repeats samples seen earlier in the epoch (or earlier in the
    same step, on a process of lower rank)."""
    seen = []
    for rank, result in enumerate(results):
        steps = [step for step in result["steps"] if step["epoch"] == epoch]
        for step_index, step in enumerate(steps):
            for position, sample in enumerate(zip(step["ids"], step["outputs"], step["targets"])):
                seen.append(((step_index, rank, position), sample))
    first: dict[int, tuple] = {}
    for _, (sample_id, output, target) in sorted(seen, key=lambda item: item[0]):
        first.setdefault(sample_id, (output, target))
    ids = sorted(first)
    return torch.tensor([first[i][0] for i in ids]), torch.tensor([first[i][1] for i in ids]), ids


def check_eval_values(task_name: str, results: list[dict], out_dir: Path) -> None:
    """Every evaluation's metrics equal scikit-learn's over the whole evaluation set."""
    task = scenario.TASKS[task_name]
    eval_weights = torch.load(out_dir / f"{task_name}_eval_weights.pt", weights_only=True)
    assert len(eval_weights) == len(EVAL_SETS)
    for index, ((size_key, seed), weights) in enumerate(zip(EVAL_SETS, eval_weights)):
        dataset = task.make_dataset(SIZES[size_key], seed=seed)
        expected = expected_values(task_name, model_outputs(task_name, weights, dataset), dataset.tensors[1])
        for result in results:
            for name, value in expected.items():
                recorded = result["history"][f"eval_{name}"][index]
                assert isinstance(recorded, float), (name, recorded)
                assert recorded == pytest.approx(value, rel=1e-5, abs=1e-6), (task_name, name, index)
            for name in expected:
                assert result["tiny_evaluation"][f"eval_{name}"] == result["history"][f"eval_{name}"][-1]


def check_train_values(task_name: str, results: list[dict]) -> None:
    """Each epoch's training metrics equal scikit-learn's over the outputs the training steps saw,
    every training sample counted once."""
    for epoch in range(1, SIZES["num_epochs"] + 1):
        outputs, targets, ids = first_occurrences(results, epoch)
        assert ids == list(range(SIZES["train_samples"]))
        expected = expected_values(task_name, outputs, targets)
        for result in results:
            for name, value in expected.items():
                recorded = result["history"][f"train_{name}"][epoch - 1]
                assert recorded == pytest.approx(value, rel=1e-5, abs=1e-6), (task_name, name, epoch)


def check_every_sample_counted_once(results: list[dict]) -> None:
    """The ``ids`` metric concatenates the index of every sample the metrics were updated with."""
    for result in results:
        history = result["history"]
        expected_train = [list(range(SIZES["train_samples"]))] * SIZES["num_epochs"]
        assert [sorted(ids) for ids in history["train_ids"]] == expected_train
        expected_eval = [list(range(SIZES[size_key])) for size_key, _ in EVAL_SETS]
        assert [sorted(ids) for ids in history["eval_ids"]] == expected_eval


def check_consumer_before_reads_this_epoch(task_name: str, results: list[dict]) -> None:
    """A callback placed before the metrics callback read this epoch's value at the epoch's end."""
    first_metric = next(iter(scenario.TASKS[task_name].make_metrics()))
    for result in results:
        values = result["history"][f"eval_{first_metric}"]
        expected = [
            {"epoch": epoch, "value": values[epoch - 1], "num_values": epoch}
            for epoch in range(1, SIZES["num_epochs"] + 1)
        ]
        assert result["seen_at_epoch_end"] == expected
