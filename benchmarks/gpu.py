"""Hand-written loop against the Trainer on one CUDA GPU: fp32, bf16 mixed precision, torch.compile.

Three workloads, each trained for the same steps on the same data (in order, no shuffling) from
the same initial weights, as a hand-written loop and through ``Trainer`` (default callbacks):

- ``mlp``: the seed's MNIST MLP, batch 32 (overhead-bound), on a ``TensorDataset``;
- ``mlp-user``: the same MLP on a user's own map-style ``Dataset`` class (``_user_dataset.py``,
  ``__getitem__`` returns ``(x[i], y[i])``), the most common kind of data: the per-step cost of what
  the Trainer does with a dataset it knows nothing of;
- ``cnn``: a small CNN on 32x32x3 images, batch 128 (compute-bound);
- ``transformer``: a stack of pre-norm transformer encoder blocks, in bf16;
- ``lm-head``: the large-output model of ``memory.py`` (an embedding, one hidden layer and a
  32k-vocabulary head over 2,048 tokens a batch: 250 MiB of fp32 logits per batch), where the
  peak memory is the figure to read: the hand loop is written the usual way, so that a step's
  outputs stay alive in its variable until the next forward.

Both loops load with ``pin_memory=True`` on CUDA and copy batches with ``non_blocking=True`` (the
Trainer's defaults on one GPU: a run whose training dataloader does not pin memory fails the check).

Modes: ``fp32``; ``bf16`` (autocast around the forward pass in the hand loop,
``accelerator_kwargs={"mixed_precision": "bf16"}`` for the Trainer); ``compile`` (fp32, the model
passed as ``torch.compile(model)``); ``bf16-compile`` (both). For each workload and mode it prints
the throughput of both loops and their ratio (medians over ``--repeats`` alternating runs), the
host-device synchronisations seen per timed step (``torch.cuda.set_sync_debug_mode("warn")``,
CUDA only), the peak memory of a run (``torch.cuda.max_memory_allocated``, CUDA only), and the
loss after training: the final weights' fp32 loss on held-out batches, which must agree across
loops and modes within mixed-precision tolerance (the exit status is 1 if not).

Without a CUDA GPU (or with ``--device cpu``) it runs everything on the CPU at small sizes, so that
the script stays tested; those figures are not GPU figures.

    python benchmarks/gpu.py                     # hatch run bench:gpu
    python benchmarks/gpu.py --workloads mlp --modes fp32 bf16 --repeats 5
    python benchmarks/gpu.py --workloads lm-head # peak memory: Trainer against a hand loop
    python benchmarks/gpu.py --device cpu        # the dry run: small sizes on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import warnings

import torch
from accelerate.state import AcceleratorState
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer, TrainerCallback

from _user_dataset import UserDataset  # beside this script

MODES = ("fp32", "bf16", "compile", "bf16-compile")
DEFAULT_MODES = {
    "mlp": ("fp32", "bf16", "compile"),
    "mlp-user": ("fp32", "bf16", "compile"),
    "cnn": ("fp32", "bf16", "compile"),
    "transformer": ("bf16", "bf16-compile"),
    "lm-head": ("fp32", "bf16"),
}
# Relative tolerance of a final loss against the workload's reference (the hand loop in the first
# mode): the same arithmetic may differ only by reduction order (fp32, compile); bf16 by rounding.
TOLERANCE = {"fp32": 1e-3, "compile": 1e-2, "bf16": 5e-2, "bf16-compile": 5e-2}

# (CUDA sizes, CPU sizes): batch size, timed steps, warm-up steps (compilation happens there), model sizes.
SIZES = {
    "mlp": ({"batch": 32, "steps": 600, "warmup": 30}, {"batch": 32, "steps": 150, "warmup": 10}),
    "mlp-user": ({"batch": 32, "steps": 600, "warmup": 30}, {"batch": 32, "steps": 150, "warmup": 10}),
    "cnn": ({"batch": 128, "steps": 300, "warmup": 30}, {"batch": 16, "steps": 20, "warmup": 5}),
    "transformer": (
        {
            "batch": 16,
            "steps": 60,
            "warmup": 15,
            "width": 1024,
            "heads": 16,
            "layers": 8,
            "seq": 512,
            "vocab": 8192,
        },
        {"batch": 4, "steps": 10, "warmup": 4, "width": 64, "heads": 4, "layers": 2, "seq": 32, "vocab": 256},
    ),
    # memory.py's sizes on CUDA (8 x 256 tokens, a 32,000-token vocabulary, width 64)
    "lm-head": (
        {"batch": 8, "steps": 40, "warmup": 10, "width": 64, "seq": 256, "vocab": 32_000},
        {"batch": 4, "steps": 6, "warmup": 2, "width": 32, "seq": 64, "vocab": 2_000},
    ),
}


# ---------------------------------------------------------------------- models and data


class MNISTModel(nn.Module):
    """The seed README's MLP for 28x28 digits."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, input):
        return self.main(input.view(input.shape[0], -1))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
    )


class TransformerStack(nn.Module):
    """Token embedding, pre-norm encoder blocks (no dropout), a final norm and a per-token head."""

    def __init__(self, vocab: int, width: int, heads: int, layers: int, seq: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(seq, width) * 0.02)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(self.norm(self.blocks(self.embed(tokens) + self.position)))


def lm_head(vocab: int, width: int) -> nn.Module:
    """memory.py's model: a language-model head whose outputs outweigh everything else."""
    return nn.Sequential(
        nn.Embedding(vocab, width), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, vocab)
    )


def token_loss(outputs, targets):
    return cross_entropy(outputs.flatten(0, -2), targets.flatten())


def make_workload(name: str, sizes: dict, num_samples: int, seed: int):
    """(model factory, loss function, dataset of ``num_samples``); the data depend only on ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    if name == "transformer":
        vocab, seq = sizes["vocab"], sizes["seq"]
        tokens = torch.randint(0, vocab, (num_samples, seq), generator=generator)
        targets = (tokens * 7 + torch.roll(tokens, 1, dims=1)) % vocab  # a learnable token mapping
        factory = lambda: TransformerStack(vocab, sizes["width"], sizes["heads"], sizes["layers"], seq)  # noqa: E731
        return factory, token_loss, TensorDataset(tokens, targets)
    if name == "lm-head":
        tokens = torch.randint(0, sizes["vocab"], (num_samples, sizes["seq"]), generator=generator)
        factory = lambda: lm_head(sizes["vocab"], sizes["width"])  # noqa: E731
        return factory, token_loss, TensorDataset(tokens, torch.roll(tokens, -1, dims=1))
    mlp = name.startswith("mlp")
    shape = (1, 28, 28) if mlp else (3, 32, 32)
    prototypes = torch.rand(10, *shape, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    images = prototypes[labels] + 1.5 * torch.randn(num_samples, *shape, generator=generator)
    dataset = UserDataset(images, labels) if name == "mlp-user" else TensorDataset(images, labels)
    return (MNISTModel if mlp else small_cnn), nn.CrossEntropyLoss(), dataset


# ---------------------------------------------------------------------- timing and synchronisations


class _Window:
    """Times the steps from ``warmup`` on and, on CUDA, counts the host-device synchronisations
    that ``torch.cuda.set_sync_debug_mode("warn")`` reports in that window."""

    def __init__(self, device: torch.device, warmup: int):
        self.device, self.warmup = device, warmup
        self.step = 0
        self.start = self.elapsed = None
        self.syncs = None
        self._recorder = None
        self._records = None

    def before_step(self) -> None:
        if self.step == self.warmup:
            _synchronize(self.device)
            if self.device.type == "cuda":
                self._recorder = warnings.catch_warnings(record=True)
                self._records = self._recorder.__enter__()
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
            self.start = time.perf_counter()
        self.step += 1

    def close(self) -> None:
        if self.start is None:
            raise RuntimeError(f"only {self.step} steps ran: fewer than the {self.warmup} warm-up steps")
        if self._recorder is not None:
            torch.cuda.set_sync_debug_mode("default")
            self.syncs = sum("synchroniz" in str(record.message) for record in self._records)
            self._recorder.__exit__(None, None, None)
        _synchronize(self.device)
        self.elapsed = time.perf_counter() - self.start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _WindowCallback(TrainerCallback):
    def __init__(self, window: _Window):
        self.window = window

    def on_train_step_start(self, trainer, **kwargs):
        self.window.before_step()

    def on_train_epoch_end(self, trainer, **kwargs):
        self.window.close()  # after the trainer has read the epoch's loss, as the hand loop does


# ---------------------------------------------------------------------- the two loops


def hand_loop(model, loss_func, dataset, batch_size, device, mode, window) -> None:
    """A careful hand-written loop: pinned batches copied without blocking, the loss kept on the
    device and read once at the end, autocast around the forward pass for bf16. Returns whether
    its batches were pinned."""
    model.to(device)
    forward_model = torch.compile(model) if mode.endswith("compile") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    pinned = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=pinned)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if mode.startswith("bf16")
        else contextlib.nullcontext()
    )
    model.train()
    total = torch.zeros((), device=device)
    for inputs, targets in loader:
        window.before_step()
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast:
            outputs = forward_model(inputs)
        loss = loss_func(outputs.float(), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.detach() * targets.size(0)
    total.item()
    window.close()
    return pinned


def trainer_loop(model, loss_func, dataset, batch_size, device, mode, window) -> None:
    """The Trainer with its default callbacks (their output discarded) and a timing callback.
    Returns whether its training dataloader pinned memory."""
    forward_model = torch.compile(model) if mode.endswith("compile") else model
    accelerator_kwargs = {"mixed_precision": "bf16"} if mode.startswith("bf16") else {}
    if device.type == "cpu":
        accelerator_kwargs["cpu"] = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # accelerate keeps one state per process and refuses a new mixed precision: start afresh.
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = Trainer(
        forward_model,
        loss_func=loss_func,
        optimizer=optimizer,
        callbacks=(*DEFAULT_CALLBACKS, _WindowCallback(window)),
        accelerator_kwargs=accelerator_kwargs,
    )
    trainer.train(
        dataset, num_epochs=1, per_device_batch_size=batch_size, train_dataloader_kwargs={"shuffle": False}
    )
    # the Trainer's default on CUDA: batches copied with non_blocking
    return trainer.train_dataloader.pin_memory


def final_loss(factory, trained: nn.Module, loss_func, dataset, batch_size, device) -> float:
    """The trained weights' loss on held-out batches, in fp32 on a fresh copy of the model (free
    of any autocast or compile wrapper), so that every variant is judged alike."""
    model = factory().to(device)
    model.load_state_dict(trained.state_dict())
    model.eval()
    total = 0.0
    with torch.no_grad():
        for inputs, targets in DataLoader(dataset, batch_size=batch_size):
            total += loss_func(model(inputs.to(device)), targets.to(device)).item() * targets.size(0)
    return total / len(dataset)


def run_one(loop, workload, sizes, mode, device) -> dict:
    steps, warmup, batch = sizes["steps"], sizes["warmup"], sizes["batch"]
    factory, loss_func, train_dataset = make_workload(workload, sizes, batch * (warmup + steps), seed=1)
    _, _, eval_dataset = make_workload(workload, sizes, batch * 4, seed=2)
    # Compiled code is reused across runs where dynamo's guards allow (parameters are inputs, not
    # constants); the first run of a mode compiles, within its warm-up steps.
    torch.manual_seed(0)
    model = factory()
    window = _Window(device, warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        pinned = loop(model, loss_func, train_dataset, batch, device, mode, window)
    return {
        "pinned": pinned,
        "steps_per_s": steps / window.elapsed,
        "syncs_per_step": None if window.syncs is None else window.syncs / steps,
        # the whole run's peak (weights, optimizer state, activations, outputs), CUDA only
        "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "loss": final_loss(factory, model, loss_func, eval_dataset, batch, device),
    }


# ---------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", choices=tuple(SIZES), default=list(SIZES))
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        help="default: fp32 bf16 compile; bf16 bf16-compile for the transformer",
    )
    parser.add_argument(
        "--repeats", type=int, help="alternating runs per variant (default 3 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--steps", type=int, help="timed steps per run (default: per workload)")
    parser.add_argument(
        "--device", choices=("auto", "cuda", "cpu"), default="auto", help="cpu: the dry run at small sizes"
    )
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is available here")
    on_cuda = args.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if on_cuda else "cpu")
    if on_cuda:
        print(f"CUDA GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    else:
        torch.set_num_threads(1)  # steadier than several threads on a shared machine
        print(
            f"{'--device cpu' if args.device == 'cpu' else 'no CUDA GPU'}: running on CPU, figures are not"
            " GPU figures (small sizes, to check that the script runs and that the losses agree); torch"
            f" {torch.__version__}"
        )
    repeats = args.repeats or (3 if on_cuda else 1)
    failures = []
    header = (
        f"{'workload':<12} {'mode':<13} {'hand steps/s':>12} {'Trainer steps/s':>15} {'Trainer/hand':>12} "
        f"{'syncs/step hand':>15} {'syncs/step Trainer':>18} {'peak MiB hand':>13} {'peak MiB Trainer':>16} "
        f"{'loss hand':>10} {'loss Trainer':>12}"
    )
    print(header)
    for workload in args.workloads:
        sizes = dict(SIZES[workload][0 if on_cuda else 1])
        if args.steps:
            sizes["steps"] = args.steps
        modes = args.modes or DEFAULT_MODES[workload]
        reference = None
        for mode in modes:
            runs = {"hand": [], "trainer": []}
            for repeat in range(repeats):
                order = ("hand", "trainer") if repeat % 2 == 0 else ("trainer", "hand")
                for name in order:
                    loop = hand_loop if name == "hand" else trainer_loop
                    runs[name].append(run_one(loop, workload, sizes, mode, device))
            hand_rate = statistics.median(r["steps_per_s"] for r in runs["hand"])
            trainer_rate = statistics.median(r["steps_per_s"] for r in runs["trainer"])
            losses = {name: runs[name][0]["loss"] for name in runs}
            syncs = {name: runs[name][0]["syncs_per_step"] for name in runs}
            if reference is None:
                reference = (mode, losses["hand"])
            for name, loss in losses.items():
                relative = abs(loss - reference[1]) / abs(reference[1])
                if relative > max(TOLERANCE[mode], TOLERANCE[reference[0]]):
                    failures.append(
                        f"{workload}: {name} in {mode} ended at loss {loss:.5f}, {relative:.1%} from the hand"
                        f" loop in {reference[0]} ({reference[1]:.5f}); tolerance"
                        f" {max(TOLERANCE[mode], TOLERANCE[reference[0]]):.1%}"
                    )
            if on_cuda and not all(r["pinned"] for name in runs for r in runs[name]):
                failures.append(
                    f"{workload} in {mode}: a training dataloader did not pin memory (non_blocking needs it)"
                )
            sync_text = {name: "-" if value is None else f"{value:.3f}" for name, value in syncs.items()}
            peaks = {name: runs[name][-1]["peak_mib"] for name in runs}
            peak_text = {name: "-" if value is None else f"{value:.0f}" for name, value in peaks.items()}
            print(
                f"{workload:<12} {mode:<13} {hand_rate:>12.1f} {trainer_rate:>15.1f}"
                f" {trainer_rate / hand_rate:>12.3f} {sync_text['hand']:>15} {sync_text['trainer']:>18}"
                f" {peak_text['hand']:>13} {peak_text['trainer']:>16} {losses['hand']:>10.5f}"
                f" {losses['trainer']:>12.5f}",
                flush=True,
            )
    print(
        f"\nThroughput: median of {repeats} alternating run(s) per loop; Trainer/hand > 1 means the Trainer"
        " is faster. Losses: fp32 loss of the final weights on held-out batches; each is checked against the"
        f" workload's hand loop in its first mode (relative tolerance {TOLERANCE})."
    )
    if on_cuda:
        print("Peak MiB: torch.cuda.max_memory_allocated over a whole run (the last repeat's).")
    else:
        print(
            "Synchronisations and peak memory are measured only on CUDA ('-' here; benchmarks/memory.py"
            " measures RSS)."
        )
    if failures:
        print("CHECKS FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("All losses agree within tolerance.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
