"""The cost of the progress bar's first bar in a process, and of each later one (issue 17 point 2).

    python benchmarks/first_bar.py [--processes 15]

Each measurement runs in a fresh process, its stderr on a pseudo-terminal (as in a shell) or a
file: the CPU time (``time.process_time``; the wall clock is noise on a loaded machine) of
opening a bar, 100 updates and closing it, for the first bar and the second, with tqdm set up as
the bar was before (``tqdm.auto.tqdm`` with its defaults: a multiprocessing lock and a monitor
thread made with the first bar) and with ``ProgressBarCallback`` now. Prints medians in us.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import statistics
import struct
import subprocess
import sys
import tempfile
import termios

CHILD = r"""
import sys, time
from types import SimpleNamespace
variant = sys.argv[1]
if variant == "before":
    from tqdm.auto import tqdm
    def bar():
        b = tqdm(total=100, desc="epoch 1 train", leave=False, dynamic_ncols=True, mininterval=0.5)
        for _ in range(100):
            b.update(1)
        b.close()
else:
    from pytorch_accelerated.trainer import ProgressBarCallback
    callback = ProgressBarCallback()
    trainer = SimpleNamespace(is_local_process_zero=True, _train_loss=None)
    def bar():
        callback._open(trainer, 100, "epoch 1 train")
        for _ in range(100):
            callback._bar.update(1)
        callback._close()
times = []
for _ in range(2):
    start = time.process_time()
    bar()
    times.append((time.process_time() - start) * 1e6)
print("RESULT", *times, flush=True)
"""


def measure(variant: str, on_terminal: bool) -> tuple[float, float]:
    command = [sys.executable, "-c", CHILD, variant]
    if on_terminal:
        controller, terminal = pty.openpty()
        # 24 rows of 100 columns
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        output = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=terminal, text=True, check=True
        ).stdout
        os.close(terminal)
        os.close(controller)
    else:
        with tempfile.TemporaryFile("w") as file:
            output = subprocess.run(
                command, stdout=subprocess.PIPE, stderr=file, text=True, check=True
            ).stdout
    first, second = (float(value) for value in output.split("RESULT")[1].split())
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=15)
    args = parser.parse_args()
    print(
        f"{'stderr':<10} {'variant':<8} {'first bar (us)':>15} {'later bar (us)':>15}   (median of"
        f" {args.processes} processes)"
    )
    for on_terminal in (True, False):
        for variant in ("before", "now"):
            runs = [measure(variant, on_terminal) for _ in range(args.processes)]
            first = statistics.median(run[0] for run in runs)
            later = statistics.median(run[1] for run in runs)
            print(f"{'terminal' if on_terminal else 'file':<10} {variant:<8} {first:>15.0f} {later:>15.0f}")


if __name__ == "__main__":
    main()
