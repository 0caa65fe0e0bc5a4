"""find_lr on two processes, checked by ``test_lr_finder.py::test_every_process_gets_the_same_suggestion``.

    python -m torch.distributed.run --nproc_per_node 2 tests/tuning/lr_finder_distributed_scenario.py OUT

Each process's copy trains on its own shard; each writes ``result_rank<r>.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

import torch

from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model
from pytorch_accelerated.tuning import find_lr


def digest(state: dict) -> str:
    return hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in state.values())).hexdigest()


def run(out: Path) -> dict:
    model = make_tiny_model()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[]
    )
    before = digest(model.state_dict())
    result = find_lr(
        trainer,
        make_tiny_dataset(512, seed=2),
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=40,
        plot_path=out / "lr_finder.png",
    )
    untouched = digest(model.state_dict()) == before
    trainer.train(make_tiny_dataset(32), num_epochs=1)  # afterwards the trainer trains with DDP as usual
    return {
        "suggestion": result.suggestion,
        "losses": result.losses,
        "untouched": untouched,
        "plot": str(result.plot_path) if result.plot_path else None,
    }


def main(out: Path) -> int:
    rank = int(os.environ["RANK"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        result, status = run(out), 0
    except Exception:
        result, status = {"error": traceback.format_exc()}, 1
    (out / f"result_rank{rank}.json").write_text(json.dumps(result))
    return status


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
