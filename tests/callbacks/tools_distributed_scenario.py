"""The training tools on two processes, checked by
``test_training_tools_two_processes.py::test_the_training_tools_agree_on_two_processes``.

    python -m torch.distributed.run --nproc_per_node 2 tests/callbacks/tools_distributed_scenario.py OUT

One run with the model summary, gradient norms before and after clipping, SWA (with BatchNorm) and
a profiled window.
Each process trains on its own shard; each writes ``result_rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

import torch

from pytorch_accelerated.callbacks import (
    GradientClippingEventMixin,
    GradientNormCallback,
    ModelSummaryCallback,
    ProfilerCallback,
    StochasticWeightAveragingCallback,
)
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model


class ClippingEventTrainer(GradientClippingEventMixin, Trainer):
    pass


def digest(state: dict) -> str:
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in state.values())).hexdigest()


def model_with_batch_norm() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.BatchNorm1d(4), make_tiny_model())


def train_with_the_tools(out: Path) -> dict:
    model = model_with_batch_norm()
    summary = ModelSummaryCallback()
    swa = StochasticWeightAveragingCallback(swa_start_epoch=2, swa_lr=0.01)
    trainer = ClippingEventTrainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[
            summary,
            GradientNormCallback(log_every_n_steps=3),
            swa,
            ProfilerCallback(out / "profiler", 2, 3),
        ],
    )
    trainer.train(make_tiny_dataset(64), num_epochs=3, per_device_batch_size=4, gradient_clip_norm=0.5)
    history = trainer.run_history
    return {
        "summary": [[row.name, row.parameters, row.trainable_parameters] for row in summary.summary],
        "grad_norm": history.get_metric_values("grad_norm"),
        "grad_norm_clipped": history.get_metric_values("grad_norm_clipped"),
        "grad_norm_group": history.get_metric_values("grad_norm/group_1"),
        "weights": digest(trainer.get_model().state_dict()),
        "running_mean": model[0].running_mean.tolist(),
        "n_averaged": int(swa.averaged_model.n_averaged),
    }


def main(out: Path) -> int:
    rank = int(os.environ["RANK"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        result, status = train_with_the_tools(out), 0
    except Exception:
        result, status = {"error": traceback.format_exc()}, 1
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
