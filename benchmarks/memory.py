"""Peak memory of a model with large outputs: the Trainer against a hand-written loop.

A language-model head: embedding, one hidden layer and a 32k-vocabulary output layer over 2,048
tokens a batch (8 sequences of 256), so that one batch's logits are 2,048 x 32,000 floats: 250 MiB,
more than everything else. Whatever keeps the previous step's outputs alive during the next
forward shows up as one more copy of them at the peak.

Each loop trains a few steps in a fresh interpreter (one thread) and reports its peak memory over
the memory in use before training: peak RSS (``ru_maxrss``) on the CPU, where glibc hands blocks
this large back to the system as soon as they are freed, or ``torch.cuda.max_memory_allocated``
with ``--device cuda``. The loops:

- ``hand``: written the usual way, ``outputs = model(inputs); loss = loss_func(outputs, targets)``,
  so that the last step's ``outputs`` stay alive (in the loop's variable) until the next forward
  has made new ones;
- ``hand-del``: the same, with ``del outputs, loss`` at the end of every step (what careful code does);
- ``trainer``: ``Trainer`` with its default callbacks.

    python benchmarks/memory.py                 # about 30 s on one CPU core
    python benchmarks/memory.py --device cuda --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys

VOCAB, WIDTH, BATCH, SEQUENCE = 32_000, 64, 8, 256
LOOPS = ("hand", "hand-del", "trainer")


def _model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(VOCAB, WIDTH), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, VOCAB)
    )


def _token_loss(outputs, targets):
    from torch.nn.functional import cross_entropy

    return cross_entropy(outputs.flatten(0, -2), targets.flatten())


def _dataset(steps: int):
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (BATCH * steps, SEQUENCE), generator=generator)
    return TensorDataset(tokens, torch.roll(tokens, -1, dims=1))


def _in_use_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _hand(model, dataset, device, delete: bool) -> None:
    import torch
    from torch.utils.data import DataLoader

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    total = torch.zeros((), device=device)
    for inputs, targets in DataLoader(dataset, batch_size=BATCH, shuffle=True):
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)
        loss = _token_loss(outputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.detach() * targets.size(0)
        if delete:
            del outputs, loss
    total.item()


def _trainer(model, dataset, device) -> None:
    import torch

    from pytorch_accelerated.trainer import Trainer

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    kwargs = {"cpu": True} if device.type == "cpu" else {}
    trainer = Trainer(model, loss_func=_token_loss, optimizer=optimizer, accelerator_kwargs=kwargs)
    trainer.train(dataset, num_epochs=1, per_device_batch_size=BATCH)


def child(loop: str, device_name: str, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    device = torch.device(device_name)
    if loop == "trainer":
        import pytorch_accelerated.trainer  # noqa: F401  (imported before the baseline, as torch is)
    model, dataset = _model().to(device), _dataset(steps)
    # one untimed forward and backward on a tiny batch: torch's lazy initialisation, not the loop's
    _token_loss(
        model(dataset[0][0][:1].unsqueeze(0).to(device)), dataset[0][1][:1].unsqueeze(0).to(device)
    ).backward()
    model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = _in_use_mib(device)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if loop == "trainer":
            _trainer(model, dataset, device)
        else:
            _hand(model, dataset, device, delete=loop == "hand-del")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {
        "loop": loop,
        "before_mib": before,
        "peak_mib": _peak_mib(device),
        "peak_over_before_mib": _peak_mib(device) - before,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (peak RSS) or cuda (max_memory_allocated)")
    parser.add_argument("--steps", type=int, default=6, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=list(LOOPS))
    parser.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.device, args.steps)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results: dict[str, list[dict]] = {loop: [] for loop in args.loops}
    for _ in range(args.repeats):
        for loop in args.loops:
            command = [
                sys.executable,
                __file__,
                "--child",
                loop,
                "--device",
                args.device,
                "--steps",
                str(args.steps),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
            results[loop].append(json.loads(output.strip().splitlines()[-1]))
    logits_mib = BATCH * SEQUENCE * VOCAB * 4 / 2**20
    what = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    print(
        f"{BATCH * SEQUENCE} tokens a batch, {VOCAB} classes: one batch's logits are {logits_mib:.0f} MiB"
        " (fp32)"
    )
    print(f"{'loop':<10} {what + ' over before training (MiB)':>44} {'in logits':>10}")
    for loop, runs in results.items():
        peak = statistics.median(run["peak_over_before_mib"] for run in runs)
        print(f"{loop:<10} {peak:>44.0f} {peak / logits_mib:>10.2f}")
    print(f"medians of {args.repeats} run(s) of {args.steps} steps, each in a fresh process")


if __name__ == "__main__":
    main()
