"""Keeping several processes in step where one of them can decide alone: which training state to
resume from, whether saving or loading one failed, and whether to stop.

Nothing here communicates during the loop's steps. The state to resume from is agreed with one
``gather_object`` when ``train`` starts. A stop is agreed through the store the processes met
in (torch.distributed's TCPStore), and only by the processes that raised
:class:`StopTrainingError`: a process that did not raise it learns of the stop when its next
collective fails (the stopping process has left), reads the reason from the store and fails
with it. A process whose training fails with any other error leaves it in the store the same
way, so that the others, whose next collective fails once it has exited, name it. Written here
because torch and accelerate offer neither: a collective cannot be cancelled, and a gloo process
group can be broken only by its process ending.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from .callbacks import StopTrainingError
from .position import RunPosition
from .run_history import RunHistory
from .safe_files import CheckpointError
from .state_format import MANIFEST_NAME

#: How long a process that raised StopTrainingError waits for the others to raise it at the same
#: step before it concludes that it raised it alone. Processes that raise it together arrive within
#: a step of each other (within milliseconds after ``trainer.any_process``).
STOP_AGREEMENT_TIMEOUT_S = 60.0
_POLL_INTERVAL_S = 0.02
_KEY_PREFIX = "pytorch_accelerated/stop"
_run_numbers = itertools.count()  # every process runs train() as often as the others: the same number


class ProcessesOutOfStepError(RuntimeError):
    """The processes of a distributed run stopped doing the same thing (one of them raised
    :class:`StopTrainingError` and the others did not, or they stopped at different steps, or one
    of them failed): the run fails on every process, with the reason."""


def any_process(accelerator: Accelerator, flag: bool | torch.Tensor) -> bool:
    """True on every process if ``flag`` is true on any (call it on every process at the same point)."""
    if accelerator.num_processes == 1:
        return bool(flag)
    value = torch.as_tensor(flag, device=accelerator.device).to(torch.float32).reshape(())
    return bool(accelerator.reduce(value, "sum").item() > 0)


# ---------------------------------------------------------------------------------- resuming


def on_every_process(accelerator: Accelerator, action: Callable, what: str):
    """Run ``action`` on every process; if it fails on any, raise on all of them (never leave
    the others waiting in a collective for a process that gave up)."""
    error = None
    try:
        result = action()
    except Exception as caught:  # re-raised below, after the processes agree
        error = caught
    if any_process(accelerator, error is not None):
        if error is not None:
            raise raised_on_every_process(error)
        theirs = CheckpointError(f"Another process failed to {what}; its error is in its output.")
        raise raised_on_every_process(theirs)
    return result


def agree_on_training_state(
    accelerator: Accelerator, find: Callable[[], Path | None], resume_from
) -> Path | None:
    """The state ``find()`` gives, once every process has found the same one (the same manifest;
    the paths may differ). Otherwise a :class:`CheckpointError` on every process, naming what each
    one found; an error in ``find`` on one process is raised on every process too."""
    if accelerator.num_processes == 1 or not _distributed():
        return find()
    candidate, error = None, None
    try:
        candidate = find()
    except Exception as caught:  # re-raised below, once every process knows
        error = caught
    seen = gather_object([_describe_training_state(accelerator.process_index, candidate, error)])
    if error is not None:
        raise raised_on_every_process(error)
    if len({found["identity"] for found in seen}) == 1:
        return candidate
    found = "; ".join(f"process {found['process']}: {found['summary']}" for found in seen)
    raise raised_on_every_process(
        CheckpointError(
            "The processes found different training states to resume from"
            f" (resume_from={str(resume_from)!r}): {found}. Every process must resume from the same state:"
            " keep the training states on a file system that every process shares, or copy the same state"
            " folder to every machine and pass it as resume_from."
        )
    )


def raised_on_every_process(error: Exception) -> Exception:
    """Mark ``error`` as one that every process raises together, once they agreed to (``any_process``),
    so that no process names another's as its cause (a :class:`ProcessesOutOfStepError`).

    Args:
        error: the exception each process is about to raise.

    Returns:
        ``error`` itself: ``raise raised_on_every_process(ValueError(...))``.
    """
    error._raised_on_every_process = True  # exceptions take no weak references: the mark rides on it
    return error


def _describe_training_state(process_index: int, candidate: Path | None, error: Exception | None) -> dict:
    if error is not None:
        return {
            "process": process_index,
            "identity": f"failed on {process_index}",
            "summary": f"failed: {error}",
        }
    if candidate is None:
        return {"process": process_index, "identity": None, "summary": "none found"}
    try:
        manifest = (Path(candidate) / MANIFEST_NAME).read_bytes()
    except OSError as error:
        return {
            "process": process_index,
            "identity": f"unreadable {candidate}",
            "summary": f"{candidate} ({error.strerror or error})",
        }
    summary = str(candidate)
    try:
        steps = json.loads(manifest)["position"]["completed_update_steps"]
        summary = f"{candidate} (update step {steps})"
    except (ValueError, KeyError, TypeError):
        pass
    return {"process": process_index, "identity": hashlib.sha256(manifest).hexdigest(), "summary": summary}


# ---------------------------------------------------------------------------------- stopping


class StopAgreement:
    """One training run's agreement on a :class:`StopTrainingError` across processes.

    - :meth:`stopping_cleanly`: the block of the run's start and epochs, which a :class:`StopTrainingError`
      ends (on every process: :meth:`agree`), and where any other error is explained (:meth:`explain`).
    - :meth:`agree`, called by a process that caught it: returns once every process has stopped
      at the same step (a clean stop); raises :class:`ProcessesOutOfStepError` if the others did
      not stop within :data:`STOP_AGREEMENT_TIMEOUT_S`, or stopped at other steps.
    - :meth:`explain`, called with any other error: if a process stopped alone or failed (the usual
      causes of a failed collective here), raises :class:`ProcessesOutOfStepError` naming its reason;
      otherwise leaves this process's error for the others to name, and returns.

    Args:
        accelerator: the run's accelerator (its processes and store).
        position: the run's position, compared between the processes that stop.
        run_history: the run's history (its current epoch, compared too).
    """

    def __init__(self, accelerator: Accelerator, position: RunPosition, run_history: RunHistory):
        self.process_index = accelerator.process_index
        self.num_processes = accelerator.num_processes
        self.position = position
        self.run_history = run_history
        self.store = _default_store() if accelerator.num_processes > 1 and _distributed() else None
        # a run number every process counts alike, and torchrun's restart: no key of an earlier run is read
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self.prefix = f"{_KEY_PREFIX}/{attempt}/{next(_run_numbers)}" if self.store is not None else ""

    @contextlib.contextmanager
    def stopping_cleanly(self, on_stop: Callable[[StopTrainingError], None]) -> Iterator[None]:
        """Run the block of the run's start and epochs: a :class:`StopTrainingError` ends it, agreed by
        every process, then ``on_stop(error)`` runs; another error is explained, then propagates."""
        try:
            yield
        except StopTrainingError as error:
            self.agree(error)
            on_stop(error)
        except Exception as error:
            self.explain(error)
            raise

    def agree(self, error: StopTrainingError) -> None:
        if self.store is None:
            return
        mine = {"process": self.process_index, "position": self._where(), "reason": str(error)}
        self.store.set(self._key(self.process_index), json.dumps(mine))
        stops = self._wait_for_every_stop()
        if stops is not None and all(stop["position"] == mine["position"] for stop in stops):
            return
        if stops is not None:
            at = "; ".join(
                f"process {stop['process']} at {_describe_position(stop['position'])}" for stop in stops
            )
            message = f"The processes raised StopTrainingError at different steps ({at}): {error}"
        else:
            message = (
                f"StopTrainingError was raised on process {self.process_index} ({error}), and the other "
                f"processes went on without it for {STOP_AGREEMENT_TIMEOUT_S:g} s."
            )
        self._fail(message, cause=error)

    def explain(self, error: Exception) -> None:
        if self.store is None or getattr(error, "_raised_on_every_process", False):
            return
        self._fail_if_another_stopped(error)
        self._fail_if_another_failed(error)
        self._set_quietly(self._failure_key(self.process_index), _summary(error))

    def _fail_if_another_stopped(self, error: Exception) -> None:
        stops = self._published_stops()
        if stops:
            reasons = "; ".join(f"process {stop['process']}: {stop['reason']}" for stop in stops)
            self._fail(
                f"StopTrainingError was raised on another process only ({reasons}), so this process's next "
                f"collective failed ({_first_line(error)}).",
                cause=error,
            )

    def _fail_if_another_failed(self, error: Exception) -> None:
        # the same error as another's was raised on every process (the same bug there): not its cause
        mine = _summary(error)
        failures = [(index, reason) for index, reason in self._published_failures() if reason != mine]
        if failures:
            failed = "; ".join(f"process {index} ({reason})" for index, reason in failures)
            message = (
                f"Training failed on {failed}; this process failed after it ({_first_line(error)}). The run "
                "fails on every process; the failing process's output has its traceback."
            )
            print(f"[process {self.process_index}] {message}", file=sys.stderr, flush=True)
            raise ProcessesOutOfStepError(message) from error

    # ---------------------------------------------------------------- the store

    def _fail(self, message: str, cause: BaseException) -> None:
        message = (
            f"{message} The run fails on every process. To stop cleanly, raise StopTrainingError on every "
            "process at the same step: decide with trainer.any_process(flag)."
        )
        # said at once: a launcher may end this process as soon as another one has failed
        print(f"[process {self.process_index}] {message}", file=sys.stderr, flush=True)
        self._set_quietly(f"{self.prefix}/failed", str(self.process_index))
        raise ProcessesOutOfStepError(message) from cause

    def _where(self) -> list[int]:
        position = self.position
        return [position.completed_update_steps, self.run_history.current_epoch, position.epoch_batches]

    def _key(self, process_index: int) -> str:
        return f"{self.prefix}/{process_index}"

    def _failure_key(self, process_index: int) -> str:
        return f"{self.prefix}/error/{process_index}"

    def _wait_for_every_stop(self) -> list[dict] | None:
        """Every process's stop, or None once one failed or the time is up."""
        keys = [self._key(index) for index in range(self.num_processes)]
        deadline = time.monotonic() + STOP_AGREEMENT_TIMEOUT_S
        while not self.store.check(keys):
            if self.store.check([f"{self.prefix}/failed"]) or time.monotonic() > deadline:
                return None
            time.sleep(_POLL_INTERVAL_S)
        return [json.loads(self.store.get(key)) for key in keys]

    def _published_stops(self) -> list[dict]:
        stops = []
        try:
            for index in range(self.num_processes):
                if index != self.process_index and self.store.check([self._key(index)]):
                    stops.append(json.loads(self.store.get(self._key(index))))
        except Exception:  # noqa: BLE001 - the store went with a failed process: the original error stands
            return []
        return stops

    def _published_failures(self) -> list[tuple[int, str]]:
        others = [index for index in range(self.num_processes) if index != self.process_index]
        try:
            return [
                (index, self.store.get(self._failure_key(index)).decode())
                for index in others
                if self.store.check([self._failure_key(index)])
            ]
        except Exception:  # noqa: BLE001 - the store went with a failed process: the original error stands
            return []

    def _set_quietly(self, key: str, value: str) -> None:
        try:
            self.store.set(key, value)
        except Exception:  # noqa: BLE001 - the error raised next says it all
            pass


def _describe_position(position: list[int]) -> str:
    steps, epoch, batches = position
    return f"update step {steps}, epoch {epoch}, batch {batches}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _summary(error: BaseException) -> str:
    """The error's first line, and its last where it has more: torch re-raises a dataloader worker's
    error with its traceback, which ends with the original error."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return _first_line(error) if len(lines) < 2 else f"{_first_line(error)} ... {lines[-1]}"


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _default_store():
    # The store every process met in at init_process_group (torchrun's agent holds it under torchrun).
    try:
        return torch.distributed.distributed_c10d._get_default_store()
    except (RuntimeError, AttributeError, ValueError):
        return None
