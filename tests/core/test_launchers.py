"""The offline quickstart runs unchanged under plain python and under torchrun on two CPU processes."""

import os
import subprocess
import sys
from pathlib import Path

from ..launching import free_port, torchrun_command

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart_synthetic.py"
ARGS = ["--num-epochs", "1", "--num-train-samples", "600"]


def _run(command):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_quickstart_with_plain_python():
    out = _run([sys.executable, str(QUICKSTART), *ARGS])
    assert "1 process(es) on cpu" in out and "eval accuracy:" in out


def test_the_quickstart_trains_under_torchrun_on_two_cpu_processes():
    """The quickstart, under torchrun, trains on two CPU processes without a code change."""
    out = _run(torchrun_command(QUICKSTART, *ARGS))
    # printed once (main process only), and the run really spans two processes
    assert out.count("Starting training run") == 1
    assert "2 process(es) on cpu" in out
    assert out.count("eval accuracy:") == 1


EXIT_SCRIPT = """
import atexit
import os
import sys

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import Trainer


def report_at_exit():
    with open(os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.txt"), "w") as report:
        report.write(f"process group alive at exit: {torch.distributed.is_initialized()}")


# registered before the Trainer exists, so it runs after the Trainer's own exit handler
atexit.register(report_at_exit)
model = nn.Linear(4, 1)
trainer = Trainer(model, loss_func=nn.MSELoss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
trainer.train(train_dataset=TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), num_epochs=1,
              per_device_batch_size=4)
"""


def test_the_process_group_is_destroyed_before_the_interpreter_shuts_down(tmp_path):
    # left alive into shutdown, gloo's threads can abort a process that trained successfully
    script = tmp_path / "train_and_exit.py"
    script.write_text(EXIT_SCRIPT)
    out = _run(torchrun_command(script, tmp_path))
    reports = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert reports == ["process group alive at exit: False"] * 2, out


def test_accelerate_launch_starting_one_of_two_processes_is_refused(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom pytorch_accelerated.trainer import Trainer\nmodel = torch.nn.Linear(2,"
        " 2)\nTrainer(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(),"
        " lr=0.1))\nprint('created')\n"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(tmp_path / "hf"),
    }  # no accelerate config of the user's
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
        str(script),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0 and "created" not in result.stdout, result.stdout + result.stderr
    assert "started one" in result.stderr and "--multi_gpu" in result.stderr, result.stderr[-2000:]
