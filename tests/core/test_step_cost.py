"""A guard on what one training step costs: not a timing, a count of what it does.

A step of the default Trainer may do what a careful hand-written loop does (forward, loss,
backward, step, zero_grad), plus a few bookkeeping tensor operations and Python calls counted
here. It reads no tensor value on the host (the non-finite-loss check reads its kept losses once
every ``check_every_n_steps`` steps, by design; the epoch's loss is read once per epoch), starts
no collective on one process, and fires a fixed set of events. A change that adds per-step work
makes one of these tests fail; if the work is worth it, raise the budget here and say why.
"""

from __future__ import annotations

import collections
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, ProgressBarCallback, TerminateOnNaNCallback, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from .helpers import make_trainer

TORCH_DATA_PACKAGE = str(Path(torch.utils.data.__file__).parent)
TRAINER_PACKAGE = str(Path(sys.modules[TerminateOnNaNCallback.__module__].__file__).parent)
BATCH_SIZE = 4
STEPS_PER_EPOCH = 60  # the non-finite-loss check reads at steps 50 and 60 (epoch end)
WINDOW = range(10, 40)  # the steps whose Python calls and tensor operations are counted
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
# reads the trainer makes by design, by the function that makes them
ALLOWED_READERS = {"TerminateOnNaNCallback._has_non_finite_loss", "RunningLoss.compute", "DataLoader"}
COLLECTIVES = (
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
    "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter",
    "barrier", "all_to_all", "gather_object",
)  # fmt: skip
STEP_EVENTS = ("on_train_step_start", "on_train_step_end", "on_before_optimizer_step", "on_optimizer_step_end", "on_save_point")
# Python calls into trainer-core per step with the default callbacks: 12 of the loop's hooks and
# helpers, the two callbacks that handle a step event, and the dispatch of the five step events.
PYTHON_CALL_BUDGET = 19
# the counts are keyed by code.co_qualname, new in Python 3.11
needs_qualname = pytest.mark.skipif(sys.version_info < (3, 11), reason="needs code.co_qualname (Python 3.11+)")


class _Ledger:
    """What happened during a training run: host reads by reader, collectives, events, and the
    Python calls and tensor operations of the steps in WINDOW."""

    def __init__(self):
        self.reads: collections.Counter = collections.Counter()
        self.collectives: collections.Counter = collections.Counter()
        self.events: collections.Counter = collections.Counter()
        self.python_calls: collections.Counter = collections.Counter()
        self.tensor_ops: collections.Counter = collections.Counter()


def _reader() -> str:
    """The innermost function of trainer-core (or of this test's callbacks) on the stack, or
    ``DataLoader`` for torch's loader (its sampler draws a seed and an order once per epoch)."""
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if code.co_filename.startswith(TORCH_DATA_PACKAGE):
            return "DataLoader"
        if code.co_filename.startswith(TRAINER_PACKAGE) or code.co_filename == __file__:
            return code.co_qualname
        frame = frame.f_back
    return "<outside the trainer>"


@pytest.fixture
def ledger(monkeypatch):
    ledger = _Ledger()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            ledger.reads[f"{_name} in {_reader()}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for name in COLLECTIVES:
        if hasattr(torch.distributed, name):
            monkeypatch.setattr(
                torch.distributed, name, lambda *a, _name=name, **k: ledger.collectives.update([_name])
            )
    return ledger


class _CountingMode(TorchDispatchMode):
    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counter[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


class _StepWindow(TrainerCallback):
    """First in the callback list: counts the step events and, for the steps in WINDOW, every
    Python call into trainer-core and every tensor operation (between two step starts: the
    whole step, its data loading and update included)."""

    def __init__(self, ledger: _Ledger):
        self.ledger = ledger
        self.step = -1
        self.mode = None

    def on_train_step_start(self, trainer, **kwargs):
        self.step += 1
        if self.step == WINDOW.start:
            self.mode = _CountingMode(self.ledger.tensor_ops)
            self.mode.__enter__()
            sys.setprofile(self._profile)
        elif self.step == WINDOW.stop:
            sys.setprofile(None)
            self.mode.__exit__(None, None, None)
            self.mode = None

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(TRAINER_PACKAGE):
            self.ledger.python_calls[frame.f_code.co_qualname] += 1


def _train(ledger: _Ledger, callbacks, num_epochs: int = 1) -> None:
    trainer = make_trainer(callbacks=[_StepWindow(ledger), *callbacks])
    call_event = trainer.callback_handler.call_event

    def counted_call_event(event, *args, **kwargs):
        ledger.events[event] += 1
        return call_event(event, *args, **kwargs)

    trainer.callback_handler.call_event = counted_call_event
    trainer.train(make_tiny_dataset(BATCH_SIZE * STEPS_PER_EPOCH), num_epochs=num_epochs, per_device_batch_size=BATCH_SIZE)


def _per_step(counter: collections.Counter) -> dict[str, float]:
    return {name: count / len(WINDOW) for name, count in sorted(counter.items())}


def _hand_loop_tensor_ops() -> collections.Counter:
    """The tensor operations of the same steps in a hand-written loop (the same model, loss,
    optimizer and batches); the epoch loss kept on the device as a careful user keeps it."""
    model = make_tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_func = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(make_tiny_dataset(BATCH_SIZE * STEPS_PER_EPOCH), batch_size=BATCH_SIZE, shuffle=True)
    ops, total = collections.Counter(), torch.zeros(())
    batches = iter(loader)
    for step in range(WINDOW.stop):
        mode = _CountingMode(ops) if step >= WINDOW.start else None
        if mode is not None:
            mode.__enter__()
        inputs, targets = next(batches)
        loss = loss_func(model(inputs), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        total += loss.detach() * targets.size(0)
        if mode is not None:
            mode.__exit__(None, None, None)
    return ops


@needs_qualname
def test_a_step_reads_no_tensor_value_on_the_host_but_the_periodic_non_finite_check(ledger):
    _train(ledger, DEFAULT_CALLBACKS, num_epochs=2)
    unexpected = {what: n for what, n in ledger.reads.items() if what.split(" in ")[1] not in ALLOWED_READERS}
    assert unexpected == {}, f"host reads besides the allowed ones: {unexpected}"
    checks_per_epoch = -(-STEPS_PER_EPOCH // 50)  # one every 50 steps, the last at the epoch's end
    assert ledger.reads["__bool__ in TerminateOnNaNCallback._has_non_finite_loss"] == 2 * checks_per_epoch
    assert ledger.reads["tolist in RunningLoss.compute"] == 2  # the epoch's loss, once per epoch
    loader_reads = sum(n for what, n in ledger.reads.items() if what.endswith(" in DataLoader"))
    assert loader_reads <= 2 * 4, f"the DataLoader read {loader_reads} values in 2 epochs: per step, not per epoch"


@needs_qualname
def test_the_guard_catches_a_per_step_item_in_a_callback(ledger):
    class ReadsTheLossEveryStep(TerminateOnNaNCallback):
        def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
            batch_output["loss"].item()  # the deliberate per-step host-device synchronisation
            super().on_train_step_end(trainer, batch, batch_output, **kwargs)

    callbacks = [ReadsTheLossEveryStep if cb is TerminateOnNaNCallback else cb for cb in DEFAULT_CALLBACKS]
    _train(ledger, callbacks)
    reader = f"item in {ReadsTheLossEveryStep.on_train_step_end.__qualname__}"
    assert ledger.reads[reader] == STEPS_PER_EPOCH
    assert reader.split(" in ")[1] not in ALLOWED_READERS  # so the test above would fail on it


@needs_qualname
def test_a_step_starts_no_collective_on_one_process(ledger):
    _train(ledger, DEFAULT_CALLBACKS)
    assert ledger.collectives == {}


@needs_qualname
def test_a_step_fires_its_five_events_once_each(ledger):
    _train(ledger, DEFAULT_CALLBACKS)
    expected = dict.fromkeys(STEP_EVENTS, STEPS_PER_EPOCH)
    expected["on_save_point"] += 3  # also at the run's start, the epoch's end and the run's end
    assert {event: ledger.events[event] for event in STEP_EVENTS} == expected
    per_run = {event: n for event, n in ledger.events.items() if event not in STEP_EVENTS}
    assert max(per_run.values()) <= 1, f"events fired more than once a run outside the step: {per_run}"


@needs_qualname
def test_a_step_makes_no_more_python_calls_into_the_trainer_than_its_budget(ledger):
    _train(ledger, DEFAULT_CALLBACKS)
    calls = _per_step(ledger.python_calls)
    assert sum(calls.values()) <= PYTHON_CALL_BUDGET, f"{sum(calls.values())} calls per step: {calls}"
    several = {name: n for name, n in calls.items() if n != 1}
    assert several == {"CallbackHandler.call_event": len(STEP_EVENTS)}, f"called more than once per step: {several}"


@needs_qualname
def test_a_step_runs_no_more_tensor_operations_than_a_hand_loop_plus_its_bookkeeping(ledger):
    _train(ledger, DEFAULT_CALLBACKS)
    trainer_ops, hand_ops = _per_step(ledger.tensor_ops), _per_step(_hand_loop_tensor_ops())
    extra = {op: trainer_ops.get(op, 0) - hand_ops.get(op, 0) for op in trainer_ops.keys() | hand_ops.keys()}
    extra = {op: n for op, n in extra.items() if n}
    # the running epoch loss: detach, add_(alpha=batch size) where the hand loop writes detach,
    # mul, add_; the non-finite check keeps a detached loss: one detach more
    assert extra == {"aten.detach": 1, "aten.mul": -1}, f"tensor operations per step, Trainer minus hand loop: {extra}"


class _OutputsWatcher(torch.nn.Module):
    """The tiny model, noting at each forward and before each backward whether an earlier
    step's outputs are still alive (weak references: watching keeps nothing alive)."""

    def __init__(self):
        super().__init__()
        self.inner = make_tiny_model()
        self.last_outputs = None
        self.alive_at_forward = []

    def forward(self, inputs):
        self.alive_at_forward.append(self.last_outputs is not None and self.last_outputs() is not None)
        outputs = self.inner(inputs)
        self.last_outputs = weakref.ref(outputs)
        return outputs


def test_no_earlier_step_outputs_are_alive_during_a_forward_or_a_backward():
    watcher = _OutputsWatcher()
    alive_at_backward = []

    class Watched(Trainer):
        def backward_step(self, loss):
            alive_at_backward.append(watcher.last_outputs() is not None)
            super().backward_step(loss)

    trainer = make_trainer(callbacks=DEFAULT_CALLBACKS, trainer_class=Watched, model=watcher)
    trainer.train(make_tiny_dataset(32), num_epochs=1, eval_dataset=make_tiny_dataset(16), per_device_batch_size=4)
    assert len(watcher.alive_at_forward) == 8 + 4 and not any(watcher.alive_at_forward)
    # the loss is all backward needs: the outputs are freed before it (a language model's logits)
    assert alive_at_backward == [False] * 8


def test_outputs_a_callback_keeps_stay_alive_for_it():
    class KeepsOutputs(TrainerCallback):
        def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
            self.outputs = batch_output["model_outputs"]

    keeper = KeepsOutputs()
    trainer = make_trainer(callbacks=[keeper])
    trainer.train(make_tiny_dataset(8), num_epochs=1, per_device_batch_size=4)
    assert keeper.outputs.shape == (4, 3)


def test_the_progress_bar_redraws_at_most_every_refresh_interval(capsys):
    seen = []

    class Spy(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            seen.append(bar._bar.mininterval)

    bar = ProgressBarCallback(refresh_interval_s=2.0)
    make_trainer(callbacks=[bar, Spy()]).train(make_tiny_dataset(8), num_epochs=1, per_device_batch_size=4)
    assert seen == [2.0, 2.0]
    assert ProgressBarCallback().refresh_interval_s == 0.5
    with pytest.raises(ValueError, match="refresh_interval_s"):
        ProgressBarCallback(refresh_interval_s=-1)
