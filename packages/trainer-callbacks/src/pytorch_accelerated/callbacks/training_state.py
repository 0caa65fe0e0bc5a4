"""Saving training states as a run goes, so that an interrupted run resumes exactly."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch

from pytorch_accelerated.trainer import (
    CheckpointError,
    StopTrainingError,
    TrainerCallback,
    find_latest_training_state,
    list_training_states,
    remove_training_state,
)

from pytorch_accelerated.schedulers._arguments import check_positive_int

_HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SaveTrainingStateCallback(TrainerCallback):
    """Saves the full training state (``Trainer.save_training_state``) into folders inside
    ``save_dir``: every ``save_every_n_steps`` optimizer updates, every ``save_every_n_epochs``
    epochs and/or every ``save_every_n_minutes`` minutes, when the run starts, and when it ends
    (unless ``save_at_end=False``). Only the newest ``max_checkpoints`` (3) are kept (all of them
    with ``None``). The arguments after ``save_dir`` are keyword-only (0.1.61 took its second positional
    argument as ``save_every_n_epochs``).

    Resume an interrupted run with ``trainer.train(..., resume_from="latest")``: the same script
    then starts a new run the first time and continues the newest complete state after that. The
    state saved when a run starts makes even a run interrupted before its first periodic save
    resume (its logs included) rather than start again.

    - Each state is written atomically, by the main process while the others wait: a folder that
      exists is complete, and a write that was killed leaves the earlier states as they were. A
      state pruned is renamed out of the listing before it is deleted (a kill then leaves none half-deleted).
    - With ``handle_signals=True``, SIGTERM or SIGINT (a preemption, Ctrl-C) makes every process
      save a state at the next update (or epoch end) and stop the run cleanly; a second signal
      acts as it would have without this callback. Signals are handled only when ``train`` runs
      in the main thread.
    - With ``max_time`` (Lightning's name: ``"03:50:00"``, ``"00:03:50:00"``, a ``timedelta`` or
      seconds), the same happens once this ``train()`` call has run that long (a job's time
      limit): the state saved continues the run with ``resume_from="latest"``, with a time budget
      of its own; ``stopped_by_time_limit`` says so.
    - A run that does not resume refuses a ``save_dir`` that already holds training states, so
      one run's states are never pruned or mixed with another's.
    - With ``asynchronous=True``, a save blocks training only while the state is copied to host
      memory; the main process writes it in the background (``Trainer.save_training_state``), one
      at a time, and the run's end waits for it. A state saved when the run starts, on a signal, and
      at the run's end, is written before training goes on. While a state is written, the
      ``max_checkpoints`` before it are kept: a folder never holds fewer complete states than that.

    On several processes, the signal and the timer are agreed on at every update with one tiny
    collective on the CPU (gloo), so the processes stop and save together.
    The folders are named after the position: ``step-00000000-start`` at the start,
    ``step-00000120`` after an update,
    ``step-00000160-epoch-4-end`` after an epoch, ``step-00000163-end`` at the run's end
    (``-stopped`` when it was stopped early); ``saved_paths`` lists those this callback wrote, and
    ``stopped_by_signal`` names the signal that stopped the last run (None if none did).

    Args:
        save_dir: the folder the states are saved in (``"training_states"``, as in 0.1.61).
        save_every_n_steps: save after every this many optimizer updates.
        save_every_n_epochs: save after every this many epochs.
        save_every_n_minutes: save at the first update after this many minutes since the last save.
        save_at_end: save when the run ends (a run stopped by a signal has saved already).
        max_checkpoints: how many of the newest states to keep (3); ``None`` keeps all.
        handle_signals: save and stop on SIGTERM or SIGINT.
        max_time: save and stop once this ``train()`` call has run this long.
        asynchronous: write the states in the background (see above).
    """

    def __init__(
        self,
        save_dir: str | os.PathLike = "training_states",
        *,
        save_every_n_steps: int | None = None,
        save_every_n_epochs: int | None = None,
        save_every_n_minutes: float | None = None,
        save_at_end: bool = True,
        max_checkpoints: int | None = 3,
        handle_signals: bool = True,
        max_time: str | timedelta | float | None = None,
        asynchronous: bool = False,
    ):
        for name, value in (
            ("save_every_n_steps", save_every_n_steps),
            ("save_every_n_epochs", save_every_n_epochs),
            ("max_checkpoints", max_checkpoints),
        ):
            if value is not None:
                check_positive_int(name, value)
        if save_every_n_minutes is not None and not save_every_n_minutes > 0:
            raise ValueError(f"save_every_n_minutes must be > 0 or None, got {save_every_n_minutes!r}.")
        self.save_dir = Path(save_dir)
        self.save_every_n_steps = save_every_n_steps
        self.save_every_n_epochs = save_every_n_epochs
        self.save_every_n_minutes = save_every_n_minutes
        self.save_at_end = save_at_end
        self.max_checkpoints = max_checkpoints
        self.handle_signals = handle_signals
        self.asynchronous = asynchronous
        self.max_time = parse_max_time(max_time)
        #: Whether ``max_time`` stopped the last run (after saving a state that continues it).
        self.stopped_by_time_limit = False
        self._run_started_at = 0.0
        self.saved_paths: list[Path] = []
        self._signal_received: int | None = None
        #: The name of the signal that stopped the last run ("SIGTERM", "SIGINT"), or None.
        self.stopped_by_signal: str | None = None
        self._flags_group = None
        self._last_save_time = 0.0
        self._last_saved_position: tuple | None = None
        self._stopped_early = False

    def latest_training_state(self) -> Path | None:
        """The newest complete training state in ``save_dir``, or None; ``train(resume_from="latest")`` asks
        this."""
        return find_latest_training_state(self.save_dir)

    # ------------------------------------------------------------------ events

    def on_training_run_start(self, trainer, **kwargs):
        self._refuse_states_of_another_run(trainer)
        self._signal_received = None
        self.stopped_by_signal = None
        self._stopped_early = False
        self._last_saved_position = None
        self._last_save_time = self._run_started_at = time.monotonic()
        self.stopped_by_time_limit = False
        self._install_signal_handlers()
        if trainer.num_processes > 1 and (self.handle_signals or self.save_every_n_minutes or self.max_time):
            self._flags_group = _cpu_process_group()

    def on_save_point(self, trainer, point, **kwargs):
        if point == "run_start":
            # written before the first step, even with asynchronous: from here on, an interruption
            # resumes (in the run folders the loggers have claimed) instead of starting again
            self._save(trainer, point)
            return
        if point == "run_end":
            self._save_at_run_end(trainer)
            return
        signal_number, time_is_up, out_of_time = self._agreed_triggers(trainer)
        if signal_number or time_is_up or out_of_time or self._is_due(trainer, point):
            stops = signal_number or out_of_time
            # a state the run stops at is written first
            self._save(trainer, point, self.asynchronous and not stops)
        if out_of_time and not signal_number:
            self.stopped_by_time_limit = True  # the state saved is one to continue from
            raise StopTrainingError(
                f"Stopped at the time limit ({self.max_time}): the training state is saved in "
                f"{self.saved_paths[-1]}; continue with train(..., resume_from='latest')."
            )
        if signal_number:
            # the state saved is one to continue from
            self.stopped_by_signal = signal.Signals(signal_number).name
            raise StopTrainingError(
                f"Stopped by {self.stopped_by_signal}: the training state is saved in "
                f"{self.saved_paths[-1]}; continue with train(..., resume_from='latest')."
            )

    def on_stop_training_error(self, trainer, **kwargs):
        self._stopped_early = True

    def on_training_run_end(self, trainer, **kwargs):
        self._release()
        if self.asynchronous:
            self._prune(trainer)  # the run's end waited for the last state written in the background

    def on_training_run_error(self, trainer, error, **kwargs):
        self._release()

    def _release(self) -> None:
        """Put the signal handlers back and drop the flags' process group, however the run ended."""
        self._restore_signal_handlers()
        if self._flags_group is not None:
            torch.distributed.destroy_process_group(self._flags_group)
            self._flags_group = None

    # ------------------------------------------------------------------ when to save

    def _is_due(self, trainer, point: str) -> bool:
        if point == "update":
            every = self.save_every_n_steps
            return every is not None and trainer.completed_update_steps % every == 0
        every = self.save_every_n_epochs
        return every is not None and (trainer.run_history.current_epoch - 1) % every == 0

    def _agreed_triggers(self, trainer) -> tuple[int, bool, bool]:
        """(the signal received by any process, or 0; whether the main process's timer ran out; whether
        it reached ``max_time``)."""
        now, minutes = time.monotonic(), self.save_every_n_minutes
        time_is_up = minutes is not None and now - self._last_save_time >= 60 * minutes
        limit = self.max_time.total_seconds() if self.max_time is not None else None
        out_of_time = limit is not None and now - self._run_started_at >= limit
        main = trainer.is_world_process_zero
        flags = [self._signal_received or 0, int(time_is_up and main), int(out_of_time and main)]
        if self._flags_group is not None:
            agreed = torch.tensor(flags, dtype=torch.int64)
            torch.distributed.all_reduce(agreed, op=torch.distributed.ReduceOp.MAX, group=self._flags_group)
            flags = agreed.tolist()
        return flags[0], bool(flags[1]), bool(flags[2])

    def _save_at_run_end(self, trainer) -> None:
        if not self.save_at_end or self.stopped_by_signal is not None or self.stopped_by_time_limit:
            return
        if self._position(trainer) != self._last_saved_position:
            self._save(trainer, "run_end")

    # ------------------------------------------------------------------ saving and pruning

    def _save(self, trainer, point: str, asynchronous: bool = False) -> None:
        path = self.save_dir / self._folder_name(trainer, point)
        trainer.save_training_state(path, asynchronous=asynchronous)
        self.saved_paths.append(path)
        self._last_saved_position = self._position(trainer)
        self._last_save_time = time.monotonic()
        self._prune(trainer)

    def _prune(self, trainer) -> None:
        """Keep the newest ``max_checkpoints`` complete states (one being written is not listed yet)."""
        if trainer.is_world_process_zero and self.max_checkpoints is not None:
            for old in list_training_states(self.save_dir)[: -self.max_checkpoints]:
                remove_training_state(old)  # a kill while deleting it leaves no half-deleted state

    def _folder_name(self, trainer, point: str) -> str:
        name = f"step-{trainer.completed_update_steps:08d}"
        if point == "run_start":
            return f"{name}-start"
        if point == "epoch_end":
            return f"{name}-epoch-{trainer.run_history.current_epoch - 1}-end"
        if point == "run_end":
            return f"{name}-{'stopped' if self._stopped_early else 'end'}"
        return name

    @staticmethod
    def _position(trainer) -> tuple:
        return (
            trainer.completed_update_steps,
            trainer.run_history.current_epoch,
            trainer.completed_epoch_batches,
        )

    def _refuse_states_of_another_run(self, trainer) -> None:
        """Refuse a ``save_dir`` holding states that are not this run's past: those of another run,
        or, for a run resumed from an older state, the newer states of the run it branches from."""
        existing = list_training_states(self.save_dir) or self._damaged_states_refused()
        resumed = Path(trainer.resumed_from).resolve() if trainer.resumed_from is not None else None
        resumed_states = [path.resolve() for path in existing]
        if resumed in resumed_states:
            newer = existing[resumed_states.index(resumed) + 1 :]
            if newer:
                raise FileExistsError(
                    f"This run resumes from {trainer.resumed_from}, but {self.save_dir} also holds newer"
                    f" training states ({', '.join(path.name for path in newer)}) that this run would mix its"
                    " own with: move them elsewhere first, or resume from the latest."
                )
        elif existing:
            raise FileExistsError(
                f"{self.save_dir} already holds {len(existing)} training state(s) (newest:"
                f" {existing[-1].name}), and SaveTrainingStateCallback will not mix another run's states with"
                " them or prune them: continue that run with train(..., resume_from='latest'), or choose"
                " another save_dir."
            )

    def _damaged_states_refused(self) -> list[Path]:
        """Raise if ``save_dir`` holds only damaged states (not listed, so this run would write over
        them under their names); they are set aside as ``.<name>.damaged`` first."""
        try:
            found = find_latest_training_state(self.save_dir)
        except CheckpointError as error:
            raise FileExistsError(
                f"{self.save_dir} holds only damaged training states, kept as .<name>.damaged;"
                " SaveTrainingStateCallback will not write this run's beside them: choose another save_dir."
                f" ({error})"
            ) from error
        return [found] if found is not None else []  # one put back after a killed replacement

    # ------------------------------------------------------------------ signals

    def _install_signal_handlers(self) -> None:
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            _SIGNALS.subscribe(self)

    def _restore_signal_handlers(self) -> None:
        _SIGNALS.unsubscribe(self)

    def _on_signal(self, signal_number) -> bool:
        """Note the signal; False when this callback had already noted one (act as without it)."""
        if self._signal_received is not None:
            return False
        self._signal_received = signal_number
        return True


class _SignalDispatcher:
    """One SIGTERM/SIGINT handler for every running SaveTrainingStateCallback, installed by the
    first to subscribe and replaced by the handlers found then once the last has unsubscribed, in
    any order, so that two callbacks, or one listed twice, never leave it behind or call themselves.
    """

    def __init__(self):
        self._subscribers: list[SaveTrainingStateCallback] = []
        self._previous: dict[int, object] = {}
        self._pid = 0

    def subscribe(self, callback: SaveTrainingStateCallback) -> None:
        if not self._subscribers:
            self._pid = os.getpid()
            self._previous = {number: signal.signal(number, self._handle) for number in _HANDLED_SIGNALS}
        if callback not in self._subscribers:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: SaveTrainingStateCallback) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)
            if not self._subscribers:
                self._uninstall()

    def _uninstall(self) -> None:
        self._subscribers.clear()
        for number, previous in self._previous.items():
            if signal.getsignal(number) == self._handle:  # a handler set since then is left alone
                signal.signal(number, previous)
        self._previous = {}

    def _handle(self, signal_number, frame) -> None:
        if os.getpid() != self._pid:
            return  # a dataloader worker: it keeps serving batches until the main process stops
        noted = [callback._on_signal(signal_number) for callback in self._subscribers]
        if any(noted):
            print(
                f"{signal.Signals(signal_number).name} received: saving a training state at the next update, "
                "then stopping (send it again to stop at once).",
                file=sys.stderr,
                flush=True,
            )
            return
        previous = self._previous.get(signal_number, signal.SIG_DFL)
        self._uninstall()
        if callable(previous):
            previous(signal_number, frame)
        elif previous == signal.SIG_DFL:
            os.kill(os.getpid(), signal_number)


_SIGNALS = _SignalDispatcher()


def parse_max_time(max_time: str | timedelta | float | None) -> timedelta | None:
    """``max_time`` as a ``timedelta``: Lightning's ``"DD:HH:MM:SS"`` or ``"HH:MM:SS"``, or seconds."""
    if max_time is None or isinstance(max_time, timedelta):
        duration = max_time
    elif isinstance(max_time, str):
        parts = max_time.split(":")
        if len(parts) not in (3, 4) or not all(part.strip().isdigit() for part in parts):
            raise ValueError(f"max_time must be 'DD:HH:MM:SS' or 'HH:MM:SS' (Lightning's), got {max_time!r}.")
        days, hours, minutes, seconds = [0] * (4 - len(parts)) + [int(part) for part in parts]
        duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        duration = timedelta(seconds=max_time)
    if duration is not None and duration <= timedelta(0):
        raise ValueError(f"max_time must be longer than 0, got {max_time!r}.")
    return duration


def _cpu_process_group():
    """A gloo group over every process, so that agreeing on a flag never waits for an accelerator."""
    return torch.distributed.new_group(backend="gloo")
