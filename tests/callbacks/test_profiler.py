"""ProfilerCallback inside real runs: the window, the trace, nothing outside the window."""

import json

import pytest
import torch

from pytorch_accelerated.callbacks import ProfilerCallback, TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training


class ProfilerAlive(TrainerCallback):
    """Whether the profiler callback holds a profiler during each step (read at the step's end)."""

    def __init__(self, profiler_callback):
        self.profiler_callback = profiler_callback
        self.alive = []

    def on_train_step_end(self, trainer, **kwargs):
        self.alive.append(self.profiler_callback.profiler is not None)


def profiler_steps(trace_path):
    events = json.loads(trace_path.read_text())["traceEvents"]
    return sorted(event["name"] for event in events if event.get("name", "").startswith("ProfilerStep#"))


def test_the_window_is_profiled_into_one_trace_and_nothing_outside_it(tmp_path):
    callback = ProfilerCallback(tmp_path / "profiler", start_step=4, end_step=6, warmup_steps=1)
    alive = ProfilerAlive(callback)
    run_tiny_training(callbacks=[callback, alive], num_epochs=2)  # 16 steps
    # created one step early (the schedule's warmup), dropped after the window's last step
    assert alive.alive == [False, False, True, True, True, True] + [False] * 10
    assert len(callback.trace_paths) == 1
    trace = callback.trace_paths[0]
    assert (
        trace.parent == tmp_path / "profiler"
        and trace.name.startswith("rank0.")
        and trace.name.endswith(".pt.trace.json")
    )
    assert len(profiler_steps(trace)) == 3  # steps 4, 5 and 6 only
    assert callback.profiler is None


def test_memory_on_request_and_a_window_cut_short_by_the_run_end(tmp_path):
    callback = ProfilerCallback(tmp_path, start_step=15, end_step=40, record_memory=True)
    run_tiny_training(callbacks=[callback], num_epochs=2)  # the run ends after step 16
    assert len(callback.trace_paths) == 1 and callback.profiler is None
    events = json.loads(callback.trace_paths[0].read_text())["traceEvents"]
    assert any(event.get("name") == "[memory]" for event in events)


def test_a_window_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="start_step <= end_step"):
        ProfilerCallback(tmp_path, start_step=5, end_step=4)
    with pytest.raises(ValueError, match="start_step <= end_step"):
        ProfilerCallback(tmp_path, start_step=0, end_step=4)


class FailAtStep(TrainerCallback):
    def __init__(self, step):
        self.step, self.steps = step, 0

    def on_train_step_end(self, trainer, **kwargs):
        self.steps += 1
        if self.steps == self.step:
            raise RuntimeError("failed inside the window")


def test_a_run_failing_inside_the_window_stops_the_profiler(tmp_path):
    callback = ProfilerCallback(tmp_path / "profiler", start_step=2, end_step=5)
    with pytest.raises(RuntimeError, match="inside the window"):
        run_tiny_training(callbacks=[callback, FailAtStep(3)], num_epochs=1)
    assert callback.profiler is None
    assert not torch._C._autograd._profiler_enabled()  # the process is no longer profiled
