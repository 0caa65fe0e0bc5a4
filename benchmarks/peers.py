"""Time the same workloads as a hand-written loop, this Trainer, pytorch-accelerated and Lightning.

Every (variant, workload) run is a fresh interpreter (``benchmarks/_peers_child.py``) on one
thread, with the same synthetic data, model initialisation, optimizer (Adam, lr 1e-3), shuffling
order, number of epochs and evaluation after each epoch. The variants run in a rotating order in
each repeat; the table gives medians over the repeats:

- ``step (ms)``: wall time of the fit call divided by the number of training batches (the
  evaluation epochs and the framework's own set-up inside the fit call included);
- ``vs hand``: the median over repeats of (variant / hand loop) in the same repeat, wall time
  (with the smallest and largest ratio) and CPU time of the fit call; ``best vs best``: the
  variant's fastest run over the hand loop's fastest, which other processes on a busy machine
  disturb least (they only ever slow a run down);
- ``peak RSS``: the child process's maximum resident set size (ru_maxrss);
- ``import (s)``: importing the framework, on top of torch (whose own import is the baseline);
- ``setup (s)``: building the optimizer and the framework's trainer objects, before the fit call;
- ``eval loss``: the final model's loss on the evaluation set, computed the same way for every
  variant after the fit: equal values show that the variants did the same work.

Environments: the hand loop, this Trainer and Lightning run in the interpreter given by
``--python`` (default: this one), which needs trainer-core, trainer-callbacks and lightning.
pytorch-accelerated from PyPI uses the import name ``pytorch_accelerated`` too, so it cannot share
that environment: it runs in its own virtual environment, ``benchmarks/.venvs/pytorch-accelerated``
by default, created on the first run with the same torch (``$TRAINER_TORCH_REQUIREMENT`` if set,
else ``torch==<the version in --python>``), or the interpreter given by ``--pa-python``.

With ``--interleaved``, each run instead interleaves the variant's training steps with a hand
loop's, one by one, in the same process (``_interleaving.py``), and the table gives each variant's
time per training step over the hand loop's, divided by the same ratio measured with the hand
loop on both sides (the method's own bias), in the same repeat. On a machine whose speed drifts,
this is the measurement that holds; epoch-level work (evaluation, set-up) is not in it.

    hatch run bench:peers                       # or: python benchmarks/peers.py
    python benchmarks/peers.py --repeats 3 --workloads mlp --markdown
    hatch run bench:peers --interleaved         # per-step ratios, interleaved with a hand loop
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_peers_child.py"
DEFAULT_PA_VENV = HERE / ".venvs" / "pytorch-accelerated"

VARIANTS = ("hand", "trainer", "pytorch-accelerated", "lightning")
EXTRA_VARIANTS = ("pytorch-accelerated-defaults",)  # its default loaders: os.cpu_count() workers
WORKLOADS = ("mlp", "mlp-user", "mlp-user-flip", "cnn", "mlp-accum-log", "mlp-log10")
WORKLOAD_TITLES = {
    "mlp": "MNIST MLP, batch 32 (overhead-bound)",
    "cnn": "small CNN, 32x32x3, batch 128 (compute-bound)",
    "mlp-accum-log": "MNIST MLP, batch 32, accumulation 4, CSV logger",
    "mlp-log10": "MNIST MLP, batch 32, CSV logger every 10 updates (the hand loop logs nothing)",
    "mlp-user": (
        "MNIST MLP, batch 32, a user's own map-style Dataset class (__getitem__ returns (x[i], y[i]))"
    ),
    "mlp-user-flip": "MNIST MLP, batch 32, the user's Dataset with a random flip (torch.rand) in __getitem__",
}
VARIANT_TITLES = {
    "hand": "hand loop",
    "trainer": "Trainer",
    "pytorch-accelerated": "pytorch-accelerated",
    "lightning": "Lightning",
    "pytorch-accelerated-defaults": "pytorch-accelerated (its loader defaults)",
}
GOALS = {
    "mlp": 1.02,
    "mlp-user": 1.02,
    "mlp-user-flip": 1.02,
    "cnn": 1.00,
}  # Trainer / hand loop per step (issues 17, 25)


# ---------------------------------------------------------------------- environments


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def query(python: str, code: str) -> str:
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def torch_version(python: str) -> str:
    return query(python, "import torch; print(torch.__version__)")


def check_main_environment(python: str, variants, workloads) -> None:
    needed = {"trainer": "pytorch_accelerated.trainer", "lightning": "lightning"}
    modules = [needed[v] for v in variants if v in needed]
    if "trainer" in variants and {"mlp-accum-log", "mlp-log10"} & set(workloads):
        modules.append("pytorch_accelerated.callbacks")
    code = "import importlib, torch\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    result = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(
            f"{python} cannot import what the benchmark needs ({', '.join(['torch', *modules])}):\n"
            f"{result.stderr.strip().splitlines()[-1]}\n"
            "Run it in the bench environment (hatch run bench:peers) or install trainer-core, "
            "trainer-callbacks and lightning there."
        )


def ensure_pa_environment(venv: Path, main_python: str) -> str:
    """The interpreter of a virtual environment with pytorch-accelerated from PyPI and the same
    torch as the main environment; created (or completed) here when needed."""
    requirement = (
        os.environ.get("TRAINER_TORCH_REQUIREMENT") or f"torch=={torch_version(main_python).split('+')[0]}"
    )
    python = venv_python(venv)
    marker = venv / "bench-requirements.txt"
    wanted = f"{requirement}\npytorch-accelerated\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return str(python)
    print(
        f"Preparing {venv} with {requirement} and pytorch-accelerated (first run only; a few minutes)...",
        flush=True,
    )
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", requirement, "pytorch-accelerated"], check=True
    )
    marker.write_text(wanted)
    return str(python)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------- runs


def run_child(python: str, variant: str, workload: str, args, log_dir: Path) -> dict:
    samples = args.cnn_samples if workload == "cnn" else args.mlp_samples
    result_file = log_dir / f"{variant}-{workload}.json"
    log_file = log_dir / f"{variant}-{workload}.log"
    command = [
        python,
        str(CHILD),
        "--variant",
        variant,
        "--workload",
        workload,
        "--num-train-samples",
        str(samples),
        "--num-epochs",
        str(args.num_epochs),
        "--result-file",
        str(result_file),
    ]
    if getattr(args, "interleaved", False):
        command.append("--interleave")
    # One thread everywhere; the progress bars and printed metrics go to a file nobody reads.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    with open(log_file, "w") as log:
        returncode = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_dir
        ).returncode
    if returncode != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-25:])
        raise SystemExit(f"{variant} on {workload} failed (exit {returncode}):\n{tail}")
    return json.loads(result_file.read_text())


def run_suite(args, pythons: dict[str, str]) -> list[dict]:
    results = []
    variants = list(args.variants)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        log_dir = Path(tmp)
        print(
            "warm-up: one small untimed run per variant (compiles bytecode, fills the page cache)", flush=True
        )
        warm_up = "mlp-accum-log" if "mlp-accum-log" in args.workloads else args.workloads[0]
        for variant in variants:
            tiny = argparse.Namespace(
                mlp_samples=320, cnn_samples=256, num_epochs=1, interleaved=args.interleaved
            )
            run_child(pythons[variant], variant, warm_up, tiny, log_dir)
        for repeat in range(args.repeats):
            for w_index, workload in enumerate(args.workloads):
                shift = (repeat + w_index) % len(variants)
                order = variants[shift:] + variants[:shift]
                if repeat % 2:
                    order.reverse()
                line = []
                for variant in order:
                    result = run_child(pythons[variant], variant, workload, args, log_dir)
                    result["repeat"] = repeat
                    results.append(result)
                    if args.interleaved:
                        line.append(f"{variant} {result['interleaved']['ratio']:.3f}")
                    else:
                        line.append(f"{variant} {result['step_ms']:.3f}")
                what = "step / interleaved hand step" if args.interleaved else "ms/step"
                print(
                    f"repeat {repeat + 1}/{args.repeats} {workload:<14} {what}: " + ", ".join(line),
                    flush=True,
                )
    return results


# ---------------------------------------------------------------------- the table


def summarise(results: list[dict], workloads, variants) -> list[dict]:
    rows = []
    for workload in workloads:
        runs = [r for r in results if r["workload"] == workload]
        hand = {r["repeat"]: r for r in runs if r["variant"] == "hand"}
        for variant in variants:
            mine = [r for r in runs if r["variant"] == variant]
            if not mine:
                continue
            row = {"workload": workload, "variant": variant, "repeats": len(mine)}
            for key in (
                "step_ms",
                "fit_s",
                "peak_rss_mib",
                "import_s",
                "setup_s",
                "torch_import_s",
                "final_eval_loss",
            ):
                row[key] = statistics.median(r[key] for r in mine)
            row["step_ms_min"] = min(r["step_ms"] for r in mine)
            for kind, key in (("wall", "fit_s"), ("cpu", "fit_cpu_s")):
                ratios = [r[key] / hand[r["repeat"]][key] for r in mine if r["repeat"] in hand]
                if ratios:
                    row[f"ratio_{kind}"] = statistics.median(ratios)
                    row[f"ratio_{kind}_range"] = (min(ratios), max(ratios))
            if hand:
                row["ratio_best"] = min(r["fit_s"] for r in mine) / min(r["fit_s"] for r in hand.values())
            row["eval_losses"] = sorted({round(r["final_eval_loss"], 6) for r in mine})
            rows.append(row)
    return rows


def pairwise(
    results: list[dict], workload: str, variant: str, other: str, key: str = "fit_s"
) -> float | None:
    """Median over repeats of variant / other, in the same repeat."""
    by_repeat = {r["repeat"]: r[key] for r in results if r["workload"] == workload and r["variant"] == other}
    ratios = [
        r[key] / by_repeat[r["repeat"]]
        for r in results
        if r["workload"] == workload and r["variant"] == variant and r["repeat"] in by_repeat
    ]
    return statistics.median(ratios) if ratios else None


def format_table(rows: list[dict], markdown: bool) -> str:
    header = [
        "workload",
        "variant",
        "step (ms)",
        "vs hand, wall (min-max)",
        "vs hand, CPU",
        "best vs best",
        "peak RSS (MiB)",
        "import (s)",
        "setup (s)",
        "eval loss",
    ]
    lines = []
    for row in rows:
        wall = cpu = best = "-"
        if "ratio_best" in row:
            best = f"{row['ratio_best']:.3f}"
        if "ratio_wall" in row:
            low, high = row["ratio_wall_range"]
            wall = f"{row['ratio_wall']:.3f} ({low:.2f}-{high:.2f})"
            cpu = f"{row['ratio_cpu']:.3f}"
        lines.append(
            [
                row["workload"],
                VARIANT_TITLES[row["variant"]],
                f"{row['step_ms']:.3f}",
                wall,
                cpu,
                best,
                f"{row['peak_rss_mib']:.0f}",
                f"{row['import_s']:.3f}",
                f"{row['setup_s']:.3f}",
                f"{row['final_eval_loss']:.4f}",
            ]
        )
    return _table(header, lines, markdown)


def _table(header: list[str], lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def goal_lines(results: list[dict], rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row["variant"] != "trainer":
            continue
        workload = row["workload"]
        if workload in GOALS and "ratio_wall" in row:
            met = "met" if row["ratio_wall"] <= GOALS[workload] else "NOT met"
            lines.append(
                f"{workload}: Trainer / hand loop = {row['ratio_wall']:.3f} wall, {row['ratio_cpu']:.3f} CPU,"
                f" {row['ratio_best']:.3f} best vs best (goal <= {GOALS[workload]} on the median wall ratio):"
                f" {met}"
            )
        for peer in ("pytorch-accelerated", "lightning"):
            ratio = pairwise(results, workload, "trainer", peer)
            if ratio is not None:
                cpu = pairwise(results, workload, "trainer", peer, "fit_cpu_s")
                verdict = "faster" if ratio < 1 else "NOT faster"
                lines.append(f"{workload}: Trainer / {peer} = {ratio:.3f} wall, {cpu:.3f} CPU: {verdict}")
    return lines


def summarise_interleaved(results: list[dict], workloads, variants) -> list[dict]:
    """Per variant: its per-step ratio to the hand loop in each repeat, divided by the A/A ratio
    (the hand variant's) of the same repeat; medians over the repeats."""
    rows = []
    for workload in workloads:
        runs = [r for r in results if r["workload"] == workload]
        bias = {r["repeat"]: r["interleaved"]["ratio"] for r in runs if r["variant"] == "hand"}
        for variant in variants:
            mine = [r for r in runs if r["variant"] == variant and r["repeat"] in bias]
            if not mine:
                continue
            corrected = [r["interleaved"]["ratio"] / bias[r["repeat"]] for r in mine]
            rows.append(
                {
                    "workload": workload,
                    "variant": variant,
                    "repeats": len(mine),
                    "steps": mine[0]["interleaved"]["steps"],
                    "hand_step_us": statistics.median(r["interleaved"]["hand_step_us"] for r in mine),
                    "step_us": statistics.median(r["interleaved"]["step_us"] for r in mine),
                    "raw": statistics.median(r["interleaved"]["ratio"] for r in mine),
                    "bias": statistics.median(bias.values()),
                    "corrected": statistics.median(corrected),
                    "corrected_range": (min(corrected), max(corrected)),
                    "by_repeat": {r["repeat"]: c for r, c in zip(mine, corrected)},
                }
            )
    return rows


def format_interleaved_table(rows: list[dict], markdown: bool) -> str:
    header = [
        "workload",
        "variant",
        "steps/run",
        "hand step (us)",
        "step (us)",
        "vs hand, raw",
        "A/A",
        "vs hand (min-max)",
    ]
    lines = []
    for row in rows:
        low, high = row["corrected_range"]
        corrected = (
            "1 (reference)" if row["variant"] == "hand" else f"{row['corrected']:.3f} ({low:.3f}-{high:.3f})"
        )
        lines.append(
            [
                row["workload"],
                VARIANT_TITLES[row["variant"]],
                str(row["steps"]),
                f"{row['hand_step_us']:.0f}",
                f"{row['step_us']:.0f}",
                f"{row['raw']:.3f}",
                f"{row['bias']:.3f}",
                corrected,
            ]
        )
    return _table(header, lines, markdown)


def interleaved_goal_lines(rows: list[dict]) -> list[str]:
    lines = []
    by_key = {(row["workload"], row["variant"]): row for row in rows}
    for (workload, variant), row in by_key.items():
        if variant != "trainer":
            continue
        if workload in GOALS:
            met = "met" if row["corrected"] <= GOALS[workload] else "NOT met"
            lines.append(
                f"{workload}: Trainer / hand loop per step = {row['corrected']:.3f} (goal <="
                f" {GOALS[workload]}): {met}"
            )
        for peer in ("pytorch-accelerated", "lightning"):
            other = by_key.get((workload, peer))
            if other is None:
                continue
            ratios = [
                row["by_repeat"][r] / other["by_repeat"][r]
                for r in row["by_repeat"]
                if r in other["by_repeat"]
            ]
            ratio = statistics.median(ratios)
            lines.append(
                f"{workload}: Trainer / {peer} per step = {ratio:.3f}:"
                f" {'faster' if ratio < 1 else 'NOT faster'}"
            )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See benchmarks/README.md.")
    parser.add_argument(
        "--repeats", type=int, default=6, help="alternating repeats (default 6: about 10 minutes)"
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        choices=WORKLOADS,
        default=list(WORKLOADS[:5]),
        help="mlp-log10 (the logger's overhead, for --variants trainer) runs only when named",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS + EXTRA_VARIANTS,
        default=list(VARIANTS),
        help="'hand' is always included: the ratios are to it",
    )
    parser.add_argument("--mlp-samples", type=int, default=9600, help="training samples of the MLP workloads")
    parser.add_argument("--cnn-samples", type=int, default=1920, help="training samples of the CNN workload")
    parser.add_argument("--num-epochs", type=int, default=2)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the hand loop, the Trainer and Lightning (default: this one)",
    )
    parser.add_argument(
        "--pa-python",
        help=(
            "interpreter with pytorch-accelerated from PyPI "
            f"(default: {DEFAULT_PA_VENV.relative_to(HERE.parent)}, created if missing)"
        ),
    )
    parser.add_argument("--setup-only", action="store_true", help="prepare the environments and stop")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", help="also write every run's raw result to this file")
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="time each variant's training steps interleaved with a hand loop's (one epoch per run)",
    )
    args = parser.parse_args(argv)
    if args.interleaved:
        args.num_epochs = 1
        args.mlp_samples = args.mlp_samples if args.mlp_samples != 9600 else 32 * 1200
        args.cnn_samples = args.cnn_samples if args.cnn_samples != 1920 else 128 * 80
    if "hand" not in args.variants:
        args.variants.insert(0, "hand")

    check_main_environment(args.python, args.variants, args.workloads)
    pythons = {variant: args.python for variant in args.variants}
    if any(v.startswith("pytorch-accelerated") for v in args.variants):
        pa_python = args.pa_python or ensure_pa_environment(DEFAULT_PA_VENV, args.python)
        main_torch, pa_torch = torch_version(args.python), torch_version(pa_python)
        if main_torch != pa_torch:
            print(
                f"warning: torch {pa_torch} for pytorch-accelerated, {main_torch} for the others",
                file=sys.stderr,
            )
        for variant in args.variants:
            if variant.startswith("pytorch-accelerated"):
                pythons[variant] = pa_python
    if args.setup_only:
        return

    started = time.perf_counter()
    results = run_suite(args, pythons)
    rows = (summarise_interleaved if args.interleaved else summarise)(results, args.workloads, args.variants)
    versions = (
        query(
            args.python,
            "import torch, lightning, accelerate; print(torch.__version__, lightning.__version__, "
            "accelerate.__version__)",
        )
        if "lightning" in args.variants
        else ""
    )
    pa_version = ""
    if "pytorch-accelerated" in pythons:
        pa_version = query(
            pythons["pytorch-accelerated"],
            "from importlib.metadata import version; print(version('pytorch-accelerated'))",
        )
    print()
    for workload in args.workloads:
        print(f"{workload}: {WORKLOAD_TITLES[workload]}")
    print((format_interleaved_table if args.interleaved else format_table)(rows, args.markdown))
    torch_import = statistics.median(r["torch_import_s"] for r in results)
    mode = (
        "training steps interleaved with a hand loop's, A/A-corrected"
        if args.interleaved
        else "whole fit calls"
    )
    print(
        f"\nMedians of {args.repeats} alternating repeats, {args.num_epochs} epoch(s) each, {mode};"
        f" {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} CPUs, one thread; python"
        f" {platform.python_version()}; torch, lightning, accelerate:"
        f" {versions or torch_version(args.python)}; pytorch-accelerated {pa_version or '-'}; importing torch"
        f" itself: {torch_import:.2f} s; suite took {time.perf_counter() - started:.0f} s."
    )
    for line in interleaved_goal_lines(rows) if args.interleaved else goal_lines(results, rows):
        print(line)
    for row in rows:
        if len(row.get("eval_losses", ())) > 1:
            print(
                f"note: {row['variant']} on {row['workload']} ended with different eval losses:"
                f" {row['eval_losses']}"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
