"""The :class:`Trainer`: a training loop made of overridable hooks, on top of HuggingFace accelerate."""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch.utils.data import DataLoader, Dataset

from . import _accelerate_state, _checks, _data, _prediction, checkpointing
from ._data import length_or_none as _length_or_none
from ._dataloaders import on_device, prepare_dataloader, set_up_eval_dataloader
from ._forward_inputs import ForwardInputs
from ._preparation import ModelPreparation, plain_optimizer_calls
from ._removed_hooks import check_no_removed_hooks
from .agreement import StopAgreement, sync_buffers_before_evaluation
from .callbacks import CallbackHandler, StopTrainingError, TrainerCallback
from .default_callbacks import DEFAULT_CALLBACKS
from .resuming import TrainingStates
from .run_config import TrainerPlaceholderValues, TrainerRunConfig, create_run_config
from .run_history import VALIDATION, InMemoryRunHistory, RunHistory
from .running_loss import RunningLoss

_BATCH_OUTPUT_KEYS = ("loss", "model_outputs", "batch_size")
_BATCH_OUTPUT_KEY_SET = frozenset(_BATCH_OUTPUT_KEYS)


class Trainer:
    """Trains a model with a loss and an optimizer on one or many devices.

    The loop (see :meth:`train`) is a sequence of hooks that a subclass may override; after each
    hook, the callback event of the same stage runs on every callback, in order.

    Args:
        model: the ``nn.Module`` to train (plain, or compiled with ``torch.compile``).
        loss_func: called as ``loss_func(model_outputs, targets)``; ``None`` takes the loss from
            the model's output (``outputs["loss"]`` or ``outputs.loss``), as transformers models return.
        optimizer: an optimizer over the model's parameters.
        callbacks: callback instances or classes, run in this order; ``()`` for none.
        run_history: where metrics are recorded; an :class:`InMemoryRunHistory` by default.
        accelerator_kwargs: keyword arguments for ``accelerate.Accelerator`` (``mixed_precision``,
            ``project_dir``, ``kwargs_handlers``, ``cpu``, ...). Override :meth:`create_accelerator`
            for full control.

    A subclass that fires events of its own (``self.callback_handler.call_event("on_my_event", self)``)
    declares them in ``custom_events``, so that callbacks handling them are not reported as misspelled.
    """

    #: The custom events this Trainer (subclass) fires, beyond the trainer events.
    custom_events: tuple[str, ...] = ()

    def __init__(
        self,
        model: torch.nn.Module,
        loss_func: Callable | None,
        optimizer: torch.optim.Optimizer,
        callbacks: Iterable[TrainerCallback | type[TrainerCallback]] = DEFAULT_CALLBACKS,
        run_history: RunHistory | None = None,
        accelerator_kwargs: dict[str, Any] | None = None,
    ):
        _checks.check_model(model)
        _checks.check_loss_func(loss_func)
        _checks.check_optimizer(optimizer, model)
        check_no_removed_hooks(type(self))
        self.model = model
        self.loss_func = loss_func
        self.optimizer = optimizer
        self.callback_handler = CallbackHandler(callbacks, custom_events=self.custom_events)
        self.run_history = run_history if run_history is not None else InMemoryRunHistory()
        self.accelerator_kwargs = dict(accelerator_kwargs or {})
        _checks.check_accelerator_kwargs(self.accelerator_kwargs)
        self.accelerator: Accelerator = self.create_accelerator()
        _checks.check_mixed_precision_runs(self.accelerator)
        self._mixed_precision = self.accelerator.mixed_precision
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            _destroy_process_group_at_exit()
        # read once: accelerate's properties cost microseconds a read, and these are read every step
        self._is_main_process = self.accelerator.is_main_process
        self._is_local_main_process = self.accelerator.is_local_main_process
        self._several_processes = self.accelerator.use_distributed  # whether no_sync holds anything back
        self.scheduler = None
        self.collate_fn: Callable | None = None
        self.train_dataset: Dataset | None = None
        self.eval_dataset: Dataset | None = None
        self.train_dataloader: DataLoader | None = None
        self.eval_dataloader: DataLoader | None = None
        self.run_config: TrainerRunConfig | None = None
        self.create_scheduler_fn: Callable | None = None
        self.completed_update_steps = 0
        self.completed_epoch_batches = 0
        self.optimizer_step_was_skipped = False
        self.resumed_from: Path | None = None
        self._epochs_completed = 0
        self._training_stopped = False
        self._in_training_run = False
        self._save_point: str | None = None
        self._train_loss: RunningLoss | None = None
        self._states = TrainingStates(self)  # capture, check and apply training states
        self._preparation = ModelPreparation()
        self._torch_optimizer: torch.optim.Optimizer | None = None
        self._epoch_end_requested = False
        self._forward_inputs = ForwardInputs()
        self._train_loss_unchecked = True
        self.callback_handler.call_event("on_init_end", self)

    # ------------------------------------------------------------------ facts about the run

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def num_processes(self) -> int:
        return self.accelerator.num_processes

    @property
    def process_index(self) -> int:
        return self.accelerator.process_index

    @property
    def is_world_process_zero(self) -> bool:
        return self._is_main_process

    @property
    def is_local_process_zero(self) -> bool:
        return self._is_local_main_process

    # ------------------------------------------------------------------ the training run

    def train(
        self,
        train_dataset: Dataset,
        num_epochs: int,
        eval_dataset: Dataset | None = None,
        per_device_batch_size: int = 8,
        max_num_train_steps: int | None = None,
        gradient_accumulation_steps: int = 1,
        gradient_clip_value: float | None = None,
        gradient_clip_norm: float | None = None,
        create_scheduler_fn: Callable | None = None,
        collate_fn: Callable | None = None,
        train_dataloader_kwargs: dict[str, Any] | None = None,
        eval_dataloader_kwargs: dict[str, Any] | None = None,
        reset_run_history: bool = True,
        resume_from: str | os.PathLike | None = None,
    ) -> RunHistory:
        """Train for ``num_epochs`` epochs or ``max_num_train_steps`` optimizer updates, whichever
        comes first, evaluating on ``eval_dataset`` after each epoch. Returns the run history.

        ``per_device_batch_size`` is per process; one optimizer update uses
        ``per_device_batch_size * gradient_accumulation_steps * num_processes`` samples.
        ``create_scheduler_fn`` builds the scheduler from the optimizer; use
        ``functools.partial`` with :class:`TrainerPlaceholderValues` for sizes known only now.
        The scheduler steps once per optimizer update, and not when the update was skipped.

        ``resume_from`` continues an interrupted run exactly, as if it had never stopped: a folder
        written by :meth:`save_training_state`, a folder of them (the one that got furthest is
        taken), or ``"latest"``: the newest one found by the callbacks that save training states
        (a fresh start when there is none yet). Pass the arguments the run was started with.
        """
        _checks.check_train_arguments(
            train_dataset, num_epochs, eval_dataset, per_device_batch_size, max_num_train_steps,
            gradient_accumulation_steps, gradient_clip_value, gradient_clip_norm, create_scheduler_fn,
        )  # fmt: skip
        _accelerate_state.check_is_own(self.accelerator, self._mixed_precision)

        training_state = self._states.find(resume_from)

        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.collate_fn = collate_fn
        self.create_scheduler_fn = create_scheduler_fn
        if reset_run_history:
            self.run_history.reset()
        self.run_history.bind_step_source(self._completed_update_steps)

        _checks.warn_of_parameters_outside_the_optimizer(self._unwrapped_optimizer(), self._preparation.unwrapped(self.accelerator, self.model))
        self._prepare_model_and_optimizer()
        self._train_loss_unchecked = True
        self.train_dataloader = self._prepare_dataloader(
            self.create_train_dataloader(per_device_batch_size, train_dataloader_kwargs), train=True
        )
        self.eval_dataloader = None if eval_dataset is None else self._prepare_dataloader(
            self.create_eval_dataloader(per_device_batch_size, eval_dataloader_kwargs), train=False
        )
        self.run_config = create_run_config(
            self, num_epochs, per_device_batch_size, max_num_train_steps,
            gradient_accumulation_steps, gradient_clip_value, gradient_clip_norm,
        )  # fmt: skip
        self.scheduler = self.create_scheduler() if create_scheduler_fn is not None else None
        self._states.start_run()
        if training_state is not None:
            self._states.load(training_state)
        self._run_training()
        return self.run_history

    def _run_training(self) -> None:
        self._in_training_run = True
        try:
            self._run_to_the_end()
            # the run has ended: an error a callback raises from here on (optuna's TrialPruned, say)
            # propagates as it is, without on_training_run_error
            self.callback_handler.call_event("on_training_run_end", self)
        finally:
            self._in_training_run = False
            self._states.end_run()

    def _run_to_the_end(self) -> None:
        """The epochs and the end-of-run hook; on an error, ``on_training_run_error``, then the error."""
        try:
            self._run_epochs()
            self._reach_save_point("run_end")
            self.training_run_end()
        except BaseException as error:
            self.callback_handler.call_event("on_training_run_error", self, error=error)
            raise

    def _run_epochs(self) -> None:
        stop_agreement = StopAgreement(self)  # a stop raised on one process only fails all, with its reason
        try:
            self.training_run_start()
            self.callback_handler.call_event("on_training_run_start", self)
            if self.resumed_from is None:
                self._reach_save_point("run_start")
            elif not self._states.resuming_mid_epoch:
                self._states.finish_resuming()
            # a callback may evaluate() another dataset mid-run: each epoch evaluates this run's
            run_eval_dataset, run_eval_dataloader = self.eval_dataset, self.eval_dataloader
            while not self._run_is_over():
                self._run_train_epoch()
                if run_eval_dataloader is not None:
                    self.eval_dataset, self.eval_dataloader = run_eval_dataset, run_eval_dataloader
                    with self.run_history.evaluation(VALIDATION):
                        self._run_eval_epoch(self.eval_dataloader, "eval_loss_epoch")
                self.training_run_epoch_end()
                self.callback_handler.call_event("on_training_run_epoch_end", self)
                self.run_history.increment_epoch()
                self._epochs_completed += 1
                self.completed_epoch_batches = 0
                self._reach_save_point("epoch_end")
        except StopTrainingError as error:
            stop_agreement.agree(error)
            self._training_stopped = True
            self.callback_handler.call_event("on_stop_training_error", self, stop_training_error=error)
        except Exception as error:
            stop_agreement.explain(error)
            raise

    def _run_is_over(self) -> bool:
        if self._states.resuming:
            return False  # resuming inside an epoch: that epoch is finished first
        return (
            self._training_stopped
            or self._epochs_completed >= self.run_config.num_epochs
            or self._reached_max_train_steps()
        )

    def _run_train_epoch(self) -> None:
        resuming = self._states.start_epoch()  # True where a resume inside this epoch is pending
        self.train_epoch_start()
        self.callback_handler.call_event("on_train_epoch_start", self)
        # a resumed epoch starts at its position without loading the batches before it
        batches = self._on_device(self._states.train_batches(self.completed_epoch_batches), self.train_dataloader)
        if resuming:
            self._states.finish_resuming()
        if not self._train_epoch_should_end():
            self._run_train_steps(batches)
        self.run_history.update_metric("train_loss_epoch", self._train_loss.compute(self.accelerator))
        self.train_epoch_end()
        self.callback_handler.call_event("on_train_epoch_end", self)

    def _run_train_steps(self, batches: Iterator) -> None:
        # Every Python call here runs on every step (tests/core/test_step_cost.py counts them): what
        # is known for the epoch is read once, and the step makes as few calls as it can.
        num_batches = _length_or_none(self.train_dataloader)
        accumulation_steps = self.run_config.gradient_accumulation_steps
        max_steps = self.run_config.max_num_train_steps
        handler, call_event = self.callback_handler, self.callback_handler.call_event  # an event nobody handles is not called
        # with no length, the data's end is known only from accelerate's dataloader (several processes)
        last_batch_known = _data.last_batch_signal(self.train_dataloader) if num_batches is None else None
        is_update_step = True  # no window is open before the first step
        for step, batch in enumerate(batches, start=self.completed_epoch_batches):
            window_start = step - step % accumulation_steps
            # the window's length: shorter at the end of an epoch that accumulation_steps does not divide
            window_size = accumulation_steps if num_batches is None else min(accumulation_steps, num_batches - window_start)
            is_update_step = step - window_start + 1 == window_size or (
                last_batch_known is not None and last_batch_known.end_of_dataloader
            )
            "on_train_step_start" in handler.handled_events and call_event("on_train_step_start", self)
            if self._several_processes and not is_update_step:
                with self.accelerator.no_sync(self.model):
                    loss = self._train_step(batch, window_size)
            else:
                loss = self._train_step(batch, window_size)  # no context to enter: ~1 us a step
            self.completed_epoch_batches = step + 1
            if is_update_step:
                self._update_parameters(window_size, step - window_start + 1)
                "on_save_point" in handler.handled_events and self._reach_save_point("update")
                if self._epoch_end_requested or (max_steps is not None and self.completed_update_steps >= max_steps):
                    break  # _train_epoch_should_end(), inlined
        else:
            if not is_update_step:  # the data ended inside a window whose length was unknown: it updates too
                self._update_parameters(window_size, step - window_start + 1)
                self._reach_save_point("update")

    def _train_step(self, batch, window_size: int) -> torch.Tensor:
        batch_output = self.calculate_train_batch_loss(batch)
        if type(batch_output) is not dict or not batch_output.keys() >= _BATCH_OUTPUT_KEY_SET:
            _check_batch_output(batch_output, "calculate_train_batch_loss")  # a Mapping, or an error
        if self._train_loss_unchecked:  # once per run: the loss's type does not change from step to step
            _checks.check_batch_loss(batch_output, "calculate_train_batch_loss", training=True)
            self._train_loss_unchecked = False
        self._train_loss.update(batch_output["loss"], batch_output["batch_size"])
        handler = self.callback_handler  # as in _run_train_steps: an event nobody handles is not called
        "on_train_step_end" in handler.handled_events and handler.call_event("on_train_step_end", self, batch=batch, batch_output=batch_output)
        loss = batch_output["loss"]
        # Backward needs the loss, not the outputs: unless a callback kept them, the outputs (a
        # language model's logits: gigabytes) are freed here rather than at the next forward.
        del batch_output
        self.backward_step(loss / window_size if window_size > 1 else loss)
        # kept by the loop to the next step, as a hand loop keeps its loss: its graph (backward freed its saved
        # tensors) holds the parameters in C++ through the update, sparing torch ~35 GIL round trips a step
        return loss

    def _train_epoch_should_end(self) -> bool:
        return self._reached_max_train_steps() or self._epoch_end_requested

    def _update_parameters(self, window_size: int, batches_in_window: int) -> None:
        if batches_in_window < window_size:  # a window cut short by the end of data of unknown length
            _data.rescale_short_window(self.model.parameters(), window_size, batches_in_window)
        self.clip_gradients()
        handler = self.callback_handler  # as in _run_train_steps: an event nobody handles is not called
        "on_before_optimizer_step" in handler.handled_events and handler.call_event("on_before_optimizer_step", self, optimizer=self.optimizer)
        self.optimizer_step()
        # torch's own step (no grad scaler) is never skipped: no need to ask accelerate every update
        self.optimizer_step_was_skipped = self._torch_optimizer is None and self.accelerator.optimizer_step_was_skipped
        if self.scheduler is not None and not self.optimizer_step_was_skipped:
            self.scheduler_step()
        self.optimizer_zero_grad()
        self.completed_update_steps += 1
        "on_optimizer_step_end" in handler.handled_events and handler.call_event("on_optimizer_step_end", self, optimizer=self.optimizer)

    def _run_eval_epoch(self, dataloader: DataLoader, loss_metric_name: str) -> None:
        # an evaluation run from inside a training epoch must not end that epoch when it ends early
        training_epoch_end_requested, self._epoch_end_requested = self._epoch_end_requested, False
        sync_buffers_before_evaluation(self.model)
        self.eval_epoch_start()
        self.callback_handler.call_event("on_eval_epoch_start", self)
        loss_tracker = RunningLoss(self.device)
        check_loss = True
        with torch.no_grad():
            for batch in _data.real_samples_only(self._on_device(iter(dataloader), dataloader), dataloader, self.process_index):
                "on_eval_step_start" in self.callback_handler.handled_events and self.callback_handler.call_event("on_eval_step_start", self)
                self._eval_step(batch, loss_tracker, check_loss)
                check_loss = False
                if self._epoch_end_requested:
                    break
        self.run_history.update_metric(loss_metric_name, loss_tracker.compute(self.accelerator))
        self._epoch_end_requested = training_epoch_end_requested
        self.eval_epoch_end()
        self.callback_handler.call_event("on_eval_epoch_end", self)

    def _eval_step(self, batch, loss_tracker: RunningLoss, check_loss: bool) -> None:
        batch_output = self.calculate_eval_batch_loss(batch)  # freed on return, as in _train_step
        _check_batch_output(batch_output, "calculate_eval_batch_loss")
        if check_loss:  # the first step of each evaluation
            _checks.check_batch_loss(batch_output, "calculate_eval_batch_loss", training=False)
        loss_tracker.update(batch_output["loss"], batch_output["batch_size"])
        "on_eval_step_end" in self.callback_handler.handled_events and self.callback_handler.call_event("on_eval_step_end", self, batch=batch, batch_output=batch_output)

    def _reached_max_train_steps(self) -> bool:
        max_steps = self.run_config.max_num_train_steps
        return max_steps is not None and self.completed_update_steps >= max_steps

    # ------------------------------------------------------------------ evaluation and prediction

    def evaluate(
        self,
        dataset: Dataset | None = None,
        per_device_batch_size: int | None = None,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable | None = None,
        metric_prefix: str = "",
    ) -> dict[str, Any]:
        """Run one evaluation epoch over ``dataset`` (default: the last ``eval_dataset``), record
        ``eval_loss`` and return the metrics recorded during it, by name. Every sample counts
        exactly once, also on several processes. The model's train/eval mode is restored afterwards,
        so a callback may call this in the middle of training.

        ``metric_prefix`` is put before every name recorded (``"test_"``: ``test_eval_loss``,
        ``test_eval_accuracy``) and names the evaluation in the history's records (``"test"``)."""
        reuse_dataloader = (
            self.eval_dataloader is not None
            and dataset in (None, self.eval_dataset)
            and per_device_batch_size is None
            and dataloader_kwargs is None
            and collate_fn is None
        )
        if not reuse_dataloader:
            set_up_eval_dataloader(self, dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self._prepare_model_and_optimizer()
        was_training = self.model.training
        history = self.run_history
        counts_before = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
        history.bind_step_source(self._completed_update_steps)
        with history.metric_prefix(metric_prefix), history.evaluation():
            try:
                self.evaluation_run_start()
                self.callback_handler.call_event("on_evaluation_run_start", self)
                self._run_eval_epoch(self.eval_dataloader, "eval_loss")
            except StopTrainingError as error:
                self.callback_handler.call_event("on_stop_training_error", self, stop_training_error=error)
            self.evaluation_run_end()
            self.callback_handler.call_event("on_evaluation_run_end", self)
        self.model.train(was_training)
        return {
            name: self.run_history.get_latest_metric(name)
            for name in self.run_history.get_metric_names()
            if len(self.run_history.get_metric_values(name)) > counts_before.get(name, 0)
        }

    def _completed_update_steps(self) -> int:
        """The run history's step source: read when a value is recorded, never per step."""
        return self.completed_update_steps

    def predict(
        self,
        dataset: Dataset,
        per_device_batch_size: int = 8,
        collate_fn: Callable | None = None,
        dataloader_kwargs: dict[str, Any] | None = None,
    ):
        """The model's outputs for every sample of ``dataset``, exactly once and in dataset order,
        concatenated along the first dimension (tensors, or dicts/tuples of tensors) on the CPU.
        On several processes, each predicts a contiguous share and every process gets the result.
        The model's train/eval mode is restored afterwards."""
        return _prediction.predict(self, dataset, per_device_batch_size, collate_fn, dataloader_kwargs)

    # ------------------------------------------------------------------ hooks: creation

    def create_accelerator(self) -> Accelerator:
        """The ``accelerate.Accelerator`` that runs everything; built from ``accelerator_kwargs``.

        Launched on several processes (``torchrun``) on a machine without an accelerator, it
        trains on the CPUs with gloo, where a bare ``Accelerator()`` would run every process alone.
        """
        return Accelerator(**_accelerate_state.accelerator_kwargs_for(self.accelerator_kwargs))

    def create_train_dataloader(self, batch_size: int, dataloader_kwargs: dict[str, Any] | None) -> DataLoader:
        """A DataLoader over ``self.train_dataset`` (shuffled, unless ``dataloader_kwargs`` give a
        ``sampler`` or ``batch_sampler``, or it is an ``IterableDataset``: it orders itself); the
        trainer shards it across processes."""
        defaults = {"shuffle": not _data.is_iterable(self.train_dataset), "pin_memory": self.device.type == "cuda", "collate_fn": self.collate_fn}
        return DataLoader(self.train_dataset, **_checks.dataloader_kwargs(batch_size, defaults, dataloader_kwargs))

    def create_eval_dataloader(self, batch_size: int, dataloader_kwargs: dict[str, Any] | None) -> DataLoader:
        """A DataLoader over ``self.eval_dataset`` (in order, unless ``dataloader_kwargs`` give a
        ``sampler`` or ``batch_sampler``); the trainer shards it without padding."""
        defaults = {"shuffle": False, "pin_memory": self.device.type == "cuda", "collate_fn": self.collate_fn}
        return DataLoader(self.eval_dataset, **_checks.dataloader_kwargs(batch_size, defaults, dataloader_kwargs))

    def create_scheduler(self):
        """The learning-rate scheduler: ``create_scheduler_fn(optimizer)`` with placeholders filled."""
        scheduler_fn = TrainerPlaceholderValues.fill(self.create_scheduler_fn, self.run_config)
        # torch's schedulers count the steps of the optimizer they are given: give them the one
        # whose step() really runs (accelerate's wrapper calls it, and so may the trainer).
        scheduler = scheduler_fn(self._unwrapped_optimizer())
        _checks.check_scheduler_steps_without_a_metric(scheduler)
        return scheduler

    # ------------------------------------------------------------------ hooks: the run

    def training_run_start(self) -> None:
        """Called once before the first epoch."""

    def train_epoch_start(self) -> None:
        """Called at the start of each training epoch: puts the model in training mode."""
        self.model.train()

    def calculate_train_batch_loss(self, batch) -> dict[str, Any]:
        """The loss of one training batch: a dict with ``loss`` (a scalar tensor), ``model_outputs``
        and ``batch_size``; any other key reaches ``on_train_step_end`` unchanged.

        By default a tuple batch is ``(inputs, targets, ...)`` and a tensor batch is the inputs. A dict
        batch is passed by name: the model gets the keys its ``forward`` names (all of them if it
        takes ``**kwargs``), never one by position, and ``batch["labels"]`` is the target."""
        return self._forward_and_loss(batch)

    def backward_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (already divided by the accumulation window's length)."""
        if self._torch_optimizer is not None:
            loss.backward()  # all accelerate's backward would do here, less a division by 1
        else:
            self.accelerator.backward(loss)

    def clip_gradients(self) -> None:
        """Clip the gradients once per optimizer update, by value or norm as configured."""
        if self.run_config.gradient_clip_norm is not None:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.run_config.gradient_clip_norm)
        elif self.run_config.gradient_clip_value is not None:
            self.accelerator.clip_grad_value_(self.model.parameters(), self.run_config.gradient_clip_value)

    def optimizer_step(self) -> None:
        """Update the parameters."""
        (self._torch_optimizer or self.optimizer).step()

    def scheduler_step(self) -> None:
        """Advance the scheduler by one optimizer update."""
        self.scheduler.step()

    def optimizer_zero_grad(self) -> None:
        """Reset the gradients for the next accumulation window."""
        (self._torch_optimizer or self.optimizer).zero_grad()

    def train_epoch_end(self) -> None:
        """Called after each training epoch, once ``train_loss_epoch`` is recorded."""

    def eval_epoch_start(self) -> None:
        """Called at the start of each evaluation epoch: puts the model in evaluation mode."""
        self.model.eval()

    def calculate_eval_batch_loss(self, batch) -> dict[str, Any]:
        """The loss of one evaluation batch (run under ``torch.no_grad``); same contract as
        :meth:`calculate_train_batch_loss`."""
        return self._forward_and_loss(batch)

    def eval_epoch_end(self) -> None:
        """Called after each evaluation epoch, once its loss is recorded."""

    def training_run_epoch_end(self) -> None:
        """Called after each epoch's training and evaluation."""

    def training_run_end(self) -> None:
        """Called once at the end of the run, also when it was stopped early."""

    def evaluation_run_start(self) -> None:
        """Called when :meth:`evaluate` starts."""

    def evaluation_run_end(self) -> None:
        """Called when :meth:`evaluate` ends."""

    def calculate_batch_predictions(self, batch):
        """The model's outputs for one batch in :meth:`predict` (inputs: ``batch[0]``, the batch
        when it is a tensor, or a dict batch's keys that ``forward`` names, passed by name)."""
        if isinstance(batch, Mapping):
            return self.model(**self._forward_inputs_of(batch))
        return self.model(_model_inputs(batch))

    def _forward_and_loss(self, batch) -> dict[str, Any]:
        if isinstance(batch, (list, tuple)):  # first: isinstance(batch, Mapping) is an ABC check, slow on a list
            model_outputs, targets = self.model(batch[0]), batch[1] if len(batch) > 1 else None
        elif isinstance(batch, Mapping):
            model_outputs, targets = self.model(**self._forward_inputs_of(batch)), batch.get("labels")
        else:
            model_outputs, targets = self.model(batch), None
        loss = _loss_from_model_outputs(model_outputs) if self.loss_func is None else self.loss_func(model_outputs, targets)
        return {"loss": loss, "model_outputs": model_outputs, "batch_size": _batch_size(batch)}

    def _forward_inputs_of(self, batch: Mapping) -> Mapping:
        return self._forward_inputs.select(self.model, batch, self._unwrapped_model, self.loss_func is not None)

    def _unwrapped_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model, keep_torch_compile=False)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(
        self,
        save_path,
        checkpoint_kwargs: dict[str, Any] | None = None,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
    ) -> None:
        """Save the model weights (without DDP or ``torch.compile`` wrappers), the optimizer and
        scheduler state, and ``checkpoint_kwargs`` (plain data only) to one file, atomically, from
        the main process. Call it on every process."""
        checkpointing.save_checkpoint(self, save_path, checkpoint_kwargs, save_optimizer, save_scheduler)

    def load_checkpoint(self, checkpoint_path, load_optimizer: bool = True, load_scheduler: bool = True) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save_checkpoint` (weights-only: nothing arbitrary is
        unpickled) and return its extra keys."""
        return checkpointing.load_checkpoint(self, checkpoint_path, load_optimizer, load_scheduler)

    # ------------------------------------------------------------------ training states: exact resume

    def save_training_state(self, save_dir: str | os.PathLike) -> Path:
        """Save everything this run needs to continue exactly to the folder ``save_dir`` (replaced
        atomically if it exists): weights, optimizer, scheduler, gradient scaler, every random
        generator of every process, the position in the epoch, the run history and the callbacks'
        states. ``train(..., resume_from=save_dir)`` continues from it.

        Call it on every process, from ``on_save_point`` (where a state resumes exactly) or after
        ``train`` returns; the main process writes, the others wait. The folder must be on a file
        system that every process can read when resuming.
        """
        return self._states.save(save_dir)

    def _reach_save_point(self, point: str) -> None:
        self._save_point = point
        try:
            self.callback_handler.call_event("on_save_point", self, point=point)
        finally:
            self._save_point = None

    def _unwrapped_optimizer(self) -> torch.optim.Optimizer:
        return self.optimizer.optimizer if isinstance(self.optimizer, AcceleratedOptimizer) else self.optimizer

    # ------------------------------------------------------------------ helpers for users and callbacks

    def get_model(self, keep_torch_compile: bool = True) -> torch.nn.Module:
        """The model without the wrappers added for distributed training (and, if asked, without
        the ``torch.compile`` wrapper)."""
        return self.accelerator.unwrap_model(self.model, keep_torch_compile=keep_torch_compile)

    def print(self, *args, **kwargs) -> None:
        """``print`` on the main process of each node only."""
        self.accelerator.print(*args, **kwargs)

    def gather(self, tensor):
        """Concatenate ``tensor`` (or nested tensors) from every process along the first dimension."""
        return self.accelerator.gather(tensor)

    def gather_for_metrics(self, data):
        """Like :meth:`gather`, for the training dataloader's batches, dropping padded duplicates."""
        return self.accelerator.gather_for_metrics(data)

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        """Reduce ``tensor`` over every process (``"sum"`` or ``"mean"``)."""
        return self.accelerator.reduce(tensor, reduction)

    def any_process(self, flag: bool | torch.Tensor) -> bool:
        """True on every process if ``flag`` is true on any: lets a callback that decides on one
        process stop all of them together (call it on every process at the same point)."""
        if self.num_processes == 1:
            return bool(flag)
        value = torch.as_tensor(flag, device=self.device).to(torch.float32).reshape(())
        return bool(self.accelerator.reduce(value, "sum").item() > 0)

    def num_real_samples(self, batch_size: int) -> int:
        """How many of this process's ``batch_size`` samples in the current training batch are
        real. To give every process the same number of steps, the last batches of an epoch are
        completed with samples from its start; of the last step's samples, taken in process order,
        only the first ``len(dataset) % (batch size * processes)`` are real. Metrics use this to
        count each training sample once, without communicating."""
        remainder = getattr(self.train_dataloader, "remainder", -1)
        if self.num_processes == 1 or not getattr(self.train_dataloader, "end_of_dataloader", False) or remainder <= 0:
            return batch_size
        first = self.process_index * batch_size
        return min(max(remainder - first, 0), batch_size)

    def request_epoch_end(self) -> None:
        """End the current epoch early: an evaluation epoch after the current step, a training
        epoch after the current accumulation window's update. Request it on every process at the
        same step (decide with :meth:`any_process` if needed) so that processes stay in step."""
        self._epoch_end_requested = True

    def wait_for_everyone(self) -> None:
        """Block until every process reaches this point."""
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ set-up

    def _prepare_model_and_optimizer(self) -> None:
        self.model, self.optimizer = self._preparation.wrap(self.accelerator, self.model, self.optimizer, self.get_model)
        # decided once per run rather than on every step: the wrapped torch optimizer to call
        # directly, or None where accelerate's wrappers must run
        self._torch_optimizer = self.optimizer.optimizer if plain_optimizer_calls(self.accelerator, self.optimizer) else None

    def _prepare_dataloader(self, dataloader: DataLoader, train: bool) -> DataLoader:
        return prepare_dataloader(self.accelerator, dataloader, train, self.num_processes)

    def _on_device(self, batches: Iterator, dataloader: DataLoader) -> Iterator:
        """``dataloader``'s ``batches`` on the trainer's device."""
        return on_device(batches, dataloader, self.device, self.accelerator.distributed_type)


@functools.cache
def _destroy_process_group_at_exit() -> None:
    # A gloo process group still alive when the interpreter shuts down can abort a process that
    # trained successfully ("terminate called without an active exception", exit code -6): its worker
    # threads outlive Python. Destroying it while Python is whole avoids that; cached: once per process.
    atexit.register(_destroy_process_group_if_alive)


def _destroy_process_group_if_alive() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _check_batch_output(batch_output, hook_name: str) -> None:
    if type(batch_output) is dict and batch_output.keys() >= _BATCH_OUTPUT_KEY_SET:
        return  # the usual case, in one comparison: this runs on every step
    if not isinstance(batch_output, Mapping) or any(key not in batch_output for key in _BATCH_OUTPUT_KEYS):
        found = sorted(batch_output) if isinstance(batch_output, Mapping) else type(batch_output).__name__
        raise TypeError(
            f"{hook_name} must return a dict with the keys {list(_BATCH_OUTPUT_KEYS)}; it returned {found}."
        )


def _model_inputs(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _batch_size(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.size(0)
    # lists and tuples first: isinstance(batch, Mapping) is an ABC check, slow for a list
    items = batch if isinstance(batch, (list, tuple)) else batch.values() if isinstance(batch, Mapping) else batch
    for item in items:
        if isinstance(item, torch.Tensor) and item.dim() > 0:
            return item.size(0)
        if isinstance(item, (list, tuple)):
            return len(item)
    raise TypeError(
        "Cannot tell this batch's size: override calculate_train_batch_loss / calculate_eval_batch_loss "
        "and return 'batch_size' yourself."
    )


def _loss_from_model_outputs(model_outputs) -> torch.Tensor:
    if isinstance(model_outputs, Mapping) and "loss" in model_outputs:
        return model_outputs["loss"]
    loss = getattr(model_outputs, "loss", None)
    if loss is None:
        raise ValueError(
            "loss_func is None, so the loss must come from the model's output, but it has no 'loss'. "
            "Pass labels in the batch (as the model expects) or give the Trainer a loss_func."
        )
    return loss
