"""How the processes of a two-process run end, checked by ``tests/core/test_process_exit.py``.

Run on every process of a launch (two CPU processes, gloo), one scenario per launch::

    python -m torch.distributed.run --nproc_per_node 2 tests/core/exit_scenarios.py SCENARIO OUT

Unlike the other scenario scripts, a process here ends as a user's script does, through the
interpreter's exit (its exit hooks, multiprocessing's, finalization), which is what is checked:
it returns (exit status 0) or lets the error out (exit status 1). Before that, each process writes
``<scenario>_rank<r>.json`` into OUT: what it returned, or the error it raised (type, message) and
the process ids of its dataloader workers. An exit hook registered before the Trainer's writes
``<scenario>_exit_rank<r>.json``: the native threads still alive at the end of the exit hooks.
The collectives keep torch's default timeout (30 minutes), as a user's do.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import sys
from pathlib import Path

import torch

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model


def rank() -> int:
    return int(os.environ["RANK"])


def make_trainer(callbacks=()) -> Trainer:
    model = make_tiny_model()
    return Trainer(
        model=model,
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[*DEFAULT_CALLBACKS, *callbacks],
        accelerator_kwargs={"cpu": True},
    )


# ---------------------------------------------------------------------------------------- scenarios


def scenario_success(out: Path) -> dict:
    """A run that ends well, then a collective, as the distributed example ends."""
    trainer = make_trainer()
    trainer.train(make_tiny_dataset(64), num_epochs=1, per_device_batch_size=4)
    gathered = trainer.gather(torch.tensor([float(rank())]))
    return {"gathered": gathered.tolist()}


SCENARIOS = {
    "success": scenario_success,
}


# ---------------------------------------------------------------------------------------- reporting


def native_threads() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(names)


def write_json(path: Path, content: dict) -> None:
    path.with_suffix(".tmp").write_text(json.dumps(content, indent=1))
    os.replace(path.with_suffix(".tmp"), path)


def main(argv: list[str]) -> None:
    name, out = argv[1], Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    # registered before any Trainer exists: exit hooks run last-registered first, so this one runs after the Trainer's
    atexit.register(lambda: write_json(out / f"{name}_exit_rank{rank()}.json", {"threads": native_threads()}))
    try:
        result = SCENARIOS[name](out)
    except Exception as error:
        workers = [child.pid for child in multiprocessing.active_children()]
        write_json(out / f"{name}_rank{rank()}.json", {"error_type": type(error).__name__, "message": str(error), "workers": workers})
        print(f"[rank {rank()}] scenario {name} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        raise  # out of the script, as a user's error leaves it
    write_json(out / f"{name}_rank{rank()}.json", result)


if __name__ == "__main__":
    main(sys.argv)
