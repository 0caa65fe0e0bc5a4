"""The fixed cost of one ``Trainer(...)`` + ``train()`` call, against a hand loop over the same data.

Both sides train the seed's MNIST MLP (Adam, batch 32) for one tiny epoch (2 training batches,
then 2 evaluation batches), from a fresh model and optimizer each time, so that what differs is
what the Trainer does once per call: creating the ``Accelerator``, preparing the model and
optimizer, building the dataloaders, the callbacks' run and epoch events (progress bars, printed
metrics; their text goes to a buffer), the epoch-start bookkeeping.

Two measurements:

- ``warm`` (default): in one process, the two calls alternate ``--repeats`` times (after a few
  warm-up pairs); the figure is the median of (Trainer - hand loop) over the pairs, in
  microseconds, by CPU time and by wall time. This is the cost of every call after the first.
- ``--fresh N``: N fresh interpreters per side, alternating, each timing its first call only
  (after ``import torch``, ``torch._dynamo`` and the library, and a first throwaway optimizer,
  whose one-off set-up torch does for either side): the cost of a script's only call, which also pays
  for the first use of tqdm, of accelerate's state and of a few torch operations.

``--pieces`` times named parts of the warm Trainer call (its set-up steps, the callbacks' run and
epoch events), in microseconds per call. ``--profile`` prints, for the warm Trainer call, where the time goes:
cProfile's cumulative time
per call of the functions that matter, in microseconds.

    python benchmarks/fixed_cost.py --repeats 300
    python benchmarks/fixed_cost.py --fresh 10
    python benchmarks/fixed_cost.py --pieces
    python benchmarks/fixed_cost.py --profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

BATCH, TRAIN_BATCHES, EVAL_BATCHES = 32, 2, 2


class MNISTModel(nn.Module):
    """The seed README's MLP (784-128-64-10), as in examples/quickstart_synthetic.py."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, input):
        return self.main(input.view(input.shape[0], -1))


def make_data(batches: int, seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    n = batches * BATCH
    return TensorDataset(
        torch.randn(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator)
    )


def hand_loop(model, train_dataset, eval_dataset) -> float:
    """One epoch written by hand, the way a careful user writes it: the epoch loss kept on the device."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()
    model.train()
    total, count = torch.zeros(()), 0
    for inputs, targets in DataLoader(train_dataset, batch_size=BATCH, shuffle=True):
        loss = loss_func(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.detach() * targets.size(0)
        count += targets.size(0)
    model.eval()
    eval_total, eval_count = torch.zeros(()), 0
    with torch.no_grad():
        for inputs, targets in DataLoader(eval_dataset, batch_size=BATCH):
            eval_total += loss_func(model(inputs), targets) * targets.size(0)
            eval_count += targets.size(0)
    print(f"train {total.item() / count:.4f} eval {eval_total.item() / eval_count:.4f}")
    return eval_total.item() / eval_count


def trainer_loop(model, train_dataset, eval_dataset) -> float:
    from pytorch_accelerated.trainer import Trainer

    trainer = Trainer(
        model, loss_func=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    history = trainer.train(
        train_dataset, num_epochs=1, eval_dataset=eval_dataset, per_device_batch_size=BATCH
    )
    return history.get_latest_metric("eval_loss_epoch")


LOOPS = {"hand": hand_loop, "trainer": trainer_loop}


def time_one(name: str, seed: int, data) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call, model and optimizer made inside the timing as a script makes
    them."""
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        LOOPS[name](MNISTModel(), *data)
        return time.process_time() - start_cpu, time.perf_counter() - start_wall


def warm(repeats: int) -> dict:
    data = make_data(TRAIN_BATCHES, 1), make_data(EVAL_BATCHES, 2)
    for seed in range(5):  # warm-up: the first uses of tqdm, accelerate's state, torch's operations
        time_one("trainer", seed, data), time_one("hand", seed, data)
    times = {"hand": [], "trainer": []}
    for repeat in range(repeats):
        order = ("hand", "trainer") if repeat % 2 == 0 else ("trainer", "hand")
        for name in order:
            times[name].append(time_one(name, repeat, data))
    return _summary(times)


def fresh(processes: int) -> dict:
    times = {"hand": [], "trainer": []}
    for repeat in range(processes):
        order = ("hand", "trainer") if repeat % 2 == 0 else ("trainer", "hand")
        for name in order:
            result = subprocess.run(
                [sys.executable, __file__, "--child", name],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            times[name].append(tuple(json.loads(result.stdout.splitlines()[-1])))
    return _summary(times)


def _summary(times: dict) -> dict:
    pairs = list(zip(times["hand"], times["trainer"]))
    summary = {}
    for index, clock in enumerate(("cpu", "wall")):
        summary[clock] = {
            "hand_us": statistics.median(hand[index] for hand, _ in pairs) * 1e6,
            "trainer_us": statistics.median(trainer[index] for _, trainer in pairs) * 1e6,
            "extra_us": statistics.median((trainer[index] - hand[index]) for hand, trainer in pairs) * 1e6,
            "extra_us_quartiles": [
                q * 1e6 for q in statistics.quantiles([t[index] - h[index] for h, t in pairs], n=4)
            ],
        }
    summary["pairs"] = len(pairs)
    return summary


def profile(repeats: int, limit: int) -> None:
    data = make_data(TRAIN_BATCHES, 1), make_data(EVAL_BATCHES, 2)
    for seed in range(5):
        time_one("trainer", seed, data)
    profiler = cProfile.Profile()
    profiler.enable()
    for seed in range(repeats):
        time_one("trainer", seed, data)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, function), (_, calls, _, cumulative, _) in stats.stats.items():
        if "site-packages/torch/" in filename and "optim" not in filename:
            continue  # torch's own layers: the same in a hand loop
        rows.append((cumulative / repeats * 1e6, calls / repeats, f"{_short(filename)}:{line}({function})"))
    rows.sort(reverse=True)
    print(
        f"cumulative time per Trainer(...) + train() call (cProfile, {repeats} calls; profiling inflates it)"
    )
    print(f"{'us/call':>9} {'calls':>7}  function")
    for us, calls, where in rows[:limit]:
        print(f"{us:9.1f} {calls:7.1f}  {where}")


# (module, owner, attribute) of the pieces --pieces times, in the order printed; a piece this
# version does not have is skipped (names from before and after the training-state refactor)
PIECES = (
    ("pytorch_accelerated.trainer.trainer", "Trainer", "__init__"),
    ("pytorch_accelerated.trainer.callbacks", "CallbackHandler", "__init__"),
    ("accelerate", "Accelerator", "__init__"),
    ("pytorch_accelerated.trainer.trainer", "Trainer", "train"),
    ("pytorch_accelerated.trainer._checks", None, "warn_of_parameters_outside_the_optimizer"),
    ("accelerate", "Accelerator", "unwrap_model"),
    ("pytorch_accelerated.trainer.trainer", "Trainer", "_prepare_model_and_optimizer"),
    ("accelerate", "Accelerator", "prepare"),
    ("pytorch_accelerated.trainer.trainer", "Trainer", "_prepare_dataloader"),
    ("pytorch_accelerated.trainer.trainer", "Trainer", "_run_training"),
    ("pytorch_accelerated.trainer.trainer", None, "capture_rng_state"),
    ("pytorch_accelerated.trainer.resuming", None, "capture_rng_state"),
    ("pytorch_accelerated.trainer.trainer", "Trainer", "_run_train_steps"),
    ("pytorch_accelerated.trainer.trainer", "Trainer", "_run_eval_epoch"),
    ("pytorch_accelerated.trainer.default_callbacks", "ProgressBarCallback", "_open"),
    ("pytorch_accelerated.trainer.default_callbacks", "ProgressBarCallback", "_close"),
    ("pytorch_accelerated.trainer.default_callbacks", "TerminateOnNaNCallback", "_check"),
    ("pytorch_accelerated.trainer.default_callbacks", "PrintMetricsCallback", "on_training_run_start"),
    ("pytorch_accelerated.trainer.default_callbacks", "PrintMetricsCallback", "on_training_run_epoch_end"),
    ("pytorch_accelerated.trainer.trainer", "_RunningLoss", "compute"),
    ("pytorch_accelerated.trainer.running_loss", "RunningLoss", "compute"),
)


def pieces(repeats: int) -> None:
    """Time each piece of PIECES inside the warm Trainer calls (wrapped with a timer: ~1 us each)."""
    totals: dict[str, list] = {}

    def timed(function, label):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                entry = totals.setdefault(label, [0.0, 0])
                entry[0] += time.perf_counter() - start
                entry[1] += 1

        return wrapper

    for module_name, owner_name, attribute in PIECES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        owner = getattr(module, owner_name, None) if owner_name else module
        if owner is not None and hasattr(owner, attribute):
            label = f"{owner_name}.{attribute}" if owner_name else attribute
            setattr(owner, attribute, timed(getattr(owner, attribute), label))
    data = make_data(TRAIN_BATCHES, 1), make_data(EVAL_BATCHES, 2)
    for seed in range(5):
        time_one("trainer", seed, data)
    totals.clear()
    calls = []
    for seed in range(repeats):
        calls.append(time_one("trainer", seed, data)[1])
    print(
        f"per warm Trainer(...) + train() call, mean of {repeats} (whole call: median"
        f" {statistics.median(calls) * 1e6:.0f} us)"
    )
    print(f"{'us/call':>9} {'calls':>6}  piece (nested pieces include the ones below them)")
    printed = set()
    for _, owner_name, attribute in PIECES:
        label = f"{owner_name}.{attribute}" if owner_name else attribute
        if label in totals and label not in printed:
            printed.add(label)
            seconds, count = totals[label]
            print(f"{seconds / repeats * 1e6:9.0f} {count / repeats:6.1f}  {label}")


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.basename(filename)


def child(name: str) -> None:
    torch.set_num_threads(1)
    # torch imports it with the first optimizer (~1.5 s): common to both sides
    importlib.import_module("torch._dynamo")
    importlib.import_module("pytorch_accelerated.trainer")  # imported before the timing, as a script does

    torch.optim.Adam([nn.Parameter(torch.zeros(1))])  # the rest of the first optimizer's one-off set-up

    data = make_data(TRAIN_BATCHES, 1), make_data(EVAL_BATCHES, 2)
    print(json.dumps(time_one(name, 0, data)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="alternating pairs in one process")
    parser.add_argument(
        "--fresh", type=int, metavar="N", help="N fresh processes per side instead, first call only"
    )
    parser.add_argument("--profile", action="store_true", help="where a warm Trainer call's time goes")
    parser.add_argument("--pieces", action="store_true", help="time named pieces of a warm Trainer call")
    parser.add_argument("--limit", type=int, default=45, help="rows of --profile")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--child", choices=tuple(LOOPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    torch.set_num_threads(1)
    if args.profile:
        return profile(min(args.repeats, 100), args.limit)
    if args.pieces:
        return pieces(args.repeats)
    summary = fresh(args.fresh) if args.fresh else warm(args.repeats)
    if args.json:
        print(json.dumps(summary))
        return
    what = (
        f"first call in {args.fresh} fresh processes per side"
        if args.fresh
        else f"{summary['pairs']} alternating pairs in one process"
    )
    print(
        f"Trainer(...) + train() against a hand loop, 1 epoch of {TRAIN_BATCHES} + {EVAL_BATCHES} batches"
        f" ({what}):"
    )
    for clock in ("cpu", "wall"):
        s = summary[clock]
        low, _, high = s["extra_us_quartiles"]
        print(
            f"  {clock:>4}: hand loop {s['hand_us']:8.0f} us, Trainer {s['trainer_us']:8.0f} us, "
            f"extra {s['extra_us']:7.0f} us (quartiles {low:.0f}-{high:.0f})"
        )


if __name__ == "__main__":
    main()
