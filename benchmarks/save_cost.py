"""How long saving a training state blocks training, against ``torch.save`` of the same model and
optimizer state dicts in the same process, on the same disk.

The workload (issue 25): a 46 M-parameter transformer encoder (12 layers, width 512, a 16k-token
embedding) trained with Adam, so that the model and optimizer state dicts hold 527 MiB. After its
first update, a callback saves it ``--repeats`` times each way: ``torch.save`` of the state dicts
to a file (the reference); the same followed by ``fsync`` (what durability costs at least);
``save_training_state`` (synchronous: written, digested, synced and renamed); and, where the
trainer has it, ``save_training_state(..., asynchronous=True)`` (the time the step is blocked, then
until the state is complete on disk). The ways run in an order reversed every other repeat, each
after ``os.sync()`` (no dirty page of another save left to write back); ratios are taken within
each repeat, then their median, so that a machine that slows down for a while slows every way alike.
Each is timed on the wall clock and in CPU time of the calling thread: on a shared machine, other
jobs stretch the wall time, much less the CPU time (which leaves out waiting for the disk: fsync).

    python benchmarks/save_cost.py [--repeats 7] [--markdown] [--dir FOLDER] [--synchronous-only]
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback, seed_everything

VOCABULARY, WIDTH, LAYERS, TOKENS = 16_000, 512, 12, 16


class Encoder(torch.nn.Module):
    """Token ids -> one score: an embedding, a transformer encoder, a mean over the tokens."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(VOCABULARY, WIDTH)
        layer = torch.nn.TransformerEncoderLayer(WIDTH, 8, 4 * WIDTH, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.head = torch.nn.Linear(WIDTH, 1)

    def forward(self, tokens):
        return self.head(self.encoder(self.embedding(tokens)).mean(dim=1)).squeeze(-1)


def make_dataset(num_samples: int = 16) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCABULARY, (num_samples, TOKENS), generator=generator)
    return torch.utils.data.TensorDataset(tokens, torch.randn(num_samples, generator=generator))


def saves_asynchronously() -> bool:
    return "asynchronous" in inspect.signature(Trainer.save_training_state).parameters


class Timer:
    """Wall time, and the CPU time of the calling thread (what other jobs on the machine barely change)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.thread_time()
        return self

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.thread_time() - self.cpu

    def __exit__(self, *exc):
        self.seconds = self.stop()


def wait_until_written(path: Path) -> None:
    """An asynchronous save's folder appears, complete, with the last rename."""
    while not (path / "training_state.json").is_file():
        time.sleep(0.001)


class TimeSaves(TrainerCallback):
    """At the first update, saves ``repeats`` times each way, interleaved, then stops the run."""

    def __init__(self, folder: Path, repeats: int, asynchronous: bool):
        self.folder, self.repeats, self.asynchronous = folder, repeats, asynchronous
        self.times: dict[str, list[tuple[float, float]]] = {}
        self.state_bytes = 0

    def on_save_point(self, trainer, point, **kwargs):
        if point != "update":
            return
        for repeat in range(self.repeats):
            ways = [self._torch_save, self._torch_save_synced, self._synchronous]
            ways += [self._asynchronous] if self.asynchronous else []
            for way in ways if repeat % 2 == 0 else reversed(ways):  # each way first as often as last
                os.sync()  # every save starts with no dirty page of the one before left to write back
                way(trainer, repeat)
        raise StopTrainingError("timed")

    def _torch_save(self, trainer, repeat: int) -> None:
        reference = self.folder / f"torch_save-{repeat}.pt"
        states = {"model": trainer.get_model().state_dict(), "optimizer": trainer.optimizer.state_dict()}
        with Timer() as timer:
            torch.save(states, reference)
        self._record("torch.save", timer.seconds)
        self.state_bytes = reference.stat().st_size
        reference.unlink()

    def _torch_save_synced(self, trainer, repeat: int) -> None:
        """torch.save, then fsync: what a save that survives a power cut costs at least."""
        reference = self.folder / f"torch_save_synced-{repeat}.pt"
        states = {"model": trainer.get_model().state_dict(), "optimizer": trainer.optimizer.state_dict()}
        with Timer() as timer, open(reference, "wb") as file:
            torch.save(states, file)
            file.flush()
            os.fsync(file.fileno())
        self._record("torch.save + fsync", timer.seconds)
        reference.unlink()

    def _synchronous(self, trainer, repeat: int) -> None:
        path = self.folder / f"sync-{repeat}"
        with Timer() as timer:
            trainer.save_training_state(path)
        self._record("save_training_state", timer.seconds)
        shutil.rmtree(path)

    def _asynchronous(self, trainer, repeat: int) -> None:
        path = self.folder / f"async-{repeat}"
        with Timer() as timer:
            trainer.save_training_state(path, asynchronous=True)
            # the first copy allocates the host buffers that later saves reuse
            self._record(
                "asynchronous, blocking" if repeat else "asynchronous, blocking (first save)", timer.stop()
            )
            wait_until_written(path)
        # the CPU is the writer's
        self._record("asynchronous, until written", (timer.seconds[0], float("nan")))
        shutil.rmtree(path)

    def _record(self, name: str, seconds: tuple[float, float]) -> None:
        self.times.setdefault(name, []).append(seconds)


def measure(folder: Path, repeats: int, asynchronous: bool) -> TimeSaves:
    seed_everything(0)
    model = Encoder()
    timer = TimeSaves(folder, repeats, asynchronous)
    trainer = Trainer(
        model, torch.nn.MSELoss(), torch.optim.Adam(model.parameters(), lr=1e-4), callbacks=[timer]
    )
    trainer.train(make_dataset(), num_epochs=1, per_device_batch_size=4, max_num_train_steps=2)
    return timer


def summary(times: dict[str, list[tuple[float, float]]]) -> list[tuple]:
    """Per way: (name, wall median, wall / torch.save, CPU median, CPU / torch.save), ratios taken per
    repeat."""
    reference = times["torch.save"]
    rows = []
    for name, seconds in times.items():
        bases = reference[:1] if "first" in name else reference[-len(seconds) :]
        row = [name]
        for column in (0, 1):
            values = [value[column] for value in seconds]
            row += [
                statistics.median(values),
                statistics.median(v / base[column] for v, base in zip(values, bases)),
            ]
        rows.append(tuple(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--dir", help="where to write (default: a temporary folder)")
    parser.add_argument("--synchronous-only", action="store_true", help="leave out the asynchronous saves")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        timer = measure(Path(folder), args.repeats, saves_asynchronously() and not args.synchronous_only)
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
        f" Python {platform.python_version()}, torch {torch.__version__}; {timer.state_bytes / 2**20:.0f} MiB"
        f" written by torch.save; {args.repeats} repeats interleaved; medians"
    )
    rows = summary(timer.times)
    if args.markdown:
        print("\n| save | wall (s) | wall / torch.save | CPU (s) | CPU / torch.save |\n|---|---|---|---|---|")
        for name, wall, wall_ratio, cpu, cpu_ratio in rows:
            print(f"| {name} | {wall:.3f} | {wall_ratio:.2f} | {cpu:.3f} | {cpu_ratio:.2f} |")
    else:
        for name, wall, wall_ratio, cpu, cpu_ratio in rows:
            print(f"{name:36s} wall {wall:7.3f} s x{wall_ratio:5.2f}   CPU {cpu:7.3f} s x{cpu_ratio:5.2f}")


if __name__ == "__main__":
    main()
