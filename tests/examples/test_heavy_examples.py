"""The examples that show the Trainer with other libraries (torchvision, timm, transformers), mixed
precision with torch.compile, and training on two CPU processes: each runs for a few steps on tiny
data (FakeData or synthetic data where the real data set needs a download; no model weights are
downloaded).

Tests that need torchvision, timm or transformers skip, with the reason, where the package is not
installed. To run them all, in an environment of their own:

    python -m venv .venv-examples
    .venv-examples/bin/pip install torch==2.14.1 torchvision==0.29.1 ./packages/trainer-core \\
        ./packages/trainer-callbacks ./packages/trainer-metrics
"./packages/trainer-examples[timm,transformers]" \\
        pytest pytest-timeout
    .venv-examples/bin/python -m pytest tests/examples/test_heavy_examples.py -ra --timeout=600
"""

from __future__ import annotations

import importlib
import math
import struct
import sys
from pathlib import Path

import pytest
import torch

from tests.launching import free_port, run_launch, tail

PACKAGE = "pytorch_accelerated.examples"
TWO_PROCESSES_LINE = (
    "trained on 2 process(es), device cpu, backend gloo; weights identical on every process: True"
)


def require(module_name: str, extra: str) -> None:
    pairing = (
        " (torchvision needs a torch build it matches, e.g. torch==2.14.1 with torchvision==0.29.1)"
        if module_name in ("torchvision", "timm")
        else ""
    )
    pytest.importorskip(
        module_name,
        exc_type=ImportError,
        reason=(
            f"{module_name} is not installed; this example needs it: pip install"
            f" 'trainer-examples[{extra}]'{pairing}"
        ),
    )


def example(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def launch(launcher: list[str], name: str, args: list[str], tmp_path: Path) -> str:
    status, output = run_launch([*launcher, "-m", f"{PACKAGE}.{name}", *args], tmp_path)
    assert status == 0, tail(output)
    return output


def torchrun_two_processes() -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]


# ---------------------------------------------------------------------------- MNIST quickstart


def write_tiny_mnist(root: Path, num_train: int = 60, num_test: int = 10) -> None:
    """MNIST's four raw files in their IDX format, with random digits: torchvision finds them and
    skips the download, so the example's real ``datasets.MNIST(download=True)`` path runs offline."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, size in (("train", num_train), ("t10k", num_test)):
        images = torch.randint(0, 256, (size, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, 10, (size,), dtype=torch.uint8, generator=generator)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, size, 28, 28) + images.numpy().tobytes()
        )
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, size) + labels.numpy().tobytes()
        )


def test_mnist_quickstart_on_fake_data():
    require("torchvision", "vision")
    metrics = example("mnist_quickstart").main(
        ["--fake-data", "--fake-data-size", "240", "--num-epochs", "1", "--max-steps", "3"]
    )
    assert math.isfinite(metrics["eval_loss"])


def test_mnist_quickstart_reads_mnist_through_the_real_dataset_code(tmp_path):
    require("torchvision", "vision")
    write_tiny_mnist(tmp_path)
    metrics = example("mnist_quickstart").main(
        ["--data-dir", str(tmp_path), "--num-epochs", "1", "--batch-size", "8"]
    )
    assert math.isfinite(metrics["eval_loss"])


def test_mnist_quickstart_runs_with_torchrun_on_two_processes(tmp_path):
    require("torchvision", "vision")
    args = ["--fake-data", "--fake-data-size", "240", "--num-epochs", "1", "--max-steps", "3"]
    output = launch(torchrun_two_processes(), "mnist_quickstart", args, tmp_path)
    assert "2 process(es) on cpu" in output
    assert output.count("test loss:") == 1  # printed by the main process only


# ---------------------------------------------------------------------------- timm transfer learning

TIMM_ARGS = [
    "--model-name",
    "test_resnet",
    "--fake-data",
    "--fake-data-size",
    "32",
    "--image-size",
    "64",
    "--num-epochs",
    "1",
    "--max-steps",
    "2",
    "--batch-size",
    "4",
]


def test_timm_transfer_learning_trains_the_head_then_everything(capsys):
    require("torchvision", "timm")
    require("timm", "timm")
    trainer = example("timm_transfer_learning").main(TIMM_ARGS)

    model = trainer.get_model()
    assert all(param.requires_grad for param in model.parameters())
    optimizer_params = [param for group in trainer.optimizer.param_groups for param in group["params"]]
    assert len(optimizer_params) == len(set(map(id, optimizer_params))) == len(list(model.parameters()))
    head_lr, *backbone_lrs = [group["lr"] for group in trainer.optimizer.param_groups]
    assert backbone_lrs and all(lr == pytest.approx(head_lr / 10) for lr in backbone_lrs)
    assert len(trainer.run_history.get_metric_values("eval_loss_epoch")) == 1  # the second run's
    out = capsys.readouterr().out
    assert "stage 1:" in out and "stage 2:" in out


def test_timm_transfer_learning_unfreezes_on_two_processes(tmp_path):
    require("torchvision", "timm")
    require("timm", "timm")
    output = launch(torchrun_two_processes(), "timm_transfer_learning", TIMM_ARGS, tmp_path)
    assert output.count("2 process(es) on cpu") == 2  # both stages, on the same Trainer
    assert "stage 2:" in output


# ---------------------------------------------------------------------------- transformers


def test_transformers_classifier_learns_with_the_loss_from_the_model():
    require("transformers", "transformers")
    accuracy = example("transformers_classifier").main(["--num-samples", "800", "--num-epochs", "2"])
    assert accuracy > 0.9  # the reviews are easy: one telling word each


def test_transformers_classifier_runs_a_few_steps():
    require("transformers", "transformers")
    accuracy = example("transformers_classifier").main(
        ["--num-samples", "200", "--num-epochs", "1", "--max-steps", "3"]
    )
    assert 0.0 <= accuracy <= 1.0


# ---------------------------------------------------------------------------- mixed precision and compile


@pytest.mark.parametrize(
    ("mixed_precision", "compile_backend"),
    [("bf16", "eager"), ("no", "none")],
    ids=["bf16-compiled", "fp32-plain"],
)
def test_mixed_precision_and_compile(mixed_precision, compile_backend):
    args = [
        "--mixed-precision",
        mixed_precision,
        "--compile-backend",
        compile_backend,
        "--num-samples",
        "256",
        "--num-epochs",
        "1",
        "--max-steps",
        "3",
    ]
    trainer = example("mixed_precision_and_compile").main(args)
    assert trainer.run_config.mixed_precision == mixed_precision
    compiled = trainer.get_model(keep_torch_compile=False) is not trainer.get_model()
    assert compiled == (compile_backend != "none")
    assert trainer.completed_update_steps == 3
    assert math.isfinite(trainer.run_history.get_latest_metric("eval_loss_epoch"))


# ---------------------------------------------------------------------------- two CPU processes

DISTRIBUTED_ARGS = ["--num-epochs", "1", "--max-steps", "3", "--num-samples", "256"]


def test_distributed_example_on_one_process(capsys):
    eval_loss = example("distributed_cpu").main(DISTRIBUTED_ARGS)
    assert math.isfinite(eval_loss)
    assert "trained on 1 process(es)" in capsys.readouterr().out


def test_distributed_example_with_torchrun(tmp_path):
    output = launch(torchrun_two_processes(), "distributed_cpu", DISTRIBUTED_ARGS, tmp_path)
    assert output.count(TWO_PROCESSES_LINE) == 1


def test_distributed_example_with_accelerate_launch(tmp_path):
    # --multi_gpu is what starts two processes (through torch's launcher); without a GPU they use the CPUs
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]
    output = launch(launcher, "distributed_cpu", DISTRIBUTED_ARGS, tmp_path)
    assert output.count(TWO_PROCESSES_LINE) == 1


def test_distributed_example_with_notebook_launcher(tmp_path):
    command = [
        sys.executable,
        "-m",
        f"{PACKAGE}.distributed_cpu",
        *DISTRIBUTED_ARGS,
        "--notebook-launcher",
        "--num-processes",
        "2",
        "--port",
        str(free_port()),
    ]
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)
    assert output.count(TWO_PROCESSES_LINE) == 1
