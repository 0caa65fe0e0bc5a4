"""One process of two at fault, for real (two CPU processes, gloo, launched with torchrun): it cannot
see the training states, it raises StopTrainingError alone. Never a hang; the reason on every process.
And dataloader workers started at every epoch of a two-process run, where a fork can hang, and what
they feed the model."""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from pytorch_accelerated.trainer.dataloader_workers import fork_can_hang, start_workers_safely
from pytorch_accelerated.trainer.testing import make_tiny_dataset

from ..launching import REPO_ROOT, run_launch, tail, torchrun_command
from . import process_fault_scenarios as scenarios
from .helpers import is_running

NUM_PROCESSES = 2
SCRIPT = Path(__file__).resolve().with_name("process_fault_scenarios.py").relative_to(REPO_ROOT)


def launch(names: list[str], tmp_path: Path) -> tuple[list[dict], dict[str, list[dict]], float]:
    out = tmp_path / "out"
    command = torchrun_command(SCRIPT, ",".join(names), out, num_processes=NUM_PROCESSES)
    started = time.monotonic()
    status, output = run_launch(command, tmp_path)
    elapsed = time.monotonic() - started
    results = {}
    for name in names:
        paths = [out / f"{name}_rank{rank}.json" for rank in range(NUM_PROCESSES)]
        found = [json.loads(path.read_text()) for path in paths if path.exists()]
        errors = [result["error"] for result in found if "error" in result]
        if errors or len(found) != NUM_PROCESSES:
            pytest.fail(
                f"scenario {name!r}: {errors or 'no result from every process'}\n{tail(output)}",
                pytrace=False,
            )
        results[name] = found
    return status, results, elapsed


@pytest.fixture(scope="module")
def fault_runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("process_faults")
    # the stop of one process breaks the process group: it runs last
    return launch(
        ["resume_unshared", "background_write_fails", "stop_every_process", "stop_one_process"], tmp_path
    )


def test_a_state_missing_on_one_process_fails_every_process_naming_each(fault_runs):
    """A resume where one process sees no state fails on every process, naming what each saw."""
    _, results, _ = fault_runs
    per_process = results["resume_unshared"]
    # only the main process's folder
    assert per_process[0]["saved"] and not per_process[1]["saved"], per_process
    for variant in ("latest", "folder"):
        for result in per_process:
            seen = result[variant]
            assert seen["error_type"] == "CheckpointError", seen
            assert "different training states" in seen["message"], seen
            assert "process 0: " in seen["message"] and "step-" in seen["message"], seen
            assert "process 1: " in seen["message"], seen
            assert "file system that every process shares" in seen["message"], seen
    assert per_process[0]["latest"]["message"] == per_process[1]["latest"]["message"]
    assert "process 1: none found" in per_process[1]["latest"]["message"]


def test_a_failed_background_write_is_raised_on_every_process(fault_runs):
    """A failed background write is raised on every process at the next save or the end."""
    _, results, _ = fault_runs
    main, other = results["background_write_fails"]
    for case, failed, raised_at in (("next_save", "step-2", 4), ("run_end", "step-8", 8)):
        for result in (main[case], other[case]):
            assert result["error_type"] == "CheckpointError", result
            assert result["completed_update_steps"] == raised_at, result
        assert f"{failed}' in the background failed: FileExistsError" in main[case]["message"], main[case]
        assert f"{failed}' in the background; its error is in its output" in other[case]["message"], other[
            case
        ]


def test_stop_raised_on_every_process_at_the_same_step_stops_them_cleanly(fault_runs):
    _, results, _ = fault_runs
    steps = [result["completed_update_steps"] for result in results["stop_every_process"]]
    assert steps == [scenarios.STOP_STEP - 1] * NUM_PROCESSES


def test_stop_raised_on_one_process_fails_every_process_with_its_reason(fault_runs):
    """A stop raised on one process only fails every process with its reason."""
    status, results, elapsed = fault_runs
    for result in results["stop_one_process"]:
        assert result["error_type"] == "ProcessesOutOfStepError", result
        assert scenarios.STOP_REASON in result["message"], result
        assert "trainer.any_process" in result["message"], result
    stopper, other = results["stop_one_process"][1], results["stop_one_process"][0]
    assert "raised on process 1" in stopper["message"], stopper
    assert "another process only" in other["message"], other
    # the stopping process gave the other one the agreement's time to stop too, not a collective's timeout
    assert stopper["seconds"] < scenarios.STOP_AGREEMENT_TIMEOUT_S + 20, stopper
    assert status == 0


# ---------------------------------------------------------------------------------------- dataloader workers


@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory):
    return launch(["workers"], tmp_path_factory.mktemp("workers"))


def test_workers_start_at_every_epoch_of_a_two_process_run_without_hanging(worker_runs):
    """6 epochs x 2 workers x 2 processes, with the loggers' and the progress bar's threads alive;
    the watchdog reports a hang. Where fork can hang in PyOS_AfterFork_Child (CPython gh-112275),
    the workers start from a forkserver."""
    status, results, _ = worker_runs
    assert status == 0
    expected = "forkserver" if fork_can_hang() else "fork"
    for result in results["workers"]:
        assert result["start_method"] == expected, result
        assert len(result["epoch_seconds"]) == scenarios.WORKERS["num_epochs"], result
        assert set(result["threads_at_epoch_start"][0]) - {"MainThread"}  # threads are alive at the fork


_FORKED_AND_SAFE_BATCHES = """
import sys, torch
from torch.utils.data import DataLoader, Dataset
from pytorch_accelerated.trainer.dataloader_workers import start_workers_safely
from pytorch_accelerated.trainer.testing import make_tiny_dataset


class NoisyDataset(Dataset):  # noise drawn in the worker, from the seed the main process gives it
    def __init__(self):
        self.inner = make_tiny_dataset(48)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        inputs, target = self.inner[index]
        return inputs + 0.1 * torch.randn_like(inputs), target


def three_epochs(start_method):
    loader = DataLoader(
        NoisyDataset(), batch_size=4, shuffle=True, num_workers=2, multiprocessing_context=start_method
    )
    start_workers_safely(loader)
    torch.manual_seed(0)
    batches = [torch.cat([inputs.flatten(), target.flatten()]) for _ in range(3) for inputs, target in loader]
    return loader.multiprocessing_context.get_start_method(), batches


if __name__ == "__main__":
    forked_with, forked = three_epochs("fork")
    safe_with, safe = three_epochs(None)
    assert len(forked) == len(safe) == 36 and all(map(torch.equal, forked, safe)), "the batches differ"
    print(forked_with, safe_with)
"""


def test_workers_started_safely_give_the_batches_forked_ones_give(tmp_path):
    """Started from the forkserver, workers give the batches forked ones give (order, worker seeds);
    a start method the user chose is kept. In a fresh single-threaded process, where forking is safe
    (forking a gloo process is what can hang: its C++ threads enter Python, CPython gh-112275)."""
    import subprocess

    script = tmp_path / "batches.py"
    script.write_text(_FORKED_AND_SAFE_BATCHES)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    expected = "forkserver" if fork_can_hang() else "fork"
    assert done.stdout.split() == ["fork", expected]


def test_the_interpreters_whose_fork_can_hang():
    assert fork_can_hang((3, 11, 7), "cpython") and fork_can_hang((3, 10, 14), "cpython")
    assert not fork_can_hang((3, 11, 10), "cpython") and not fork_can_hang((3, 12, 0), "cpython")
    assert not fork_can_hang((3, 11, 7), "pypy")


@pytest.mark.skipif(not fork_can_hang(), reason="this Python forks safely: workers are forked as usual")
def test_a_dataset_the_forkserver_cannot_receive_is_refused_at_set_up():
    """A dataset the forkserver cannot receive is refused at set up with the fix."""

    class LocalDataset(torch.utils.data.Dataset):  # a local class cannot be pickled
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return torch.zeros(2)

    with pytest.raises(TypeError, match="cannot be pickled.*multiprocessing_context='fork'"):
        start_workers_safely(DataLoader(LocalDataset(), num_workers=2))
    loader = DataLoader(
        make_tiny_dataset(8), batch_size=4, num_workers=2, worker_init_fn=functools.partial(print, "worker")
    )
    start_workers_safely(loader)
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    assert loader.worker_init_fn.worker_init_fn.args == ("worker",)  # the user's still runs, after ours
    kept = DataLoader(make_tiny_dataset(8), num_workers=2, multiprocessing_context="spawn")
    start_workers_safely(kept)
    assert kept.multiprocessing_context.get_start_method() == "spawn"


_KILLED_WITH_ITS_WORKERS = """
import multiprocessing.forkserver, os, signal, sys
from torch.utils.data import DataLoader
from pytorch_accelerated.trainer.dataloader_workers import SAFE_START_METHOD, start_workers_safely
from pytorch_accelerated.trainer.testing import make_tiny_dataset

if __name__ == "__main__":
    loader = DataLoader(make_tiny_dataset(16), batch_size=4, num_workers=2)
    start_workers_safely(loader)  # the trainer's way: the forkserver where forking can hang
    assert loader.multiprocessing_context.get_start_method() == SAFE_START_METHOD
    batches = iter(loader)
    next(batches)
    workers = [worker.pid for worker in batches._workers]
    print(multiprocessing.forkserver._forkserver._forkserver_pid, *workers, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(not fork_can_hang(), reason="this Python forks safely: no forkserver is started")
def test_a_process_killed_with_sigkill_leaves_no_forkserver_behind(tmp_path):
    """A training process killed with SIGKILL leaves no forkserver behind.

    The forkserver (and the workers forked from it, whose watchdog watches the forkserver) used
    to outlive a SIGKILLed training process, holding hundreds of MB each; and a worker still starting
    when it was killed outlived the forkserver (seen under load)."""
    import subprocess

    script = tmp_path / "killed.py"
    script.write_text(_KILLED_WITH_ITS_WORKERS)
    # output to files, not pipes: a pipe stays open while any process that inherited it lives (a
    # dataloader worker finishing under load), and waiting for its end is not what is tested here
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        killed = subprocess.Popen([sys.executable, str(script)], stdout=out, stderr=err, cwd=tmp_path)
        returncode = killed.wait(timeout=120)
    assert returncode == -9, (tmp_path / "err.txt").read_text()
    forkserver_pid, *worker_pids = map(int, (tmp_path / "out.txt").read_text().split())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(map(is_running, [forkserver_pid, *worker_pids])):
        time.sleep(0.1)
    assert not is_running(forkserver_pid), "the forkserver outlived the training process"
    assert not list(filter(is_running, worker_pids)), "a dataloader worker outlived the training process"
