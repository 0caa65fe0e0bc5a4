"""Instructions per training step, counted by valgrind: a measure that a busy machine cannot disturb.

Run under callgrind with collection off at the start; the script switches it on for ``steps``
steady-state steps (Adam) and off again with ``callgrind_control``: of the MLP (batch 32, the
default) on a ``TensorDataset``, of the MLP on a user's own map-style ``Dataset``
(``user-dataset``, ``_user_dataset.py``; ``user-dataset-flip-torch``, ``-numpy``, ``-python``:
with a random flip drawn from that generator; ``--num-workers N`` loads in N workers, whose own
instructions are not counted) or of ``peers.py``'s CNN workload (``cnn``: its model and data,
batch 128):

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=trainer.%p.out \\
        python benchmarks/callgrind_step.py trainer 50
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=hand.%p.out \\
        python benchmarks/callgrind_step.py hand 50
    callgrind_annotate trainer.*.out | head        # "PROGRAM TOTALS" / 50 = instructions per step
    ... python benchmarks/callgrind_step.py trainer 3 cnn
    ... python benchmarks/callgrind_step.py trainer 50 user-dataset-flip-torch --num-workers 2

About 2 minutes of CPU each for 50 MLP steps, ~10 for 3 CNN steps (torch's import runs
uninstrumented). tqdm gets a fake clock: its redraws are timed, and valgrind runs 50 times slower
than the machine.
"""

import argparse
import contextlib
import io
import os
import subprocess

import torch
import tqdm.std
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

_clock = [0.0]


def _fake_time() -> float:
    _clock[0] += 0.0005
    return _clock[0]


tqdm.std.time = _fake_time  # read by every bar created from here on

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer, TrainerCallback  # noqa: E402

WORKLOADS = (
    "mlp",
    "cnn",
    "user-dataset",
    "user-dataset-flip-torch",
    "user-dataset-flip-numpy",
    "user-dataset-flip-python",
)
WARM_UP = {"cnn": 2}  # steps before collection starts (a CNN step takes minutes under valgrind); else 20


def collect(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


class _Collect(TrainerCallback):
    def __init__(self, steps: int, warm_up: int):
        self.steps, self.warm_up, self.step = steps, warm_up, -1

    def on_train_step_start(self, trainer, **kwargs):
        self.step += 1
        if self.step == self.warm_up:
            collect("on")
        elif self.step == self.warm_up + self.steps:
            collect("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=("hand", "trainer"))
    parser.add_argument("steps", type=int, help="steps counted, after the warm-up steps")
    parser.add_argument("workload", nargs="?", choices=WORKLOADS, default="mlp")
    parser.add_argument("--num-workers", type=int, default=0, help="the training dataloader's workers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    warm_up = WARM_UP.get(args.workload, 20)
    model, dataset, batch_size = _workload(args.workload, args.steps + 2 * warm_up)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if args.variant == "trainer":
        trainer = Trainer(
            model,
            nn.CrossEntropyLoss(),
            optimizer,
            callbacks=[_Collect(args.steps, warm_up), *DEFAULT_CALLBACKS],
        )
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            trainer.train(
                dataset,
                num_epochs=1,
                per_device_batch_size=batch_size,
                train_dataloader_kwargs={"num_workers": args.num_workers},
            )
        return
    loss_func, total = nn.CrossEntropyLoss(), torch.zeros(())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=args.num_workers)
    for step, (inputs, targets) in enumerate(loader):
        if step == warm_up:
            collect("on")
        elif step == warm_up + args.steps:
            collect("off")
        loss = loss_func(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.detach() * targets.size(0)
    total.item()


def _workload(name: str, num_batches: int):
    """The model, its training data (``num_batches`` batches) and the batch size."""
    if name == "cnn":
        from _peers_child import build_model, make_dataset  # peers.py's CNN workload, beside this script

        return build_model(name), make_dataset(name, 128 * num_batches, seed=1), 128
    dataset = TensorDataset(torch.randn(32 * num_batches, 784), torch.randint(0, 10, (32 * num_batches,)))
    if name.startswith("user-dataset"):
        from _user_dataset import user_dataset

        dataset = user_dataset(
            dataset, augment=name.removeprefix("user-dataset-flip-") if "flip" in name else None
        )
    return (
        nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)),
        dataset,
        32,
    )


if __name__ == "__main__":
    main()
