"""Time from ``train(resume_from=...)`` to the first training step, for a state saved after k
updates of a 500-batch epoch: the trainer's skip at the batch sampler against replaying (loading
and dropping the k batches the saved run had seen: the trainer's approach before, kept here as the
reference by patching ``TrainData.batches``).

The workload (issue 13): 16,000 samples, each taking 0.2 ms to load in ``__getitem__`` (a busy
loop, plus a random augmentation), batches of 32, one process, ``num_workers=0``.

    python benchmarks/resume_cost.py [--repeats 3] [--markdown]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback, seed_everything
from pytorch_accelerated.trainer import resumable_data

NUM_SAMPLES = 16_000
LOAD_S_PER_SAMPLE = 0.0002
BATCH_SIZE = 32
SAVED_AFTER = (1, 250, 490)


class SlowDataset(torch.utils.data.Dataset):
    """Samples that take LOAD_S_PER_SAMPLE each to load (decoding, say), with a random augmentation."""

    def __init__(self):
        self.inputs = torch.randn(NUM_SAMPLES, 16, generator=torch.Generator().manual_seed(0))
        self.targets = torch.randint(0, 4, (NUM_SAMPLES,), generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return NUM_SAMPLES

    def __getitem__(self, index):
        until = time.perf_counter() + LOAD_S_PER_SAMPLE
        while time.perf_counter() < until:
            pass
        return self.inputs[index] + 0.01 * torch.randn(16), self.targets[index]


class SaveAfter(TrainerCallback):
    def __init__(self, updates: int, path: Path):
        self.updates, self.path = updates, path

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps == self.updates:
            trainer.save_training_state(self.path)
            raise StopTrainingError(f"saved after {self.updates} updates")


class FirstStep(TrainerCallback):
    """Records when the first step starts, then ends the run."""

    def __init__(self):
        self.at = None

    def on_train_step_start(self, trainer, **kwargs):
        self.at = time.perf_counter()
        raise StopTrainingError("first step reached")


def make_trainer(callbacks) -> Trainer:
    seed_everything(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 4)
    )
    return Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.01), callbacks=callbacks
    )


def train(trainer: Trainer, resume_from=None) -> None:
    trainer.train(SlowDataset(), num_epochs=1, per_device_batch_size=BATCH_SIZE, resume_from=resume_from)


def seconds_to_first_step(state: Path) -> float:
    first = FirstStep()
    trainer = make_trainer([first])
    start = time.perf_counter()
    train(trainer, resume_from=state)
    return first.at - start


def replaying(self, skip: int = 0):
    """The reference: every batch before the position loaded, then dropped."""
    return self._replayed(skip) if skip else iter(self.dataloader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    skipping = resumable_data.TrainData.batches
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for k in SAVED_AFTER:
            state = Path(folder) / f"after-{k}"
            train(make_trainer([SaveAfter(k, state)]))
            times = {}
            for name, batches in (("skip", skipping), ("replay", replaying)):
                resumable_data.TrainData.batches = batches
                times[name] = statistics.median(seconds_to_first_step(state) for _ in range(args.repeats))
            resumable_data.TrainData.batches = skipping
            rows.append((k, times["skip"], times["replay"]))
    print(
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, Python"
        f" {platform.python_version()}, torch {torch.__version__}; {NUM_SAMPLES} samples x"
        f" {LOAD_S_PER_SAMPLE * 1e3:.1f} ms, batch {BATCH_SIZE} ({NUM_SAMPLES // BATCH_SIZE} batches); median"
        f" of {args.repeats}"
    )
    if args.markdown:
        print("\n| saved after k updates | skip at the sampler (s) | replay (s) |\n|---|---|---|")
        for k, skip, replay in rows:
            print(f"| {k} | {skip:.3f} | {replay:.3f} |")
    else:
        for k, skip, replay in rows:
            print(f"k={k:4d}  skip {skip:7.3f} s  replay {replay:7.3f} s")


if __name__ == "__main__":
    main()
