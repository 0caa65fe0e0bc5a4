"""The hand-written loop one step at a time, and a training dataset that runs one of its steps
before every batch it gives out: how ``peers.py --interleaved`` times any training loop against
the hand loop step by step, in the same process.

Every DataLoader (those the Trainer, pytorch-accelerated and Lightning build included) loads a
batch with one ``dataset.__getitems__(indices)`` call. ``InterleavedDataset`` runs a hand-loop
step there, timed, so that the two loops alternate step by step whatever the framework, and the
framework's step is the time between two hand steps: everything it does for one batch (its data
loading, events, callbacks, forward, backward, update). Imports nothing but torch and the
standard library: it runs in pytorch-accelerated's environment too.
"""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


class HandLoop:
    """The careful hand-written training loop, one step at a time: the loss kept on the device
    (read once per epoch and once per logged update), ``loss / window`` for gradient
    accumulation (a shorter last window averaged over its own batches), and with ``log_path`` a
    CSV row with the training loss of every ``log_every``-th optimizer update."""

    def __init__(
        self, model, optimizer, dataset, batch_size, accumulation, log_path: Path | None = None, log_every=50
    ):
        self.model, self.optimizer = model, optimizer
        self.loss_func = nn.CrossEntropyLoss()
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
        self.accumulation, self.log_every = accumulation, log_every
        self.num_batches = len(self.loader)
        self.log_file = open(log_path, "w", newline="", encoding="utf-8") if log_path else None  # noqa: SIM115
        self.writer = csv.writer(self.log_file) if self.log_file else None
        if self.writer is not None:
            self.writer.writerow(["epoch", "step", "train_loss_step", "train_loss_epoch", "eval_loss_epoch"])
        self.updates = 0
        self.epoch = 0
        self.batches = None
        self.step = self.count = 0
        self.total = self.window_loss = None

    def start_epoch(self) -> None:
        self.model.train()
        self.batches = iter(self.loader)
        self.epoch += 1
        self.step = self.count = 0
        self.total, self.window_loss = torch.zeros(()), None

    def train_step(self) -> None:
        if self.batches is None or self.step == self.num_batches:
            self.start_epoch()
        inputs, targets = next(self.batches)
        window_start = self.step - self.step % self.accumulation
        window_size = min(self.accumulation, self.num_batches - window_start)
        loss = self.loss_func(self.model(inputs), targets)
        (loss / window_size if window_size > 1 else loss).backward()
        self.total += loss.detach() * targets.size(0)
        self.count += targets.size(0)
        logs_this_update = self.writer is not None and (self.updates + 1) % self.log_every == 0
        if logs_this_update:
            self.window_loss = loss.detach() if self.window_loss is None else self.window_loss + loss.detach()
        self.step += 1
        if self.step - window_start == window_size:
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.updates += 1
            if logs_this_update:
                self.write_row(train_loss_step=(self.window_loss / window_size).item())
                self.window_loss = None

    def epoch_train_loss(self) -> float:
        return self.total.item() / self.count

    def write_row(self, train_loss_step="", train_loss_epoch="", eval_loss_epoch="") -> None:
        if self.writer is not None:
            self.writer.writerow(
                [self.epoch, self.updates, train_loss_step, train_loss_epoch, eval_loss_epoch]
            )
            self.log_file.flush()

    def close(self) -> None:
        if self.log_file is not None:
            self.log_file.close()


class InterleavedDataset(Dataset):
    """``dataset``, with one step of ``hand`` run (and timed) before each batch is loaded. The Trainer
    treats it as it treats ``dataset``: a ``TensorDataset`` (which it fetches as it is: it cannot
    draw random numbers) or any other, such as a user's own class, of which it knows nothing."""

    def __init__(self, dataset, hand: HandLoop):
        self.dataset, self.hand = dataset, hand
        self.hand_starts: list[int] = []
        self.hand_ends: list[int] = []

    @property
    def draws_random_numbers(self) -> bool | None:
        """What the Trainer concludes for ``dataset`` alone: False for a ``TensorDataset``; for any
        other, its own declaration (a user's dataset makes none: None, "it may")."""
        if type(self.dataset) is TensorDataset:
            return False
        return getattr(self.dataset, "draws_random_numbers", None)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getitems__(self, indices):
        self.hand_starts.append(time.perf_counter_ns())
        self.hand.train_step()
        self.hand_ends.append(time.perf_counter_ns())
        return [self.dataset[index] for index in indices]

    def step_times(self, skip: int) -> tuple[list[int], list[int]]:
        """(the framework's steps, the hand loop's steps) in ns, after the first ``skip``: the
        framework's k-th is the time between the hand steps k and k + 1, paired with step k + 1."""
        framework = [start - end for end, start in zip(self.hand_ends, self.hand_starts[1:])]
        hand = [end - start for start, end in zip(self.hand_starts[1:], self.hand_ends[1:])]
        skip = min(skip, len(framework) // 2)  # short (warm-up) runs keep half their steps
        return framework[skip:], hand[skip:]


def summarize(framework_ns: list[int], hand_ns: list[int]) -> dict[str, float]:
    """The framework's time over the hand loop's, over every step pair but the slowest 5% on
    either side (a step that something else disturbed)."""
    cutoff_framework, cutoff_hand = _quantile(framework_ns, 0.95), _quantile(hand_ns, 0.95)
    kept = [(f, h) for f, h in zip(framework_ns, hand_ns) if f <= cutoff_framework and h <= cutoff_hand]
    return {
        "steps": len(framework_ns),
        "hand_step_us": statistics.median(hand_ns) / 1e3,
        "step_us": statistics.median(framework_ns) / 1e3,
        "ratio": sum(f for f, _ in kept) / sum(h for _, h in kept),
        "median_pair_ratio": statistics.median(f / h for f, h in zip(framework_ns, hand_ns)),
    }


def _quantile(values, q):
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
