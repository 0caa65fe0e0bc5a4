"""FSDP2 through the Trainer on a GPU: a check, not a benchmark. It launches itself with torchrun:

- one process on one GPU (accelerate's own FSDP2 path: MULTI_GPU becomes FSDP);
- two processes on that one GPU, with nccl (which may refuse two ranks on one device) and with gloo;

and in each launch trains a small transformer three times on the same data: FSDP2 (fp32), unsharded
(one process: plain; two: DDP) and FSDP2 in bf16, each with gradient accumulation and clipping, an
evaluation with uneven shards, a ``predict`` with uneven shares and a ``save_checkpoint``. It prints
one line per launch: the distributed type and parameter class the Trainer ended up with, the largest
difference between the FSDP2 and unsharded checkpoints' weights (fp32: reduction order only), the
bf16 outputs' dtype, the median time of an update and the peak memory of each run. The exit status
is 1 if a check does not hold or a launch fails (but two processes on one GPU may fail: that is
reported, not a failure).

Without a GPU (or with ``--device cpu``) it is the dry run: one and two CPU processes (gloo), small
sizes, so that the script stays tested (a slow test in ``tests/core/test_sharding.py`` runs it).

    python benchmarks/gpu_fsdp.py                 # on the GPU: about 1-2 minutes
    python benchmarks/gpu_fsdp.py --device cpu    # the dry run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import FullyShardedDataParallelPlugin, InitProcessGroupKwargs
from torch import nn
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import Trainer, TrainerCallback

SIZES = {
    "cuda": {"width": 512, "heads": 8, "layers": 4, "seq": 256, "vocab": 8192, "batch": 8, "samples": 320},
    "cpu": {"width": 32, "heads": 2, "layers": 2, "seq": 16, "vocab": 64, "batch": 4, "samples": 48},
}
WEIGHT_TOLERANCE = 1e-4  # fp32 FSDP2 against unsharded: the same arithmetic, reduced in another order
LAUNCH_TIMEOUT_S = 300


class Block(nn.Module):
    """A pre-norm transformer block: the unit FSDP2 shards."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyLM(nn.Module):
    def __init__(self, sizes: dict):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(sizes["vocab"], sizes["width"])
        self.blocks = nn.ModuleList(Block(sizes["width"], sizes["heads"]) for _ in range(sizes["layers"]))
        self.head = nn.Linear(sizes["width"], sizes["vocab"])

    def forward(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def tokens(sizes: dict, num_samples: int, seed: int) -> TensorDataset:
    data = torch.randint(
        0, sizes["vocab"], (num_samples, sizes["seq"] + 1), generator=torch.Generator().manual_seed(seed)
    )
    return TensorDataset(data[:, :-1], data[:, 1:])


class UpdateTimes(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []
        self._last = None

    def on_optimizer_step_end(self, trainer, **kwargs):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


# ---------------------------------------------------------------------- a worker (one process of a launch)


def next_token_loss(logits, targets):
    return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def run_once(args, sizes: dict, name: str, sharded: bool, precision: str) -> dict:
    model = TinyLM(sizes)
    accelerator_kwargs = {
        "mixed_precision": precision,
        "kwargs_handlers": [InitProcessGroupKwargs(backend=args.backend, timeout=timedelta(seconds=120))],
    }
    if args.device == "cpu":
        accelerator_kwargs["cpu"] = True  # one CPU process too: gloo, so that FSDP2 has a process group
    if sharded:
        accelerator_kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=["Block"]
        )
    times = UpdateTimes()
    trainer = Trainer(
        model,
        next_token_loss,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        callbacks=[times],
        accelerator_kwargs=accelerator_kwargs,
    )
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    trainer.train(
        tokens(sizes, sizes["samples"], seed=1),
        num_epochs=1,
        per_device_batch_size=sizes["batch"],
        gradient_accumulation_steps=2,
        gradient_clip_norm=1.0,
        eval_dataset=tokens(sizes, 5 * sizes["batch"] + 1, seed=2),  # uneven shards on two processes
    )
    predictions = trainer.predict(tokens(sizes, 3, seed=3), per_device_batch_size=2)  # shares of 2 and 1
    trainer.save_checkpoint(Path(args.out).with_name(f"{name}.pt"), save_optimizer=False)
    return {
        "distributed_type": trainer.accelerator.distributed_type.value,
        "parameter_class": type(next(trainer.model.parameters())).__name__,
        "eval_loss": trainer.run_history.get_latest_metric("eval_loss_epoch"),
        "prediction_dtype": str(predictions.dtype).replace("torch.", ""),
        "predictions": len(predictions),
        "update_ms": 1000 * statistics.median(times.times) if times.times else None,
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda" else None,
    }


def worker(args) -> None:
    sizes = SIZES[args.device]
    runs = {"fsdp2": (True, "no"), "unsharded": (False, "no"), "fsdp2-bf16": (True, "bf16")}
    results = {
        name: run_once(args, sizes, name, sharded, precision) for name, (sharded, precision) in runs.items()
    }
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps(results))


# ---------------------------------------------------------------------- the driver


def launch(args, label: str, num_processes: int, backend: str, folder: Path) -> dict:
    out = folder / f"{label.replace(' ', '_').replace(',', '')}" / "result.json"
    out.parent.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(num_processes),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
        "--worker",
        "--device",
        args.device,
        "--backend",
        backend,
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.device == "cuda":
        first_gpu = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
        env["CUDA_VISIBLE_DEVICES"] = first_gpu  # one GPU for every launch
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"failed": f"no result within {LAUNCH_TIMEOUT_S} s (a hang?)"}
    if done.returncode != 0 or not out.exists():
        return {"failed": _first_error(done.stdout + done.stderr)}
    result = json.loads(out.read_text())
    result["weight_difference"] = _weight_difference(out.with_name("fsdp2.pt"), out.with_name("unsharded.pt"))
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if "Error" in line or "error" in line]
    return (lines[0] if lines else output.strip().splitlines()[-1] if output.strip() else "no output")[:160]


def _weight_difference(a: Path, b: Path) -> float:
    first, second = (torch.load(path, weights_only=True)["model_state_dict"] for path in (a, b))
    return max((first[name].float() - second[name].float()).abs().max().item() for name in second)


def checks_hold(result: dict) -> list[str]:
    """What is wrong with a launch's result (nothing: an empty list)."""
    problems = []
    fsdp2, bf16 = result["fsdp2"], result["fsdp2-bf16"]
    if (fsdp2["distributed_type"], fsdp2["parameter_class"]) != ("FSDP", "DTensor"):
        problems.append(f"not sharded: {fsdp2['distributed_type']} / {fsdp2['parameter_class']}")
    if result["weight_difference"] > WEIGHT_TOLERANCE:
        problems.append(f"weights differ from unsharded by {result['weight_difference']:.2e}")
    if bf16["prediction_dtype"] != "float32":
        problems.append(f"bf16 outputs in {bf16['prediction_dtype']}")
    if any(run["predictions"] != 3 for run in (fsdp2, bf16)):
        problems.append("predict lost samples")
    return problems


def report_line(label: str, result: dict) -> str:
    if "failed" in result:
        return f"{label:<28} failed: {result['failed']}"
    fsdp2, plain, bf16 = result["fsdp2"], result["unsharded"], result["fsdp2-bf16"]
    times = "/".join(f"{run['update_ms']:.1f}" if run["update_ms"] else "-" for run in (fsdp2, plain, bf16))
    peaks = "/".join(f"{run['peak_mib']:.0f}" if run["peak_mib"] else "-" for run in (fsdp2, plain, bf16))
    problems = checks_hold(result)
    return (
        f"{label:<28} {fsdp2['distributed_type']:<6} {fsdp2['parameter_class']:<8} "
        f"{result['weight_difference']:<10.1e} {bf16['prediction_dtype']:<8} {times:<28} {peaks:<18} "
        f"{'ok' if not problems else '; '.join(problems)}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    launches = [("1 process", 1, "nccl" if args.device == "cuda" else "gloo")]
    if args.device == "cuda":
        launches += [("2 processes, 1 GPU, nccl", 2, "nccl"), ("2 processes, 1 GPU, gloo", 2, "gloo")]
        print(f"FSDP2 check on {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    else:
        launches += [("2 processes, gloo", 2, "gloo")]
        print(f"FSDP2 check, dry run on the CPU (not GPU figures); torch {torch.__version__}")
    print(
        f"{'launch':<28} {'type':<6} {'params':<8} {'weights':<10} {'bf16 out':<8} "
        f"{'update ms (fsdp2/plain/bf16)':<28} {'peak MiB (same)':<18} checks"
    )
    status = 0
    with tempfile.TemporaryDirectory() as folder:
        for label, num_processes, backend in launches:
            result = launch(args, label, num_processes, backend, Path(folder))
            print(report_line(label, result), flush=True)
            # two processes on one GPU may be refused (nccl: one rank per device); anything else must work
            may_fail = args.device == "cuda" and num_processes > 1
            if ("failed" in result and not may_fail) or ("failed" not in result and checks_hold(result)):
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
