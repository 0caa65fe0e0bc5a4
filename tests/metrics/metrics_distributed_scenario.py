"""Training runs with MetricsCallback, checked by ``test_metric_values.py`` (in one process) and
``test_metrics_distributed.py`` (on two CPU processes), against references computed there.

Run on every process of a launch, e.g.::

    python -m torch.distributed.run --nproc_per_node 2 tests/metrics/metrics_distributed_scenario.py \\
        classification,regression /tmp/out

Each task trains a tiny model for two epochs on a training set and an evaluation set that do not
split evenly over two processes, with accuracy-like metrics on training and evaluation, then
evaluates a set smaller than one batch (one process has no sample at all). Each process writes
``<task>_rank<r>.json``: the run history, the model outputs it saw on each training step, and
how many collectives the metrics callback ran inside steps; process 0 saves the weights each
evaluation used to ``<task>_eval_weights.pt``. A task that raises writes ``{"error": ...}`` and
ends the process with exit status 1, so that the launcher stops the other process.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchmetrics
from accelerate.utils import InitProcessGroupKwargs
from torch.utils.data import TensorDataset
from torchmetrics.aggregation import CatMetric

from pytorch_accelerated.metrics import MetricsCallback, default_metric_inputs
from pytorch_accelerated.trainer import TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, when launched
from tests.core.helpers import make_trainer  # noqa: E402

# 45 training samples in batches of 4 on two processes: the last step pads 3 duplicates.
SIZES = {"train_samples": 45, "eval_samples": 37, "tiny_eval_samples": 3, "batch_size": 4, "num_epochs": 2}
NUM_FEATURES = 4
COLLECTIVE_TIMEOUT_S = 60


def multilabel_probabilities(batch, batch_output, metric):
    # torchmetrics applies the sigmoid only to batches with values outside [0, 1]: always do it here
    return batch_output["model_outputs"].sigmoid(), batch[1]


def sample_ids(batch, batch_output, metric):
    return (batch[2],)


@dataclass(frozen=True)
class Task:
    """A tiny supervised problem: targets from a fixed projection of the inputs, a loss, metrics."""

    num_outputs: int
    targets_from_scores: Callable[[torch.Tensor], torch.Tensor]
    loss_func: Callable
    make_metrics: Callable[[], dict]
    inputs_fn: Callable = field(default=default_metric_inputs)

    def make_dataset(self, num_samples: int, seed: int) -> TensorDataset:
        """Inputs, targets and each sample's index."""
        inputs = torch.randn(num_samples, NUM_FEATURES, generator=torch.Generator().manual_seed(seed))
        projection = torch.randn(
            NUM_FEATURES, self.num_outputs, generator=torch.Generator().manual_seed(1234)
        )
        return TensorDataset(inputs, self.targets_from_scores(inputs @ projection), torch.arange(num_samples))

    def make_model(self) -> torch.nn.Module:
        return make_tiny_model(num_features=NUM_FEATURES, num_classes=self.num_outputs)


TASKS = {
    "classification": Task(
        num_outputs=3,
        targets_from_scores=lambda scores: scores.argmax(dim=1),
        loss_func=torch.nn.CrossEntropyLoss(),
        make_metrics=lambda: {
            "accuracy": torchmetrics.Accuracy(task="multiclass", num_classes=3),
            "f1": torchmetrics.F1Score(task="multiclass", num_classes=3, average="macro"),
        },
    ),
    "regression": Task(
        num_outputs=1,
        targets_from_scores=lambda scores: scores.squeeze(1),
        loss_func=lambda outputs, targets: F.mse_loss(outputs.squeeze(-1), targets),
        make_metrics=lambda: {"mse": torchmetrics.MeanSquaredError()},
    ),
    "multilabel": Task(
        num_outputs=3,
        targets_from_scores=lambda scores: (scores > 0).long(),
        loss_func=lambda outputs, targets: F.binary_cross_entropy_with_logits(outputs, targets.float()),
        make_metrics=lambda: {
            "f1": torchmetrics.F1Score(task="multilabel", num_labels=3, average="macro"),
            "exact_match": torchmetrics.ExactMatch(task="multilabel", num_labels=3),
        },
        inputs_fn=multilabel_probabilities,
    ),
}


class TrainStepRecorder(TrainerCallback):
    """What each training step of this process saw, and the weights each evaluation epoch used."""

    def __init__(self):
        self.steps: list[dict] = []
        self.eval_weights: list[dict] = []

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.steps.append(
            {
                "epoch": trainer.run_history.current_epoch,
                "ids": batch[2].tolist(),
                "outputs": batch_output["model_outputs"].detach().tolist(),
                "targets": batch[1].tolist(),
            }
        )

    def on_eval_epoch_start(self, trainer, **kwargs):
        state = trainer.get_model(keep_torch_compile=False).state_dict()
        self.eval_weights.append({name: tensor.detach().cpu().clone() for name, tensor in state.items()})


class LatestValueReader(TrainerCallback):
    """Placed before the metrics callback: what it reads at the end of each epoch."""

    def __init__(self, metric_name: str):
        self.metric_name = metric_name
        self.seen: list[dict] = []

    def on_training_run_epoch_end(self, trainer, **kwargs):
        history = trainer.run_history
        self.seen.append(
            {
                "epoch": history.current_epoch,
                "value": history.get_latest_metric(self.metric_name),
                "num_values": len(history.get_metric_values(self.metric_name)),
            }
        )


class CollectiveCounter:
    """Within its ``with`` block, counts the torch.distributed collectives called."""

    NAMES = (
        "all_gather",
        "all_reduce",
        "broadcast",
        "barrier",
        "all_gather_into_tensor",
        "all_gather_object",
    )

    def __init__(self):
        self.count = 0
        self._originals = {}

    def __enter__(self) -> CollectiveCounter:
        for name in self.NAMES:
            self._originals[name] = getattr(torch.distributed, name)
            setattr(torch.distributed, name, self._counting(self._originals[name]))
        return self

    def __exit__(self, *exc_info) -> None:
        for name, collective in self._originals.items():
            setattr(torch.distributed, name, collective)

    def _counting(self, collective):
        @functools.wraps(collective)
        def counted(*args, **kwargs):
            self.count += 1
            return collective(*args, **kwargs)

        return counted


class StepCollectivesMetricsCallback(MetricsCallback):
    """A MetricsCallback that counts the collectives its step events run (there should be none)."""

    def __init__(self, *args, counter: CollectiveCounter, **kwargs):
        super().__init__(*args, **kwargs)
        self.counter = counter
        self.collectives_in_steps = 0

    def on_train_step_end(self, trainer, **kwargs):
        before = self.counter.count
        super().on_train_step_end(trainer, **kwargs)
        self.collectives_in_steps += self.counter.count - before

    def on_eval_step_end(self, trainer, **kwargs):
        before = self.counter.count
        super().on_eval_step_end(trainer, **kwargs)
        self.collectives_in_steps += self.counter.count - before


def accelerator_kwargs() -> dict:
    """CPU processes; when launched on several, gloo with a timeout, so that a collective that one
    process never joins fails instead of hanging."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return {"cpu": True}
    timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    return {"cpu": True, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo", timeout=timeout)]}


def run_task(task_name: str, out: Path) -> dict:
    """Train and evaluate ``task_name``; returns this process's results (see the module docstring)."""
    with CollectiveCounter() as counter:
        return _run_task(TASKS[task_name], task_name, out, counter)


def _run_task(task: Task, task_name: str, out: Path, counter: CollectiveCounter) -> dict:
    recorder = TrainStepRecorder()
    metrics = StepCollectivesMetricsCallback(
        task.make_metrics(), inputs_fn=task.inputs_fn, on_train=True, counter=counter
    )
    reader = LatestValueReader(f"eval_{next(iter(metrics.eval_metrics))}")
    ids = MetricsCallback({"ids": CatMetric()}, inputs_fn=sample_ids, on_train=True)
    trainer = make_trainer(
        [reader, recorder, metrics, ids],
        lr=0.1,
        model=task.make_model(),
        loss_func=task.loss_func,
        accelerator_kwargs=accelerator_kwargs(),
    )
    trainer.train(
        train_dataset=task.make_dataset(SIZES["train_samples"], seed=0),
        eval_dataset=task.make_dataset(SIZES["eval_samples"], seed=1),
        num_epochs=SIZES["num_epochs"],
        per_device_batch_size=SIZES["batch_size"],
    )
    tiny = trainer.evaluate(task.make_dataset(SIZES["tiny_eval_samples"], seed=2))
    if trainer.is_world_process_zero:
        torch.save(recorder.eval_weights, out / f"{task_name}_eval_weights.pt")
    trainer.wait_for_everyone()
    history = trainer.run_history
    return {
        "process_index": trainer.accelerator.process_index,
        "num_processes": trainer.num_processes,
        "history": {name: _plain(history.get_metric_values(name)) for name in history.get_metric_names()},
        "tiny_evaluation": _plain(tiny),
        "steps": recorder.steps,
        "seen_at_epoch_end": _plain(reader.seen),
        "collectives_in_steps": metrics.collectives_in_steps,
        "collectives_in_run": counter.count,
        "metrics_on_trainer_device": all(
            _same_device(metric.device, trainer.device)
            for metric in (*metrics.eval_metrics.values(), *metrics.train_metrics.values())
        ),
    }


def _same_device(first: torch.device, second: torch.device) -> bool:
    return first.type == second.type and (first.type == "cpu" or first.index == second.index)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def write_result(out: Path, task_name: str, rank: int, result: dict) -> None:
    path = out / f"{task_name}_rank{rank}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or any(name not in TASKS for name in argv[1].split(",")):
        print(f"usage: {argv[0]} TASK[,TASK...] OUTPUT_DIR (tasks: {', '.join(TASKS)})", file=sys.stderr)
        return 2
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    for task_name in argv[1].split(","):
        torch.manual_seed(0)
        try:
            result = run_task(task_name, out)
        except BaseException:  # noqa: BLE001 - reported to the test, then the launch is ended
            error = traceback.format_exc()
            write_result(out, task_name, rank, {"error": error})
            print(f"[rank {rank}] task {task_name} failed:\n{error}", file=sys.stderr, flush=True)
            os._exit(1)  # do not wait in a collective for a process that went on
        write_result(out, task_name, rank, result)
        print(f"[rank {rank}] task {task_name} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
