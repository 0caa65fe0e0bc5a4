"""``torch.profiler`` over a window of training steps, a trace per process."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pytorch_accelerated.trainer import TrainerCallback


class ProfilerCallback(TrainerCallback):
    """Profiles the training steps ``start_step`` to ``end_step`` (batches, counted from 1 over the
    run, inclusive) with ``torch.profiler`` and writes one trace per process into ``output_dir``,
    as ``rank<r>.<timestamp>.pt.trace.json`` (``torch.profiler.tensorboard_trace_handler``'s
    format: open it with TensorBoard's profiler plugin, https://ui.perfetto.dev or chrome://tracing).

    The profiler is created ``warmup_steps`` steps before the window (its schedule's warmup, whose
    events are discarded), records the window's steps (each from its start to the next step's
    start: forward, backward, optimizer update), and is stopped and dropped after the window's last
    step, or at the end of the run (or the error that ends it) if that comes first. Outside that span no
    profiler exists: a
    step costs one integer comparison. ``record_memory=True`` also records tensor allocations and
    shapes (``profile_memory``, ``record_shapes``); ``with_stack=True`` the Python stacks. CUDA
    activity is recorded when the trainer's device is a GPU. ``callback.trace_paths`` lists the
    traces this process wrote.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        start_step: int = 5,
        end_step: int = 7,
        warmup_steps: int = 1,
        record_memory: bool = False,
        with_stack: bool = False,
    ):
        if not (isinstance(start_step, int) and isinstance(end_step, int) and 1 <= start_step <= end_step):
            raise ValueError(
                f"Need 1 <= start_step <= end_step (training steps, from 1); got {start_step}..{end_step}."
            )
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        self.output_dir = Path(output_dir)
        self.start_step = start_step
        self.end_step = end_step
        self.warmup_steps = min(warmup_steps, start_step - 1)
        self.record_memory = record_memory
        self.with_stack = with_stack
        self.profiler: torch.profiler.profile | None = None
        self.trace_paths: list[Path] = []
        self._step = 0
        self._first_step = start_step - self.warmup_steps
        self._worker_name = "rank0"
        self._existing: set[Path] = set()  # traces in output_dir before this window's

    def on_training_run_start(self, trainer, **kwargs):
        self._step = 0
        self._worker_name = f"rank{trainer.process_index}"

    def on_train_step_start(self, trainer, **kwargs):
        self._step += 1
        if self.profiler is not None:
            self.profiler.step()
            if self._step > self.end_step:
                self._stop()
        elif self._step == self._first_step:
            self._start(trainer)

    def on_training_run_end(self, trainer, **kwargs):
        if self.profiler is not None:
            self._stop()

    def on_training_run_error(self, trainer, error, **kwargs):
        # a run failing inside the window would leave torch's profiler recording the whole process
        if self.profiler is not None:
            self._stop()

    def _start(self, trainer) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if trainer.device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(
                wait=0, warmup=self.warmup_steps, active=self.end_step - self.start_step + 1, repeat=1
            ),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(
                str(self.output_dir), worker_name=self._worker_name
            ),
            record_shapes=self.record_memory,
            profile_memory=self.record_memory,
            with_stack=self.with_stack,
        )
        self._existing = set(self.output_dir.glob(f"{self._worker_name}.*.pt.trace.json"))
        self.profiler.start()

    def _stop(self) -> None:
        profiler, self.profiler = self.profiler, None
        profiler.stop()
        new = set(self.output_dir.glob(f"{self._worker_name}.*.pt.trace.json")) - self._existing
        self.trace_paths.extend(sorted(new))
