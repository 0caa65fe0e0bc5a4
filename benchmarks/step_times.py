"""Per-step times of the hand-written loop and the Trainer, in one process: a check of the
overhead goals that holds up on a noisy machine.

``peers.py`` times whole fit calls in fresh processes, so a run that shares the CPU with
something else for a second is slow as a whole and the medians of a few runs move by several
percent. Here every training step is timed on its own (a timestamp at the start of each step:
at the top of the hand loop's body, from ``on_train_step_start`` in the Trainer) over thousands
of steps in alternating runs, and the low quantiles of the step times are compared: a step that
was disturbed only ever gets slower, so the 10th and 25th percentiles show the undisturbed cost.
Same data, model, optimizer and batch order as ``peers.py``; training epochs only.

    python benchmarks/step_times.py                  # MLP (overhead-bound) and CNN (compute-bound)
    python benchmarks/step_times.py --workloads mlp --runs 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from _peers_child import WORKLOADS, build_model, make_dataset
from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer, TrainerCallback

SAMPLES = {"mlp": 32 * 1500, "cnn": 128 * 40}
SKIP = {"mlp": 50, "cnn": 3}  # the first steps of each run (allocator and caches warming up)


def hand(model, dataset, batch_size, stamps):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()
    model.train()
    total = torch.zeros(())
    for inputs, targets in DataLoader(dataset, batch_size=batch_size, shuffle=True):
        stamps.append(time.perf_counter_ns())
        loss = loss_func(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.detach() * targets.size(0)
    stamps.append(time.perf_counter_ns())
    total.item()


class _Stamps(TrainerCallback):
    def __init__(self, stamps):
        self.stamps = stamps

    def on_train_step_start(self, trainer, **kwargs):
        self.stamps.append(time.perf_counter_ns())

    def on_train_epoch_end(self, trainer, **kwargs):
        self.stamps.append(time.perf_counter_ns())


def trainer(callbacks):
    def run(model, dataset, batch_size, stamps):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        t = Trainer(model, loss_func=nn.CrossEntropyLoss(), optimizer=optimizer, callbacks=(*callbacks, _Stamps(stamps)))
        t.train(dataset, num_epochs=1, per_device_batch_size=batch_size)

    return run


VARIANTS = {"hand loop": hand, "Trainer": trainer(DEFAULT_CALLBACKS), "Trainer, callbacks=()": trainer(())}


def quantile(values, q):
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=("mlp", "cnn"), default=["mlp", "cnn"])
    parser.add_argument("--runs", type=int, default=6, help="alternating runs per variant (default 6)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for workload in args.workloads:
        spec = WORKLOADS[workload]
        dataset = make_dataset(spec["model"], SAMPLES[workload], seed=1)
        steps = {name: [] for name in VARIANTS}
        names = list(VARIANTS)
        for run in range(args.runs):
            order = names[run % len(names):] + names[: run % len(names)]
            for name in order:
                torch.manual_seed(0)
                model = build_model(spec["model"])
                stamps = []
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    VARIANTS[name](model, dataset, spec["batch_size"], stamps)
                steps[name] += [(b - a) / 1e3 for a, b in zip(stamps, stamps[1:])][SKIP[workload]:]
        hand_steps = steps["hand loop"]
        print(f"{workload}: batch {spec['batch_size']}, {args.runs} alternating runs of {len(hand_steps) // args.runs} timed steps each")
        print(f"  {'variant':<22} {'p10 (us)':>10} {'p25 (us)':>10} {'median (us)':>12}   ratio to the hand loop: p10 / p25 / median")
        for name, values in steps.items():
            cells = [quantile(values, q) for q in (0.1, 0.25, 0.5)]
            ratios = [cell / quantile(hand_steps, q) for cell, q in zip(cells, (0.1, 0.25, 0.5))]
            print(f"  {name:<22} {cells[0]:>10.1f} {cells[1]:>10.1f} {cells[2]:>12.1f}   "
                  + " / ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
