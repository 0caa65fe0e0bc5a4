"""Faults injected for real, and what survives them: signals sent with os.kill to a child process;
full disks (a small tmpfs) and read-only folders (a read-only mount); logs of a run branched
from an older state. (Killed writes and corrupted states are in tests/core/test_training_state.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.launching import REPO_ROOT, launch_env

# ---------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("scenario", ["crash", "two", "twice", "twice-signalled"])
def test_sigterm_acts_as_without_the_callback_however_train_ended(tmp_path, scenario):
    """After train() (returned or raised), SIGTERM ends the process; during training, a second
    SIGTERM ends it too, also with the callback's events fired twice."""
    command = [sys.executable, str(REPO_ROOT / "tests/callbacks/signal_scenario.py"), scenario, str(tmp_path / "states")]
    done = subprocess.run(command, cwd=REPO_ROOT, env=launch_env(tmp_path), capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == -signal.SIGTERM, output
    assert "RecursionError" not in output
    assert "still running after SIGTERM" not in output
    if scenario != "twice-signalled":
        assert "handlers restored" in done.stdout, output
