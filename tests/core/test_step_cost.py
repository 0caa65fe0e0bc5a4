"""A guard on what one training step does: not a timing, a count.

A step of the default Trainer may do what a careful hand-written loop does (forward, loss,
backward, step, zero_grad), plus a bookkeeping tensor operation counted here. It reads no tensor
value on the host (the non-finite-loss check reads the running loss once every
``check_every_n_steps`` steps, by design; the epoch's loss is read once per epoch), starts no
collective on one process, and an event nobody handles runs no code: its dispatch returns at once.
A change that adds per-step work makes one of these tests fail.
"""

from __future__ import annotations

import collections
import fcntl
import os
import pty
import struct
import termios
import sys
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pytorch_accelerated.trainer import (
    DEFAULT_CALLBACKS,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    Trainer,
    TrainerCallback,
)
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from .helpers import make_trainer

TORCH_DATA_PACKAGE = str(Path(torch.utils.data.__file__).parent)
TRAINER_PACKAGE = str(Path(sys.modules[TerminateOnNaNCallback.__module__].__file__).parent)
BATCH_SIZE = 4
STEPS_PER_EPOCH = 60  # the non-finite-loss check reads at steps 50 and 60 (epoch end)
WINDOW = range(10, 40)  # the steps whose Python calls and tensor operations are counted
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
# reads the trainer makes by design, by the function that makes them
# (the progress bar reads the running loss when it redraws, at most every refresh_interval_s:
# test_the_progress_bar_reads_the_loss_only_when_it_redraws)
ALLOWED_READERS = {
    "RunningLoss.is_finite",
    "RunningLoss.compute",
    "DataLoader",
    "RunningLoss.mean",
}
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast",
    "broadcast_object_list",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "barrier",
    "all_to_all",
    "gather_object",
)
STEP_EVENTS = (
    "on_train_step_start",
    "on_train_step_end",
    "on_before_optimizer_step",
    "on_optimizer_step_end",
    "on_save_point",
)
EVAL_STEP_EVENTS = ("on_eval_step_start", "on_eval_step_end")
# the counts are keyed by code.co_qualname, new in Python 3.11
needs_qualname = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="needs code.co_qualname (Python 3.11+)"
)


class _Ledger:
    """What happened during a training run: host reads by reader, collectives, events, and the
    Python calls and tensor operations of the steps in WINDOW."""

    def __init__(self):
        self.reads: collections.Counter = collections.Counter()
        self.collectives: collections.Counter = collections.Counter()
        self.events: collections.Counter = collections.Counter()
        self.python_calls: collections.Counter = collections.Counter()
        # what event dispatches called, by callee
        self.dispatched: collections.Counter = collections.Counter()
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
        if event != "call":
            return
        if frame.f_code.co_filename.startswith(TRAINER_PACKAGE):
            self.ledger.python_calls[frame.f_code.co_qualname] += 1
        if frame.f_back is not None and frame.f_back.f_code.co_qualname == "CallbackHandler.call_event":
            self.ledger.dispatched[frame.f_code.co_qualname] += 1


def _train(ledger: _Ledger, callbacks, num_epochs: int = 1, eval_batches: int = 0) -> None:
    trainer = make_trainer(callbacks=[_StepWindow(ledger), *callbacks])
    handler = trainer.callback_handler
    call_event = handler.call_event

    def counted_call_event(event, *args, **kwargs):
        ledger.events[event if event != "on_save_point" else f"on_save_point({kwargs['point']})"] += 1
        return call_event(event, *args, **kwargs)

    handler.call_event = counted_call_event
    eval_dataset = make_tiny_dataset(BATCH_SIZE * eval_batches) if eval_batches else None
    trainer.train(
        make_tiny_dataset(BATCH_SIZE * STEPS_PER_EPOCH),
        num_epochs=num_epochs,
        eval_dataset=eval_dataset,
        per_device_batch_size=BATCH_SIZE,
    )


def _per_step(counter: collections.Counter) -> dict[str, float]:
    return {name: count / len(WINDOW) for name, count in sorted(counter.items())}


def _hand_loop_tensor_ops() -> collections.Counter:
    """The tensor operations of the same steps in a hand-written loop (the same model, loss,
    optimizer and batches); the epoch loss kept on the device as a careful user keeps it."""
    model = make_tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_func = torch.nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(
        make_tiny_dataset(BATCH_SIZE * STEPS_PER_EPOCH), batch_size=BATCH_SIZE, shuffle=True
    )
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
def test_a_step_reads_no_tensor_on_the_host_but_the_non_finite_check(ledger):
    """A step reads no tensor value on the host but the periodic non-finite check."""
    _train(ledger, DEFAULT_CALLBACKS, num_epochs=2)
    unexpected = {what: n for what, n in ledger.reads.items() if what.split(" in ")[1] not in ALLOWED_READERS}
    assert unexpected == {}, f"host reads besides the allowed ones: {unexpected}"
    checks_per_epoch = -(-STEPS_PER_EPOCH // 50)  # one every 50 steps, the last at the epoch's end
    # TerminateOnNaNCallback's
    assert ledger.reads["__bool__ in RunningLoss.is_finite"] == 2 * checks_per_epoch
    assert ledger.reads["tolist in RunningLoss.compute"] == 2  # the epoch's loss, once per epoch
    loader_reads = sum(n for what, n in ledger.reads.items() if what.endswith(" in DataLoader"))
    assert loader_reads <= 2 * 4, (
        f"the DataLoader read {loader_reads} values in 2 epochs: per step, not per epoch"
    )


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
def test_the_guard_catches_a_per_step_collective_in_a_callback(ledger):
    class ReducesEveryStep(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            torch.distributed.all_reduce(torch.zeros(()))  # the deliberate per-step collective

    _train(ledger, [*DEFAULT_CALLBACKS, ReducesEveryStep()])
    assert ledger.collectives == {"all_reduce": STEPS_PER_EPOCH}  # so the test above would fail on it


@needs_qualname
def test_an_event_nobody_handles_runs_no_code_in_a_step(ledger):
    # the default callbacks handle on_train_step_end (the bar, the non-finite check) and on_eval_step_end;
    # _StepWindow handles on_train_step_start. The other step events are dispatched and return at once.
    _train(ledger, DEFAULT_CALLBACKS, eval_batches=5)
    handled = {
        event: ledger.events[event]
        for event in ("on_train_step_start", "on_train_step_end", "on_eval_step_end")
    }
    assert handled == {
        "on_train_step_start": STEPS_PER_EPOCH,
        "on_train_step_end": STEPS_PER_EPOCH,
        "on_eval_step_end": 5,
    }
    dispatched = _per_step(ledger.dispatched)
    expected = {
        "_StepWindow.on_train_step_start": 1,
        "TerminateOnNaNCallback.on_train_step_end": 1,
        "ProgressBarCallback.on_train_step_end": 1,
    }
    assert dispatched == expected, (
        f"per step, event dispatches called {dispatched}: an unhandled event ran code"
    )
    resolutions = {
        name: n
        for name, n in ledger.python_calls.items()
        if "_handlers_of" in name or "_find_handlers" in name
    }
    assert resolutions == {}, f"handlers were looked up again inside steps: {resolutions}"


class _HandlesEveryStepEvent(TrainerCallback):
    def __init__(self):
        self.counts = collections.Counter()

    def on_train_step_start(self, trainer, **kwargs):
        self.counts["on_train_step_start"] += 1

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.counts["on_train_step_end"] += 1

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        self.counts["on_before_optimizer_step"] += 1

    def on_optimizer_step_end(self, trainer, optimizer, **kwargs):
        self.counts["on_optimizer_step_end"] += 1

    def on_save_point(self, trainer, point, **kwargs):
        self.counts["on_save_point"] += 1

    def on_eval_step_start(self, trainer, **kwargs):
        self.counts["on_eval_step_start"] += 1

    def on_eval_step_end(self, trainer, batch, batch_output, **kwargs):
        self.counts["on_eval_step_end"] += 1


def test_a_step_fires_each_step_event_that_has_a_handler_once():
    handles_all = _HandlesEveryStepEvent()
    trainer = make_trainer(callbacks=[*DEFAULT_CALLBACKS, handles_all])
    trainer.train(
        make_tiny_dataset(4 * 6), num_epochs=1, eval_dataset=make_tiny_dataset(4 * 2), per_device_batch_size=4
    )
    expected = dict.fromkeys(STEP_EVENTS, 6) | dict.fromkeys(EVAL_STEP_EVENTS, 2)
    expected["on_save_point"] += 3  # also at the run's start, the epoch's end and the run's end
    assert dict(handles_all.counts) == expected


def test_a_callback_added_mid_run_gets_step_events_from_the_next_step():
    """A callback added during a run gets its step events from the next step."""
    late = _HandlesEveryStepEvent()

    class AddsOneAtTheThirdStep(TrainerCallback):
        added = False

        def on_train_step_end(self, trainer, **kwargs):
            if trainer.completed_epoch_batches == 2 and not self.added:  # the third step (two done before it)
                trainer.callback_handler.add_callback(late)
                self.added = True

    trainer = make_trainer(callbacks=[AddsOneAtTheThirdStep()])
    trainer.train(make_tiny_dataset(4 * 6), num_epochs=1, per_device_batch_size=4)
    # added inside the third step's on_train_step_end: that step's update is its first event
    assert dict(late.counts) == {
        "on_train_step_start": 3,
        "on_train_step_end": 3,
        "on_before_optimizer_step": 4,
        "on_optimizer_step_end": 4,
        "on_save_point": 4 + 2,  # the updates, the epoch's end, the run's end
    }
    trainer.callback_handler.remove_callback(late)
    late.counts.clear()
    trainer.train(make_tiny_dataset(4 * 6), num_epochs=1, per_device_batch_size=4)
    assert late.counts == {}  # removed between runs: called no more


@needs_qualname
def test_a_step_runs_no_more_tensor_operations_than_a_hand_loop(ledger):
    """A step runs no more tensor operations than a hand loop plus its bookkeeping."""
    _train(ledger, DEFAULT_CALLBACKS)
    trainer_ops, hand_ops = _per_step(ledger.tensor_ops), _per_step(_hand_loop_tensor_ops())
    extra = {op: trainer_ops.get(op, 0) - hand_ops.get(op, 0) for op in trainer_ops.keys() | hand_ops.keys()}
    extra = {op: n for op, n in extra.items() if n}
    # the running epoch loss: detach, add_(alpha=batch size) where the hand loop writes detach,
    # mul, add_; the non-finite check reads that running loss, with no operation of its own
    assert extra == {"aten.mul": -1}, f"tensor operations per step, Trainer minus hand loop: {extra}"


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
    trainer.train(
        make_tiny_dataset(32), num_epochs=1, eval_dataset=make_tiny_dataset(16), per_device_batch_size=4
    )
    assert len(watcher.alive_at_forward) == 8 + 4 and not any(watcher.alive_at_forward)
    # the loss is all backward needs: the outputs are freed before it (a language model's logits)
    assert alive_at_backward == [False] * 8


def test_the_loss_is_kept_through_its_update_and_freed_with_the_next_step():
    # As a hand loop keeps its loss: the graph it still holds after backward (its saved tensors freed)
    # references the parameters from C++, so torch's update takes no GIL round trip per reference
    # (instructions per step, benchmarks/README.md). Not longer: the next step's loss replaces it.
    losses, seen_at_update = [], []

    class Watched(Trainer):
        def calculate_train_batch_loss(self, batch):
            batch_output = super().calculate_train_batch_loss(batch)
            losses.append(weakref.ref(batch_output["loss"]))
            return batch_output

        def optimizer_step(self):
            seen_at_update.append([loss() is not None for loss in losses])
            super().optimizer_step()

    trainer = make_trainer(callbacks=DEFAULT_CALLBACKS, trainer_class=Watched)
    trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=4)
    assert seen_at_update == [[True], [False, True], [False, False, True], [False, False, False, True]]


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

    bar = ProgressBarCallback(refresh_interval_s=2.0, file_refresh_interval_s=7.0)
    make_trainer(callbacks=[bar, Spy()]).train(make_tiny_dataset(8), num_epochs=1, per_device_batch_size=4)
    assert seen == [7.0, 7.0]  # stderr is not a terminal under pytest: the interval for files
    assert (ProgressBarCallback().refresh_interval_s, ProgressBarCallback().file_refresh_interval_s) == (
        0.5,
        30.0,
    )
    for name in ("refresh_interval_s", "file_refresh_interval_s"):
        with pytest.raises(ValueError, match=name):
            ProgressBarCallback(**{name: -1})


@needs_qualname
@pytest.mark.parametrize("refresh_interval_s", [0.0, 0.5], ids=["redrawn-every-step", "default"])
def test_the_progress_bar_reads_the_loss_only_when_it_redraws(ledger, monkeypatch, refresh_interval_s):
    """The progress bar reads the loss only when it redraws on a terminal.

    On a terminal (a pty as stderr) the bar shows the running loss: one read per redraw, at
    most every refresh_interval_s, not per step (a fast step never waits for the device)."""
    import threading

    from pytorch_accelerated.trainer import default_callbacks

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    threading.Thread(target=_drain, args=(controller,), daemon=True).start()
    redraws = []
    display = default_callbacks._Bar.display
    monkeypatch.setattr(
        default_callbacks._Bar,
        "display",
        lambda bar, msg=None, pos=None: (
            (redraws.append(bar.desc) if msg is None and "train" in bar.desc else None)
            or display(bar, msg, pos)
        ),
    )
    callbacks = [c for c in DEFAULT_CALLBACKS if c is not ProgressBarCallback]
    with open(terminal, "w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        _train(ledger, [*callbacks, ProgressBarCallback(refresh_interval_s=refresh_interval_s)], num_epochs=2)
        monkeypatch.undo()
    os.close(controller)
    reads = ledger.reads["item in RunningLoss.mean"]
    # every redraw of a training bar but the first (drawn before any step: no loss yet) reads once
    assert reads == len(redraws) - (2 if refresh_interval_s == 0 else 0), (reads, redraws)
    if refresh_interval_s == 0:
        assert len(redraws) == 2 * (STEPS_PER_EPOCH + 1)
    else:
        assert len(redraws) < STEPS_PER_EPOCH  # 0.5 s between redraws: a few per epoch, not one a step


def _drain(fd) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
