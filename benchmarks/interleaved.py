"""The Trainer's cost per training step against a hand-written loop, with the two loops'
steps interleaved one by one in one process: a measurement that a noisy machine cannot bias.

On a shared VM the CPU's speed drifts by 15-30% over seconds, so two runs timed one after the
other (``overhead.py``, ``peers.py``) differ by more than the few percent to be measured. Here the
Trainer's training dataloader runs one step of the hand loop before handing the Trainer each
batch: the two loops alternate step by step, each on its own model, optimizer and data, and each
step of each loop is timed (its data loading included). A drift then slows both loops' steps
alike, and the ratio of their times over thousands of steps is the Trainer's overhead.

What is timed for the Trainer is everything it does between two batches: its events and default
callbacks (progress bar, non-finite-loss check, ...), loss bookkeeping, forward, backward, update,
save points. Epoch-level work (evaluation, the epoch's start and end) is left out of both; it is a
fixed cost per epoch, measured by ``overhead.py`` as part of whole runs.

The interleaving has a small bias of its own (the two sides' steps do not meet the caches alike).
Each run is paired with a calibration run, the same interleaving with the hand loop on both
sides (A/A): its ratio, which should be 1, is the bias, and the Trainer's ratio is divided by it.

    python benchmarks/interleaved.py                       # mlp, cnn and mlp-accum-log, 3 runs each
    python benchmarks/interleaved.py --workloads mlp --runs 5 --callbacks none
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers_child import LOG_EVERY_N_UPDATES, WORKLOADS, build_model, make_dataset  # noqa: E402

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer  # noqa: E402

SAMPLES = {"mlp": 32 * 1200, "cnn": 128 * 80, "mlp-accum-log": 32 * 1200}
WARM_UP_STEPS = {"mlp": 50, "cnn": 3, "mlp-accum-log": 50}


class HandLoop:
    """The careful hand-written loop of ``peers.py``, one step at a time: the loss stays on the
    device (read once per logged update), accumulation over ``accumulation`` batches, and for
    the logging workload a CSV row with the loss of every 50th update."""

    def __init__(self, model, dataset, spec, log_path: Path | None):
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.loss_func = nn.CrossEntropyLoss()
        self.loader = DataLoader(dataset, batch_size=spec["batch_size"], shuffle=True)
        self.accumulation = spec["accumulation"]
        self.num_batches = len(self.loader)
        self.log = open(log_path, "w", newline="") if log_path else None  # noqa: SIM115
        self.writer = csv.writer(self.log) if self.log else None
        self.batches = None
        self.step = 0
        self.updates = 0
        self.total = torch.zeros(())
        self.window_loss = torch.zeros(())

    def start_epoch(self) -> None:
        self.model.train()
        self.batches = iter(self.loader)
        self.step = 0

    def train_step(self, batch=None) -> None:
        """One training step, on the next batch of its own loader or on ``batch``."""
        inputs, targets = next(self.batches) if batch is None else batch
        window_start = self.step - self.step % self.accumulation
        window = min(self.accumulation, self.num_batches - window_start)
        loss = self.loss_func(self.model(inputs), targets)
        (loss / window if window > 1 else loss).backward()
        self.total += loss.detach() * targets.size(0)
        self.window_loss += loss.detach()
        self.step += 1
        if self.step - window_start == window:
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.updates += 1
            if self.writer is not None and self.updates % LOG_EVERY_N_UPDATES == 0:
                self.writer.writerow([self.updates, (self.window_loss / window).item()])
                self.log.flush()
            self.window_loss = torch.zeros(())

    def close(self) -> None:
        if self.log:
            self.log.close()


class InterleavedBatches:
    """The Trainer's training batches, with one hand-loop step run before each is loaded and handed
    over; times both loops' steps (the Trainer's: from loading a batch to asking for the next)."""

    def __init__(self, loader: DataLoader, hand: HandLoop):
        self.loader, self.hand = loader, hand
        self.trainer_ns: list[int] = []
        self.hand_ns: list[int] = []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.hand.start_epoch()
        clock = time.perf_counter_ns
        batches = iter(self.loader)
        for _ in range(len(self.loader)):
            hand_start = clock()
            self.hand.train_step()
            trainer_start = clock()  # each side loads its batch just before its step, so neither goes cold
            yield next(batches)
            self.trainer_ns.append(clock() - trainer_start)
            self.hand_ns.append(trainer_start - hand_start)


class InterleavingTrainer(Trainer):
    """A Trainer whose training dataloader interleaves the hand loop's steps with its own."""

    def __init__(self, *args, hand: HandLoop, **kwargs):
        super().__init__(*args, **kwargs)
        self.hand = hand
        self.interleaved: InterleavedBatches | None = None

    def create_train_dataloader(self, batch_size, dataloader_kwargs):
        self.interleaved = InterleavedBatches(super().create_train_dataloader(batch_size, dataloader_kwargs), self.hand)
        return self.interleaved


def run_once(workload: str, callbacks: str, seed: int, log_dir: Path) -> tuple[list[int], list[int]]:
    spec = WORKLOADS[workload]
    dataset = make_dataset(spec["model"], SAMPLES[workload], seed=1)
    torch.manual_seed(seed)
    hand_model, trainer_model = build_model(spec["model"]), build_model(spec["model"])
    trainer_model.load_state_dict(hand_model.state_dict())
    hand = HandLoop(hand_model, dataset, spec, log_dir / "hand.csv" if spec["logger"] else None)
    extra = []
    if spec["logger"]:
        from pytorch_accelerated.callbacks import CSVLoggerCallback

        extra.append(CSVLoggerCallback(log_dir / f"trainer-{seed}.csv", log_every_n_steps=LOG_EVERY_N_UPDATES))
    trainer = InterleavingTrainer(
        trainer_model,
        loss_func=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(trainer_model.parameters(), lr=1e-3),
        callbacks=(*(DEFAULT_CALLBACKS if callbacks == "default" else ()), *extra),
        hand=hand,
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        trainer.train(dataset, num_epochs=1, per_device_batch_size=spec["batch_size"],
                      gradient_accumulation_steps=spec["accumulation"])  # fmt: skip
    hand.close()
    skip = WARM_UP_STEPS[workload]
    return trainer.interleaved.trainer_ns[skip:], trainer.interleaved.hand_ns[skip:]


def run_calibration(workload: str, seed: int, log_dir: Path) -> tuple[list[int], list[int]]:
    """The interleaving with a hand loop on both sides: the ratio it measures is the method's bias."""
    spec = WORKLOADS[workload]
    dataset = make_dataset(spec["model"], SAMPLES[workload], seed=1)
    torch.manual_seed(seed)
    first_model, second_model = build_model(spec["model"]), build_model(spec["model"])
    second_model.load_state_dict(first_model.state_dict())
    first = HandLoop(first_model, dataset, spec, log_dir / "first.csv" if spec["logger"] else None)
    second = HandLoop(second_model, dataset, spec, log_dir / "second.csv" if spec["logger"] else None)
    interleaved = InterleavedBatches(second.loader, first)
    second.start_epoch()
    for batch in interleaved:
        second.train_step(batch)
    first.close(), second.close()
    skip = WARM_UP_STEPS[workload]
    return interleaved.trainer_ns[skip:], interleaved.hand_ns[skip:]


def summarize(trainer_ns: list[int], hand_ns: list[int]) -> dict[str, float]:
    pair_ratios = [t / h for t, h in zip(trainer_ns, hand_ns)]
    # a step disturbed by something else is dropped with its pair: the slowest 5% of pairs by either side
    cutoff_t, cutoff_h = _quantile(trainer_ns, 0.95), _quantile(hand_ns, 0.95)
    kept = [(t, h) for t, h in zip(trainer_ns, hand_ns) if t <= cutoff_t and h <= cutoff_h]
    return {
        "hand_us": statistics.median(hand_ns) / 1e3,
        "trainer_us": statistics.median(trainer_ns) / 1e3,
        "ratio_of_sums": sum(t for t, _ in kept) / sum(h for _, h in kept),
        "median_pair_ratio": statistics.median(pair_ratios),
        "steps": len(pair_ratios),
    }


def _quantile(values, q):
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=sorted(SAMPLES), default=["mlp", "cnn", "mlp-accum-log"])
    parser.add_argument("--runs", type=int, default=3, help="runs per workload (default 3)")
    parser.add_argument("--callbacks", choices=("default", "none"), default="default",
                        help="the Trainer's callbacks: DEFAULT_CALLBACKS (default) or none")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, one thread; Trainer callbacks: {args.callbacks}")
    print(f"{'workload':<14} {'run':>3} {'steps':>6} {'hand (us)':>10} {'Trainer (us)':>13} {'Trainer/hand':>13} {'A/A bias':>9} {'corrected':>10}")
    results = {}
    with tempfile.TemporaryDirectory() as log_dir:
        for workload in args.workloads:
            corrected = []
            for seed in range(args.runs):
                bias = summarize(*run_calibration(workload, seed, Path(log_dir)))["ratio_of_sums"]
                run = summarize(*run_once(workload, args.callbacks, seed, Path(log_dir)))
                corrected.append(run["ratio_of_sums"] / bias)
                print(f"{workload:<14} {seed:>3} {run['steps']:>6} {run['hand_us']:>10.1f} {run['trainer_us']:>13.1f} "
                      f"{run['ratio_of_sums']:>13.4f} {bias:>9.4f} {corrected[-1]:>10.4f}")  # fmt: skip
            results[workload] = statistics.median(corrected)
            print(f"{workload:<14} Trainer / hand loop per training step (median of {args.runs} corrected runs): {results[workload]:.4f}")
    return results


if __name__ == "__main__":
    main()
