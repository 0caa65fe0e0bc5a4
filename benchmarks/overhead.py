"""Trainer overhead against a hand-written PyTorch loop, measured in the same process.

The seed's MNIST MLP on synthetic data (batch 32, two epochs, evaluation after each), on one
thread, run alternately as a hand-written loop and through ``Trainer`` with its default
callbacks (progress bar included). Prints each pair's times and the median ratio.

    python benchmarks/overhead.py --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from pytorch_accelerated.trainer import Trainer


def _load_quickstart():
    path = Path(__file__).resolve().parents[1] / "examples" / "quickstart_synthetic.py"
    spec = importlib.util.spec_from_file_location("quickstart_synthetic", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quickstart = _load_quickstart()


def hand_written_loop(model, train_dataset, eval_dataset, num_epochs, batch_size):
    """What a careful user writes by hand: loss kept on the device, read once per epoch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_func = nn.CrossEntropyLoss()
    train_dl = DataLoader(train_dataset, batch_size=batch_size, shuffle=True)
    eval_dl = DataLoader(eval_dataset, batch_size=batch_size)
    history = []
    for _ in range(num_epochs):
        model.train()
        total, count = torch.zeros(()), 0
        for inputs, targets in train_dl:
            loss = loss_func(model(inputs), targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            total += loss.detach() * targets.size(0)
            count += targets.size(0)
        model.eval()
        eval_total, eval_count = torch.zeros(()), 0
        with torch.no_grad():
            for inputs, targets in eval_dl:
                eval_total += loss_func(model(inputs), targets) * targets.size(0)
                eval_count += targets.size(0)
        history.append((total.item() / count, eval_total.item() / eval_count))
    return history


def trainer_loop(model, train_dataset, eval_dataset, num_epochs, batch_size):
    trainer = Trainer(
        model, loss_func=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=1e-3)
    )
    trainer.train(
        train_dataset, num_epochs=num_epochs, eval_dataset=eval_dataset, per_device_batch_size=batch_size
    )
    return trainer.run_history


def time_one(loop, args, seed):
    torch.manual_seed(seed)
    model = quickstart.MNISTModel()
    train_dataset = quickstart.make_synthetic_digits(args.num_train_samples, seed=1)
    eval_dataset = quickstart.make_synthetic_digits(args.num_train_samples // 6, seed=2)
    # The progress bar and printed metrics still run; their text is kept out of the timing table.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        loop(model, train_dataset, eval_dataset, args.num_epochs, args.batch_size)
        return time.perf_counter() - start_wall, time.process_time() - start_cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-train-samples", type=int, default=9600)
    parser.add_argument("--num-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    time_one(trainer_loop, args, seed=0)  # warm-up: imports, accelerate state, allocator
    time_one(hand_written_loop, args, seed=0)
    wall_ratios, cpu_ratios = [], []
    print(f"{'run':>3} {'hand loop (s)':>14} {'Trainer (s)':>12} {'wall ratio':>11} {'CPU-time ratio':>15}")
    for repeat in range(args.repeats):
        first, second = (
            (hand_written_loop, trainer_loop) if repeat % 2 == 0 else (trainer_loop, hand_written_loop)
        )
        times = {first: time_one(first, args, seed=repeat), second: time_one(second, args, seed=repeat)}
        (hand_wall, hand_cpu), (trainer_wall, trainer_cpu) = times[hand_written_loop], times[trainer_loop]
        wall_ratios.append(trainer_wall / hand_wall)
        cpu_ratios.append(trainer_cpu / hand_cpu)
        print(
            f"{repeat:>3} {hand_wall:>14.3f} {trainer_wall:>12.3f} {wall_ratios[-1]:>11.3f}"
            f" {cpu_ratios[-1]:>15.3f}"
        )
    steps = args.num_epochs * -(-args.num_train_samples // args.batch_size)
    print(
        f"median Trainer / hand loop: wall {statistics.median(wall_ratios):.3f}, CPU time"
        f" {statistics.median(cpu_ratios):.3f} ({args.repeats} alternating pairs, {steps} training steps per"
        f" run, torch {torch.__version__}, python {sys.version.split()[0]})"
    )
    return statistics.median(wall_ratios)


if __name__ == "__main__":
    main()
