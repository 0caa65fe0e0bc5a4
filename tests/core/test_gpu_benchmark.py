"""benchmarks/gpu.py, the table a lent GPU fills in one command, runs its CPU dry run: the user's own
Dataset row beside the TensorDataset one, both loops ending at the same loss (issue 25, point 4)."""

import sys

from ..launching import REPO_ROOT, run_launch, tail


def test_the_gpu_benchmark_dry_runs_on_the_cpu_with_the_users_dataset_row(tmp_path):
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "gpu.py"),
        "--device",
        "cpu",
        "--workloads",
        "mlp",
        "mlp-user",
        "--modes",
        "fp32",
        "--steps",
        "20",
    ]
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)
    rows = [line.split() for line in output.splitlines() if line.startswith(("mlp ", "mlp-user "))]
    assert [row[:2] for row in rows] == [["mlp", "fp32"], ["mlp-user", "fp32"]], tail(output)
    assert "All losses agree within tolerance." in output, tail(output)
