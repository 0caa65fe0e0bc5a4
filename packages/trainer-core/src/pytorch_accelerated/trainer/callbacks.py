"""The callback protocol: :class:`TrainerCallback`, :class:`CallbackHandler` and :class:`StopTrainingError`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .trainer import Trainer


class StopTrainingError(Exception):
    """Raise from a hook or a callback to end the training run cleanly.

    The trainer catches it, fires ``on_stop_training_error`` and then the usual end-of-run
    hook and events, so checkpoints and logs are still written.

    On several processes, raise it on every process at the same step (decide with
    ``trainer.any_process(flag)``) to stop cleanly. Raised on one process only, every process
    fails with its reason (``ProcessesOutOfStepError``), rather than one ending while the
    others wait for it.
    """


class TrainerCallback:
    """Base class for callbacks: override only the events you need.

    Every event receives the trainer first; events that carry data receive it as keyword
    arguments, so an override may accept ``**kwargs`` to stay compatible with future additions.
    Each event runs after the trainer hook of the same stage, and callbacks run in list order.

    A callback with state that must survive a checkpoint overrides :meth:`state_dict` and
    :meth:`load_state_dict`; the values must be tensors, numbers, strings, booleans, ``None``,
    or lists, tuples and dicts of these. A training state (``Trainer.save_training_state``)
    stores the main process's state and restores it on every process; a callback whose state
    differs between processes (a metric accumulating its process's share) sets
    ``per_process_state = True``, and each process saves and restores its own.
    """

    #: True when each process's state differs and must be saved and restored per process.
    per_process_state: bool = False

    def on_init_end(self, trainer: Trainer, **kwargs): ...

    def on_training_run_start(self, trainer: Trainer, **kwargs): ...

    def on_train_epoch_start(self, trainer: Trainer, **kwargs): ...

    def on_train_step_start(self, trainer: Trainer, **kwargs): ...

    def on_train_step_end(self, trainer: Trainer, batch, batch_output: dict, **kwargs): ...

    def on_before_optimizer_step(self, trainer: Trainer, optimizer, **kwargs): ...

    def on_optimizer_step_end(self, trainer: Trainer, optimizer, **kwargs): ...

    def on_train_epoch_end(self, trainer: Trainer, **kwargs): ...

    def on_eval_epoch_start(self, trainer: Trainer, **kwargs): ...

    def on_eval_step_start(self, trainer: Trainer, **kwargs): ...

    def on_eval_step_end(self, trainer: Trainer, batch, batch_output: dict, **kwargs): ...

    def on_eval_epoch_end(self, trainer: Trainer, **kwargs): ...

    def on_training_run_epoch_end(self, trainer: Trainer, **kwargs): ...

    def on_training_run_end(self, trainer: Trainer, **kwargs): ...

    def on_evaluation_run_start(self, trainer: Trainer, **kwargs): ...

    def on_evaluation_run_end(self, trainer: Trainer, **kwargs): ...

    def on_stop_training_error(self, trainer: Trainer, stop_training_error: StopTrainingError, **kwargs): ...

    def on_save_point(self, trainer: Trainer, point: str, **kwargs):
        """A place where ``trainer.save_training_state`` captures a state that resumes exactly:
        every callback has handled the stage before it. ``point`` is ``"run_start"`` (before the
        first epoch of a run that does not resume), ``"update"`` (after each optimizer update's
        events), ``"epoch_end"`` (after each epoch's events) or ``"run_end"`` (once, when the run
        ends or was stopped, before ``training_run_end``)."""

    def state_dict(self) -> dict[str, Any]:
        """The callback's state to store in a checkpoint (empty by default)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict`."""


#: The events the trainer itself fires (``on_init_end`` first, then in the order a run reaches them).
TRAINER_EVENTS: tuple[str, ...] = (
    "on_init_end",
    "on_training_run_start",
    "on_train_epoch_start",
    "on_train_step_start",
    "on_train_step_end",
    "on_before_optimizer_step",
    "on_optimizer_step_end",
    "on_train_epoch_end",
    "on_eval_epoch_start",
    "on_eval_step_start",
    "on_eval_step_end",
    "on_eval_epoch_end",
    "on_training_run_epoch_end",
    "on_training_run_end",
    "on_evaluation_run_start",
    "on_evaluation_run_end",
    "on_stop_training_error",
    "on_save_point",
)


class CallbackHandler:
    """Holds the trainer's callbacks and calls an event on each of them, in order.

    Errors raised inside a callback propagate: they are never swallowed.
    """

    def __init__(self, callbacks: Iterable[TrainerCallback | type[TrainerCallback]] = ()):
        self._callbacks: list[TrainerCallback] = []
        self._handlers: dict[str, list] = {}
        for callback in callbacks:
            self.add_callback(callback)

    def add_callback(self, callback: TrainerCallback | type[TrainerCallback]) -> TrainerCallback:
        """Append a callback instance, or a callback class (instantiated with no arguments)."""
        if isinstance(callback, type):
            callback = callback()
        if not isinstance(callback, TrainerCallback):
            raise TypeError(
                f"{callback!r} is not a TrainerCallback: subclass "
                "pytorch_accelerated.trainer.TrainerCallback and pass an instance or the class."
            )
        self._callbacks.append(callback)
        self._handlers.clear()
        return callback

    def remove_callback(self, callback: TrainerCallback | type[TrainerCallback]) -> None:
        """Remove a callback instance, or every callback of the given class."""
        if isinstance(callback, type):
            self._callbacks = [cb for cb in self._callbacks if not isinstance(cb, callback)]
        else:
            self._callbacks.remove(callback)
        self._handlers.clear()

    def get_callback(self, callback_class: type[TrainerCallback]) -> TrainerCallback | None:
        """The first callback that is an instance of ``callback_class``, or None."""
        return next((cb for cb in self._callbacks if isinstance(cb, callback_class)), None)

    def call_event(self, event: str, *args, **kwargs) -> None:
        """Call ``event`` on every callback that defines it; custom event names are allowed."""
        handlers = self._handlers.get(event)
        if handlers is None:
            handlers = self._handlers[event] = self._find_handlers(event)
        for handler in handlers:
            handler(*args, **kwargs)

    def _find_handlers(self, event: str) -> list:
        # Skip the base class's empty methods: the loop fires several events per step.
        base = getattr(TrainerCallback, event, None)
        handlers = []
        for callback in self._callbacks:
            handler = getattr(callback, event, None)
            if handler is not None and (base is None or getattr(handler, "__func__", None) is not base):
                handlers.append(handler)
        return handlers

    @property
    def callbacks(self) -> tuple[TrainerCallback, ...]:
        """The callbacks, in the order their events run (change them with add/remove_callback)."""
        return tuple(self._callbacks)

    def __iter__(self):
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)
