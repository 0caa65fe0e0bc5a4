"""The callback protocol: :class:`TrainerCallback`, :class:`CallbackHandler` and
:class:`StopTrainingError`."""

from __future__ import annotations

import difflib
import functools
import inspect
import weakref
from typing import Any, Iterable
from ._warnings import warn_user


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

    #: The names of the custom events this callback fires or handles (``("on_my_event",)``):
    #: an ``on_*`` method that is neither a trainer event nor declared here (or by another
    #: callback of the trainer, or the Trainer subclass) is reported as a likely misspelling.
    custom_events: tuple[str, ...] = ()

    def on_init_end(self, trainer, **kwargs): ...

    def on_training_run_start(self, trainer, **kwargs): ...

    def on_train_epoch_start(self, trainer, **kwargs): ...

    def on_train_step_start(self, trainer, **kwargs): ...

    def on_train_step_end(self, trainer, batch, batch_output: dict, **kwargs): ...

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs): ...

    def on_optimizer_step_end(self, trainer, optimizer, **kwargs): ...

    def on_train_epoch_end(self, trainer, **kwargs): ...

    def on_eval_epoch_start(self, trainer, **kwargs): ...

    def on_eval_step_start(self, trainer, **kwargs): ...

    def on_eval_step_end(self, trainer, batch, batch_output: dict, **kwargs): ...

    def on_eval_epoch_end(self, trainer, **kwargs): ...

    def on_training_run_epoch_end(self, trainer, **kwargs): ...

    def on_training_run_end(self, trainer, **kwargs): ...

    def on_training_run_error(self, trainer, error: BaseException, **kwargs):
        """``train`` is ending with ``error`` (any exception but :class:`StopTrainingError`, which
        ends a run cleanly; KeyboardInterrupt included), which propagates once every callback ran.
        Release here what ``on_training_run_start`` acquired and ``on_training_run_end`` would have
        released (signal handlers, files, process groups); ``on_training_run_end`` is not fired. An
        error raised by a callback inside ``on_training_run_end`` itself (the run has ended) propagates
        without this event."""

    def on_evaluation_run_start(self, trainer, **kwargs): ...

    def on_evaluation_run_end(self, trainer, **kwargs): ...

    def on_stop_training_error(self, trainer, stop_training_error: StopTrainingError, **kwargs): ...

    def on_save_point(self, trainer, point: str, **kwargs):
        """A place where ``trainer.save_training_state`` captures a state that resumes exactly:
        every callback has handled the stage before it. ``point`` is ``"run_start"`` (before the
        first epoch of a run that does not resume), ``"update"`` (after each optimizer update's
        events), ``"epoch_end"`` (after each epoch's events) or ``"run_end"`` (once, when the run
        ends or was stopped, before ``training_run_end``)."""

    def recorded_metric_names(self, trainer) -> Iterable[str]:
        """The names this callback records in ``trainer.run_history`` during a training run (none by
        default), asked once ``train`` has set up its dataloaders (from ``on_training_run_start``) by
        callbacks that watch a metric, so that a name nobody records is reported before the first step.
        A ``*`` stands for any text, for names known only in part (``"eval_map_*"``); a name recorded in
        the evaluation after each epoch is stored under each evaluation set's name:
        ``trainer.evaluation_metric_names("eval_accuracy")`` lists those. Undeclared names are still
        recorded.

        Args:
            trainer: the trainer whose run records them.
        """
        return ()

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
    "on_training_run_error",
)


#: The event names of the project's founding README, each a synonym of a trainer event: a method
#: with either name is called for that event, with the same arguments in the same order.
EVENT_SYNONYMS: dict[str, str] = {
    "on_train_run_begin": "on_training_run_start",
    "on_train_run_end": "on_training_run_end",
    "on_train_epoch_begin": "on_train_epoch_start",
    "on_train_step_begin": "on_train_step_start",
    "on_eval_epoch_begin": "on_eval_epoch_start",
    "on_eval_step_begin": "on_eval_step_start",
}
_SPELLINGS: dict[str, tuple[str, ...]] = {
    event: (event, *(synonym for synonym, target in EVENT_SYNONYMS.items() if target == event))
    for event in TRAINER_EVENTS
}


class CallbackHandler:
    """Holds the trainer's callbacks and calls an event on each of them, in order.

    Errors raised inside a callback propagate: they are never swallowed. Each callback's event
    names are checked when it is added: an ``on_*`` method that names no event (a trainer event,
    a synonym from :data:`EVENT_SYNONYMS`, or a declared custom event) gets one warning naming the
    closest event. Each event's handlers are resolved once (again when callbacks are added or
    removed, also during a run), so that calling an event nobody handles returns at once.

    Args:
        callbacks: callback instances or classes (instantiated with no arguments), in calling order.
        custom_events: the events the trainer fires beyond its own.
    """

    def __init__(
        self,
        callbacks: Iterable[TrainerCallback | type[TrainerCallback]] = (),
        custom_events: Iterable[str] = (),
    ):
        self._callbacks: list[TrainerCallback] = []
        self._handlers: dict[str, tuple] = {}
        #: The trainer events (of ``TRAINER_EVENTS``) that at least one callback handles.
        self.handled_events: frozenset[str] = frozenset()
        self._custom_events = set(_checked_event_names(custom_events, "the trainer's custom_events"))
        added = [self._append(callback, resolve=False) for callback in callbacks]
        self._resolve_handled_events()
        for callback in added:  # once all are in: one callback may handle another's custom event
            self._check_event_names(callback)  # the line that created the Trainer

    def add_callback(self, callback: TrainerCallback | type[TrainerCallback]) -> TrainerCallback:
        """Append a callback instance, or a callback class (instantiated with no arguments)."""
        callback = self._append(callback)
        self._check_event_names(callback)  # the line that called add_callback
        return callback

    def _append(
        self, callback: TrainerCallback | type[TrainerCallback], resolve: bool = True
    ) -> TrainerCallback:
        if isinstance(callback, type):
            callback = callback()
        if not isinstance(callback, TrainerCallback):
            raise TypeError(
                f"{callback!r} is not a TrainerCallback: subclass "
                "pytorch_accelerated.trainer.TrainerCallback and pass an instance or the class."
            )
        if any(existing is callback for existing in self._callbacks):
            name = type(callback).__qualname__
            raise ValueError(
                f"The callback {callback!r} ({name}) is listed twice: each of its events would run twice "
                f"on the same state. List it once, or pass two instances ({name}(), {name}()) to run two."
            )
        self._custom_events.update(
            _checked_event_names(callback.custom_events, f"{type(callback).__qualname__}.custom_events")
        )
        self._callbacks.append(callback)
        if resolve:
            self._resolve_handled_events()
        return callback

    def remove_callback(self, callback: TrainerCallback | type[TrainerCallback]) -> None:
        """Remove a callback instance, or every callback of the given class."""
        if isinstance(callback, type):
            self._callbacks = [cb for cb in self._callbacks if not isinstance(cb, callback)]
        else:
            self._callbacks.remove(callback)
        self._resolve_handled_events()

    def get_callback(self, callback_class: type[TrainerCallback]) -> TrainerCallback | None:
        """The first callback that is an instance of ``callback_class``, or None."""
        return next((cb for cb in self._callbacks if isinstance(cb, callback_class)), None)

    def has_handlers(self, event: str) -> bool:
        """Whether calling ``event`` (a trainer event, a synonym or a custom event) calls any callback."""
        return bool(self._handlers_of(event))

    def call_event(self, event: str, *args, **kwargs) -> None:
        """Call ``event`` on every callback that defines it; custom event names are allowed.

        Args:
            event: the event's name (a trainer event, a synonym or a custom event).
            *args: passed to each handler (the trainer first).
            **kwargs: passed to each handler.
        """
        handlers = self._handlers.get(event)
        if handlers is None:  # an event not resolved yet (a custom one)
            handlers = self._handlers_of(event)
        for handler in handlers:
            handler(*args, **kwargs)

    def _handlers_of(self, event: str) -> tuple:
        handlers = self._handlers.get(event)
        if handlers is None:
            handlers = self._handlers[event] = self._find_handlers(event)
        return handlers

    def _resolve_handled_events(self) -> None:
        """After the callbacks changed: forget the resolved handlers, find which trainer events have some."""
        self._handlers.clear()
        self.handled_events = frozenset(event for event in TRAINER_EVENTS if self._handlers_of(event))

    def _find_handlers(self, event: str) -> tuple:
        # The base class's empty methods are skipped; a method under a synonym's name handles the event too.
        event = EVENT_SYNONYMS.get(event, event)
        base = getattr(TrainerCallback, event, None)
        handlers = []
        for callback in self._callbacks:
            for name in _SPELLINGS.get(event, (event,)):
                handler = getattr(callback, name, None)
                if handler is not None and (base is None or getattr(handler, "__func__", None) is not base):
                    handlers.append(handler)
        return tuple(handlers)

    def _check_event_names(self, callback: TrainerCallback) -> None:
        """Warn once per ``on_*`` method that names no event, and once per event defined under two names."""
        known = {*TRAINER_EVENTS, *EVENT_SYNONYMS, *self._custom_events}
        cls = type(callback)
        methods = _event_methods(cls)
        for name in methods:
            if name not in known:
                closest = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"did you mean {closest[0]}?" if closest else "it is not an event the trainer fires."
                warn_user(
                    f"{cls.__qualname__}.{name} is never called: no event is named {name!r}; {hint} "
                    f"If it is a custom event, declare it: custom_events = ({name!r},) on the callback "
                    "or on the Trainer subclass that fires it."
                )
        for synonym, event in EVENT_SYNONYMS.items():
            if synonym in methods and getattr(cls, event) is not getattr(TrainerCallback, event):
                warn_user(
                    f"{cls.__qualname__} defines both {event} and {synonym}, two names of one event: "
                    f"both are called ({event} first) each time it fires. Keep one of them."
                )

    @property
    def callbacks(self) -> tuple[TrainerCallback, ...]:
        """The callbacks, in the order their events run (change them with add/remove_callback)."""
        return tuple(self._callbacks)

    def __iter__(self):
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)


# A class's on_* methods, their signatures checked: once per class (the check costs ~0.2 ms a
# class, and a Trainer is often created many times with the same callback classes). Weak keys: a
# class made on the fly is not kept alive by this cache.
_EVENT_METHODS: weakref.WeakKeyDictionary[type, tuple[str, ...]] = weakref.WeakKeyDictionary()


def _event_methods(cls: type) -> tuple[str, ...]:
    """The names of ``cls``'s ``on_*`` methods; raises TypeError for a handler that could never be called."""
    methods = _EVENT_METHODS.get(cls)
    if methods is None:
        methods = tuple(
            name for name in dir(cls) if name.startswith("on_") and callable(getattr(cls, name, None))
        )
        for name in methods:
            _check_handler_signature(cls, name)
        _EVENT_METHODS[cls] = methods  # only once every check passed: a failing class fails every time
    return methods


# What pytorch-accelerated 0.1.61 passed that the events here do not, and where to read it instead.
_NOT_PASSED_HINTS = {
    "step": "read trainer.completed_epoch_batches (the batches of this epoch done before this one)",
    "is_intermediate": (
        "an evaluation inside an epoch is trainer.evaluate(), announced by on_evaluation_run_start"
    ),
}


def _check_handler_signature(cls: type, name: str) -> None:
    """A trainer event's handler that requires an argument the event never passes would fail at its
    first call: say so when the callback is added instead."""
    event = EVENT_SYNONYMS.get(name, name)
    handler = inspect.getattr_static(cls, name)
    if (
        event not in TRAINER_EVENTS
        or not inspect.isfunction(handler)
        or handler is getattr(TrainerCallback, name, None)
    ):
        # not a trainer event, the base class's, or not a plain method (a staticmethod, a callable object)
        return
    passed = _passed_arguments(event)
    missing = [name for name in _required_by_name(handler) if name not in passed]
    if missing:
        hints = "; ".join(
            f"for {arg}, {_NOT_PASSED_HINTS[arg]}" for arg in missing if arg in _NOT_PASSED_HINTS
        )
        given = ", ".join(["trainer", *(arg for arg in passed if arg != "kwargs")])
        raise TypeError(
            f"{cls.__qualname__}.{name} requires {', '.join(missing)}, which {event} never passes (it passes "
            f"{given}): remove the argument or give it a default{'; ' + hints if hints else ''}."
        )


def _required_by_name(function) -> list[str]:
    """The parameters of a method after (self, trainer) that have no default and may be passed by name."""
    if hasattr(function, "__wrapped__"):  # decorated: the signature is the wrapped function's
        parameters = list(inspect.signature(function).parameters.values())[2:]
        return [
            p.name
            for p in parameters
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
    # read from the code object: inspect.signature costs ~20 us a method, on every Trainer's first creation
    code = function.__code__
    positional = code.co_varnames[: code.co_argcount]
    keyword_only = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    without_default = positional[: len(positional) - len(function.__defaults__ or ())]
    required = list(without_default[max(2, code.co_posonlyargcount) :])
    return required + [name for name in keyword_only if name not in (function.__kwdefaults__ or {})]


@functools.cache
def _passed_arguments(event: str) -> list[str]:
    """The arguments ``event`` passes after the trainer, from the base class's signature."""
    return list(inspect.signature(getattr(TrainerCallback, event)).parameters)[2:]  # after self, trainer


def _checked_event_names(names: Iterable[str], where: str) -> tuple[str, ...]:
    if isinstance(names, str) or not all(isinstance(name, str) for name in names):
        raise TypeError(f"{where} must be a tuple of event names, e.g. ('on_my_event',); got {names!r}.")
    return tuple(names)
