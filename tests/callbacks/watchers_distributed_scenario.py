"""Early stopping, best-model saving and EMA on several processes, checked by
``test_watching.py::test_watchers_on_two_processes_stop_together_and_save_once``.

    python -m torch.distributed.run --nproc_per_node 2 tests/callbacks/watchers_distributed_scenario.py OUT

Only process 0 sees its watched metric stall, so only it wants to stop: both must stop at the
same epoch. The best checkpoint and the EMA weights are written once, by process 0, and every
process ends with the same weights. Each process writes ``result_rank<r>.json``.
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
    EarlyStoppingCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    TrainerCallback,
)
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

STALLING_SCORES = [0.5, 0.6, 0.6, 0.6, 0.9, 0.9]  # process 0: no improvement after epoch 2
IMPROVING_SCORES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # the other process keeps improving


class ScriptedScore(TrainerCallback):
    def on_eval_epoch_end(self, trainer, **kwargs):
        scores = STALLING_SCORES if trainer.process_index == 0 else IMPROVING_SCORES
        trainer.run_history.update_metric("eval_score", scores[trainer.run_history.current_epoch - 1])


def digest(state: dict) -> str:
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in state.values())).hexdigest()


# An earlier run's files, which this run must not replace: it writes into version_1 instead, on
# every process, although only the main process looks (SaveBest loads its file on every process).
EARLIER_RUN = {"version_0/best.pt": "an earlier run's best model", "version_0/ema.pt": "an earlier run's EMA"}


def run(out: Path) -> dict:
    model = make_tiny_model()
    ema = ModelEmaCallback(decay=0.5, save_path=out / "ema.pt")
    save_best = SaveBestModelCallback(out / "best.pt", watch_metric="eval_loss_epoch")
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[
            EarlyStoppingCallback(
                early_stopping_patience=2,
                early_stopping_threshold=0.0,
                watch_metric="eval_score",
                greater_is_better=True,
            ),
            save_best,
            ema,
            ScriptedScore(),
        ],
    )
    trainer.train(
        make_tiny_dataset(48),
        num_epochs=len(STALLING_SCORES),
        eval_dataset=make_tiny_dataset(13, seed=1),
        per_device_batch_size=4,
    )
    return {
        "epochs_run": len(trainer.run_history.get_metric_values("train_loss_epoch")),
        "weights": digest(trainer.get_model().state_dict()),
        "ema": digest(ema.ema_state),
        "ema_eval_loss": trainer.run_history.get_metric_values("ema_eval_loss"),
        "save_paths": [str(save_best.save_path), str(ema.save_path)],
    }


def main(out: Path) -> int:
    rank = int(os.environ["RANK"])
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        for name, text in EARLIER_RUN.items():
            (out / name).parent.mkdir(exist_ok=True)
            (out / name).write_text(text)
    try:
        result, status = run(out), 0
    except Exception:
        result, status = {"error": traceback.format_exc()}, 1
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
