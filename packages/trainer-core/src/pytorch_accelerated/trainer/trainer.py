"""The :class:`Trainer`: a training loop made of overridable hooks, on top of HuggingFace accelerate."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from torch.utils.data import DataLoader, Dataset

from . import _accelerate_state, _checks, _data, _prediction, _sharding, checkpointing, warm_start
from ._arguments import check_positive_int
from ._dataloaders import on_device, prepare_dataloader
from ._evaluation import EvenForwards, real_samples_only, spare_batch, sync_buffers_before_evaluation
from ._forward_inputs import ForwardInputs
from ._preparation import ModelPreparation, plain_optimizer_calls
from ._process_group import tear_down_at_exit
from ._removed_hooks import check_no_removed_hooks
from .accumulation import AccumulationWindows, Window, WindowItems, rescale_cut_window
from .agreement import StopAgreement, any_process
from .callbacks import CallbackHandler, StopTrainingError, TrainerCallback
from .default_callbacks import DEFAULT_CALLBACKS
from .position import RunPosition
from .resuming import Resume
from .run_config import TrainerPlaceholderValues, TrainerRunConfig, create_run_config, default_eval_batch_size
from .run_history import VALIDATION, InMemoryRunHistory, RunHistory
from .running_loss import RunningLoss
from .safe_files import CheckpointError

_NO_CONTEXT = contextlib.nullcontext()


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
        with _sharding.environment_kept() as changed:  # a plugin sets ACCELERATE_USE_FSDP process-wide
            self.accelerator: Accelerator = self.create_accelerator()
        _sharding.shard_as_asked(self.accelerator, self.accelerator_kwargs, changed)
        _checks.check_mixed_precision_runs(self.accelerator)
        _checks.check_launched_as_asked(self.accelerator)
        self._mixed_precision = self.accelerator.mixed_precision
        self._distributed_type = self.accelerator.distributed_type
        self._forwards_are_collective = _sharding.forwards_are_collective(self.accelerator)
        self._engine_steps_in_backward = _sharding.engine_steps_in_backward(self.accelerator)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            tear_down_at_exit(self)  # so that gloo's threads cannot abort a successful process at exit
        # read once: accelerate's properties cost microseconds a read
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
        self.optimizer_step_was_skipped = False
        self._position = RunPosition()
        self._running_train_loss = RunningLoss(self.device)
        self._window_items = WindowItems(self.device)
        self._resume: Resume | None = None  # the current (or last) run's
        self._run_eval: dict[str | None, tuple[Dataset, DataLoader]] = {}  # the run's evaluation sets by name
        self._stop_agreement: StopAgreement | None = None
        self._num_epochs_asked = 0
        self._in_training_run = False
        self._save_point: str | None = None
        self._preparation = ModelPreparation()
        self._torch_optimizer: torch.optim.Optimizer | None = None
        self._forward_inputs = ForwardInputs()
        self._loss_unchecked = True
        self._kept_loss: torch.Tensor | None = None
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

    @property
    def position(self) -> RunPosition:
        """Where the current (or last) training run is: updates, epochs and batches done, stopped or not."""
        return self._position

    @property
    def completed_update_steps(self) -> int:
        """The optimizer updates done in the current (or last) run."""
        return self._position.completed_update_steps

    @property
    def completed_epoch_batches(self) -> int:
        """The batches of the current training epoch done before the one being trained."""
        return self._position.epoch_batches

    @property
    def resumed_from(self) -> Path | None:
        """The training state the current (or last) run resumed from, or ``None``."""
        return self._resume.resumed_from if self._resume is not None else None

    @property
    def running_train_loss(self) -> RunningLoss:
        """This process's running mean training loss of the epoch, kept on the device."""
        return self._running_train_loss

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

        Args:
            train_dataset: the training data (map-style, or an ``IterableDataset``).
            num_epochs: the number of epochs.
            eval_dataset: evaluated after each epoch, or ``None``; several sets as a dict by name
                (``{"val": a, "ood": b}``), each recorded under its name (``val_eval_loss_epoch``, ...).
            per_device_batch_size: the batch size of each process; one update uses
                ``per_device_batch_size * gradient_accumulation_steps * num_processes`` samples.
            max_num_train_steps: stop after this many optimizer updates (needed for data without a length).
            gradient_accumulation_steps: batches per optimizer update.
            gradient_clip_value: clip each gradient to this value, once per update.
            gradient_clip_norm: clip the gradients' norm to this value, once per update.
            create_scheduler_fn: builds the scheduler from the optimizer (use ``functools.partial`` with
                :class:`TrainerPlaceholderValues` for sizes known only now); it steps once per update,
                and not when the update was skipped.
            collate_fn: the dataloaders' ``collate_fn``.
            train_dataloader_kwargs: more keyword arguments for the training ``DataLoader``.
            eval_dataloader_kwargs: more keyword arguments for the evaluation ``DataLoader``.
            reset_run_history: forget the metrics of earlier runs first.
            resume_from: continue an interrupted run exactly, as if it had never stopped: a folder written
                by :meth:`save_training_state`, a folder of them (the one that got furthest), or
                ``"latest"`` (the newest one the callbacks that save states find; a fresh start when
                there is none). Pass the arguments the run was started with.
        """
        _checks.check_train_arguments(
            train_dataset,
            num_epochs,
            eval_dataset,
            per_device_batch_size,
            max_num_train_steps,
            gradient_accumulation_steps,
            gradient_clip_value,
            gradient_clip_norm,
            create_scheduler_fn,
        )
        _sharding.check_train_arguments(self.accelerator, gradient_clip_value, resume_from)
        self._take_run_arguments(train_dataset, collate_fn, create_scheduler_fn, reset_run_history)
        self._num_epochs_asked = num_epochs
        run_settings = (per_device_batch_size, gradient_accumulation_steps, gradient_clip_norm)
        self._prepare_model_and_optimizer(run_settings)
        self._create_run_dataloaders(
            per_device_batch_size, train_dataloader_kwargs, eval_dataloader_kwargs, eval_dataset
        )
        eval_dataloaders = [dataloader for _, dataloader in self._run_eval.values()]
        self.run_config = create_run_config(
            self.accelerator,
            self.train_dataloader,
            eval_dataloaders,
            num_epochs,
            per_device_batch_size,
            max_num_train_steps,
            gradient_accumulation_steps,
            gradient_clip_value,
            gradient_clip_norm,
        )
        self.scheduler = self.create_scheduler() if create_scheduler_fn is not None else None
        self._start_run_state()
        try:
            with self._stop_agreement.stopping_cleanly(on_stop=self._stop_early):
                # a saved state before the start events, its callbacks' after
                with self._resume.begin(resume_from):
                    self.training_run_start()
                    self.callback_handler.call_event("on_training_run_start", self)
                if self._position.at_run_start:
                    self._reach_save_point("run_start")
                while not self._run_is_over():
                    self._train_epoch()
                    self._evaluate_epoch()
                    self._end_epoch()
            self._reach_save_point("run_end")
            self._resume.end()  # waits for a state still being written: a failed write fails the run
            self.training_run_end()
        except BaseException as error:
            self._resume.end(error)
            self.callback_handler.call_event("on_training_run_error", self, error=error)
            raise
        finally:
            self._in_training_run, self._save_point = False, None
        # the run has ended: an error a callback raises here (optuna's TrialPruned, say) propagates as it is
        self.callback_handler.call_event("on_training_run_end", self)
        return self.run_history

    def _train_epoch(self) -> None:
        """One training epoch: a step per batch, the parameters updated at the end of each accumulation
        window."""
        batches = self._resume.epoch_batches()  # a resumed epoch's skip to its position
        self.train_epoch_start()
        self.callback_handler.call_event("on_train_epoch_start", self)
        windows = AccumulationWindows.of(self.train_dataloader, self.run_config.gradient_accumulation_steps)
        for batch in self._on_device(batches, self.train_dataloader):
            window = windows.at(self._position.epoch_batches)
            self._train_step(batch, window)
            if window.closes:
                self._update_parameters(window)
                if self._position.train_epoch_should_end(self.run_config.max_num_train_steps):
                    break
        cut_window = windows.left_open(self._position.epoch_batches)
        if cut_window is not None:  # data of unknown length ended inside a window: it updates too
            self._update_parameters(cut_window)
        self.run_history.update_metric("train_loss_epoch", self._running_train_loss.compute(self.accelerator))
        self.train_epoch_end()
        self.callback_handler.call_event("on_train_epoch_end", self)

    def _train_step(self, batch, window: Window) -> None:
        """Forward and loss, backward; gradients are not synchronised between processes inside a window."""
        self.callback_handler.call_event("on_train_step_start", self)
        with self._accumulating(window):
            batch_output = self.calculate_train_batch_loss(batch)
            _checks.check_batch_output(
                batch_output, "calculate_train_batch_loss", check_loss=self._loss_unchecked
            )
            self._loss_unchecked = False
            loss, num_items = batch_output["loss"], batch_output.get("num_items_in_batch")
            self._running_train_loss.update(loss, batch_output["batch_size"], num_items)
            self.callback_handler.call_event(
                "on_train_step_end", self, batch=batch, batch_output=batch_output
            )
            # the outputs (a language model's logits) are freed before backward, unless a callback kept them
            del batch_output
            if self._engine_steps_in_backward:  # DeepSpeed updates in the backward of a window's last batch
                self.accelerator.sync_gradients = window.closes
            self.backward_step(self._share_of_window(loss, window, num_items))
        self._position.epoch_batches += 1
        # kept to the next step, as a hand loop keeps its loss: its graph holds the parameters in C++
        # through the update, which spares torch a GIL round trip per parameter reference
        self._kept_loss = loss

    def _accumulating(self, window: Window):
        """Inside an accumulation window on several processes: gradients are not synchronised
        (``no_sync``)."""
        if self._several_processes and not window.closes:
            return self.accelerator.no_sync(self.model)
        return _NO_CONTEXT

    def _share_of_window(self, loss: torch.Tensor, window: Window, num_items) -> torch.Tensor:
        """What a batch backpropagates: its loss divided by the window's batches, or, given the items (tokens)
        it is a mean over, summed over them (the update divides by the global window's items)."""
        if num_items is not None:
            if self._engine_steps_in_backward:
                _sharding.refuse_items_under_deepspeed()
            return self._window_items.summed(loss, num_items)
        return loss / window.size if window.size > 1 else loss

    def _update_parameters(self, window: Window) -> None:
        """The update at the end of an accumulation window, then its save point."""
        if self._window_items.batches:
            self._window_items.average_gradients(self.model.parameters(), window, self.accelerator)
        elif window.filled < window.size and not self._engine_steps_in_backward:  # DeepSpeed has updated
            rescale_cut_window(self.model.parameters(), window)
        self.clip_gradients()
        self.callback_handler.call_event("on_before_optimizer_step", self, optimizer=self.optimizer)
        self.optimizer_step()
        # torch's own step (no grad scaler) is never skipped: no need to ask accelerate every update
        self.optimizer_step_was_skipped = (
            self._torch_optimizer is None and self.accelerator.optimizer_step_was_skipped
        )
        if self.scheduler is not None and not self.optimizer_step_was_skipped:
            self.scheduler_step()
        self.optimizer_zero_grad()
        self._position.completed_update_steps += 1
        self.callback_handler.call_event("on_optimizer_step_end", self, optimizer=self.optimizer)
        self._reach_save_point("update")

    def _evaluate_epoch(self) -> None:
        """The evaluation after a training epoch, on each of the run's evaluation sets, under its name."""
        for name, (dataset, dataloader) in self._run_eval.items():
            # a callback may have evaluated another
            self.eval_dataset, self.eval_dataloader = (
                dataset,
                dataloader,
            )
            with self.run_history.metric_prefix(_prefix_of(name)), self.run_history.evaluation(VALIDATION):
                self._eval_epoch(dataloader, "eval_loss_epoch")

    def _eval_epoch(self, dataloader: DataLoader, loss_metric_name: str) -> None:
        """One evaluation epoch under ``torch.no_grad``, its loss recorded as ``loss_metric_name``."""
        # an evaluation run from inside a training epoch must not end that epoch when it ends early
        training_epoch_end_requested, self._position.epoch_end_requested = (
            self._position.epoch_end_requested,
            False,
        )
        sync_buffers_before_evaluation(self.model)
        self.eval_epoch_start()
        self.callback_handler.call_event("on_eval_epoch_start", self)
        eval_loss = RunningLoss(self.device)
        with torch.no_grad():
            batches = self._eval_batches(dataloader)
            for step, batch in enumerate(batches):
                self._eval_step(batch, eval_loss, check_loss=step == 0)
                if self._position.epoch_end_requested:
                    break
        self.run_history.update_metric(loss_metric_name, eval_loss.compute(self.accelerator))
        self._position.epoch_end_requested = training_epoch_end_requested
        self.eval_epoch_end()
        self.callback_handler.call_event("on_eval_epoch_end", self)

    def _eval_batches(self, dataloader: DataLoader) -> Iterable:
        """``dataloader``'s batches on the device, each sample once. Where every forward is a collective
        (FSDP), every process runs as many: a process with fewer batches runs the model on dropped ones."""
        batches = self._on_device(iter(dataloader), dataloader)
        if not self._forwards_are_collective:
            return real_samples_only(batches, dataloader, self.process_index)
        forward = self.calculate_eval_batch_loss
        batches = real_samples_only(batches, dataloader, self.process_index, forward_empty=forward)
        spare = functools.partial(spare_batch, dataloader.dataset, dataloader.collate_fn, self.device)
        # a dispatched iterable dataset gives every process as many batches
        num_batches = None if _data.is_iterable(dataloader.dataset) else len(dataloader)
        return EvenForwards(batches, self.accelerator, forward, spare, num_batches)

    def _eval_step(self, batch, eval_loss: RunningLoss, check_loss: bool) -> None:
        self.callback_handler.call_event("on_eval_step_start", self)
        batch_output = self.calculate_eval_batch_loss(batch)  # freed on return, as in _train_step
        _checks.check_batch_output(
            batch_output, "calculate_eval_batch_loss", check_loss=check_loss, training=False
        )
        eval_loss.update(
            batch_output["loss"], batch_output["batch_size"], batch_output.get("num_items_in_batch")
        )
        self.callback_handler.call_event("on_eval_step_end", self, batch=batch, batch_output=batch_output)

    def _end_epoch(self) -> None:
        """The end of an epoch's training and evaluation: its hook and event, then the next epoch's
        position."""
        self.training_run_epoch_end()
        self.callback_handler.call_event("on_training_run_epoch_end", self)
        self.run_history.increment_epoch()
        self._position.end_epoch()
        self._running_train_loss.reset()
        self._reach_save_point("epoch_end")

    def _run_is_over(self) -> bool:
        position = self._position
        if position.in_epoch:
            return False  # an epoch the run resumed inside is finished first
        # the epochs asked for, not those max_num_train_steps sized: a run resumed with more steps goes on
        epochs_done = position.epochs_completed >= self._num_epochs_asked
        return position.stopped or epochs_done or position.reached(self.run_config.max_num_train_steps)

    def _stop_early(self, error: StopTrainingError) -> None:
        self._position.stopped = True
        self.callback_handler.call_event("on_stop_training_error", self, stop_training_error=error)

    def _reach_save_point(self, point: str) -> None:
        self._save_point = point
        self.callback_handler.call_event("on_save_point", self, point=point)
        self._save_point = None

    def _take_run_arguments(self, train_dataset, collate_fn, create_scheduler_fn, reset_run_history) -> None:
        _accelerate_state.check_is_own(self.accelerator, self._mixed_precision, self._distributed_type)
        self.train_dataset = train_dataset
        self.collate_fn, self.create_scheduler_fn = collate_fn, create_scheduler_fn
        if reset_run_history:
            self.run_history.reset()
        self.run_history.bind_step_source(self._completed_update_steps)
        if not (self._engine_steps_in_backward and self._preparation.prepared_model is not None):
            # (a DeepSpeed engine's optimizer holds flat copies of the parameters, not the model's)
            model = self._preparation.unwrapped(self.accelerator, self.model)
            _checks.warn_of_parameters_outside_the_optimizer(self._unwrapped_optimizer(), model)
        self._loss_unchecked = True

    def _create_run_dataloaders(self, batch_size: int, train_kwargs, eval_kwargs, eval_dataset) -> None:
        """The training dataloader, and one for each evaluation set (a single one is named ``None``)."""
        self.train_dataloader = self._prepare_dataloader(
            self.create_train_dataloader(batch_size, train_kwargs), train=True
        )
        self.eval_dataloader, self._run_eval = None, {}
        named = (
            eval_dataset
            if isinstance(eval_dataset, Mapping)
            else {None: eval_dataset}
            if eval_dataset is not None
            else {}
        )
        for name, self.eval_dataset in named.items():  # create_eval_dataloader reads self.eval_dataset
            self.eval_dataloader = self._prepare_dataloader(
                self.create_eval_dataloader(batch_size, eval_kwargs), train=False
            )
            self._run_eval[name] = (self.eval_dataset, self.eval_dataloader)

    def _start_run_state(self) -> None:
        """A new run's position, running loss and resume, its dataloaders and scheduler being ready."""
        self._position = RunPosition()
        self._running_train_loss = RunningLoss(self.device)
        self._window_items = WindowItems(self.device)
        self._stop_agreement = StopAgreement(self.accelerator, self._position, self.run_history)
        self._resume = Resume(
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            self.run_history,
            self._position,
            self._running_train_loss,
            self.train_dataloader,
            self.callback_handler,
            self.run_config,
        )
        self._in_training_run = True

    # ------------------------------------------------------------------ evaluation and prediction

    def evaluate(
        self,
        dataset: Dataset | None = None,
        per_device_batch_size: int | None = None,
        dataloader_kwargs: dict[str, Any] | None = None,
        collate_fn: Callable | None = None,
        metric_prefix: str = "",
    ) -> dict[str, Any]:
        """Run one evaluation epoch and return the metrics recorded during it, by name.

        Every sample counts exactly once, also on several processes. The model's train/eval mode is
        restored afterwards, so a callback may call this in the middle of training.

        Args:
            dataset: the data to evaluate on, or several sets as a dict by name (each recorded under
                ``metric_prefix`` and its name); by default the last run's evaluation set(s).
            per_device_batch_size: the batch size of each process; the last run's by default.
            dataloader_kwargs: more keyword arguments for the ``DataLoader``.
            collate_fn: the ``DataLoader``'s ``collate_fn``.
            metric_prefix: put before every name recorded (``"test_"``: ``test_eval_loss``,
                ``test_eval_accuracy``); it names the evaluation in the history's records (``"test"``).
        """
        if dataset is None and len(self._run_eval) > 1:
            dataset = {name: data for name, (data, _) in self._run_eval.items()}
        if isinstance(dataset, Mapping):  # several sets: one evaluation each, under its name
            return {
                metric: value
                for name, data in _checks.named_eval_sets(dataset, "evaluate()").items()
                for metric, value in self.evaluate(
                    data,
                    per_device_batch_size,
                    dataloader_kwargs,
                    collate_fn,
                    metric_prefix + _prefix_of(name),
                ).items()
            }
        if (
            per_device_batch_size is not None
            or dataloader_kwargs is not None
            or collate_fn is not None
            or not self._reuse_eval_dataloader(dataset)
        ):
            self._set_up_eval_dataloader(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self._prepare_model_and_optimizer()
        was_training = self.model.training
        history = self.run_history
        counts_before = {name: len(history.get_metric_values(name)) for name in history.get_metric_names()}
        history.bind_step_source(self._completed_update_steps)
        with history.metric_prefix(metric_prefix), history.evaluation():
            try:
                self.evaluation_run_start()
                self.callback_handler.call_event("on_evaluation_run_start", self)
                self._eval_epoch(self.eval_dataloader, "eval_loss")
            except StopTrainingError as error:
                self.callback_handler.call_event("on_stop_training_error", self, stop_training_error=error)
            self.evaluation_run_end()
            self.callback_handler.call_event("on_evaluation_run_end", self)
        self.model.train(was_training)
        return {
            name: history.get_latest_metric(name)
            for name in history.get_metric_names()
            if len(history.get_metric_values(name)) > counts_before.get(name, 0)
        }

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
        Per-batch values among the outputs (a transformers model's scalar ``loss``) are not per sample:
        they are left out of a dict, and ``None`` in a tuple (``evaluate()`` gives the loss). The model's
        train/eval mode is restored afterwards.

        Args:
            dataset: a map-style dataset.
            per_device_batch_size: the batch size of each process.
            collate_fn: the ``DataLoader``'s ``collate_fn``; the trainer's by default.
            dataloader_kwargs: more keyword arguments for the ``DataLoader`` (never ``shuffle=True``).
        """
        _prediction.check_arguments(dataset, per_device_batch_size)
        self._prepare_model_and_optimizer()
        kwargs = {"collate_fn": collate_fn or self.collate_fn, **(dataloader_kwargs or {})}
        return _prediction.predict(
            self.accelerator,
            self.model,
            self.calculate_batch_predictions,
            dataset,
            per_device_batch_size,
            kwargs,
            even_forwards=self._forwards_are_collective,
        )

    def _reuse_eval_dataloader(self, dataset) -> bool:
        """Whether ``dataset`` has a dataloader already (the current one, or one of the run's sets): made
        current."""
        if self.eval_dataloader is not None and dataset in (None, self.eval_dataset):
            return True
        for data, dataloader in self._run_eval.values():
            if data is dataset:
                self.eval_dataset, self.eval_dataloader = data, dataloader
                return True
        return False

    def _set_up_eval_dataloader(self, dataset, per_device_batch_size, dataloader_kwargs, collate_fn) -> None:
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError(
                "evaluate() needs a dataset: pass evaluate(dataset) or train(..., eval_dataset=...) first."
            )
        if collate_fn is not None:
            self.collate_fn = collate_fn
        batch_size = per_device_batch_size or default_eval_batch_size(self.run_config)
        check_positive_int("per_device_batch_size", batch_size)
        _checks.check_not_empty(dataset, "The evaluation dataset", "evaluate()")
        self.eval_dataset = dataset
        self.eval_dataloader = self._prepare_dataloader(
            self.create_eval_dataloader(batch_size, dataloader_kwargs), train=False
        )

    def _completed_update_steps(self) -> int:
        """The run history's step source: read when a value is recorded, never per step."""
        return self._position.completed_update_steps

    # ------------------------------------------------------------------ hooks: creation

    def create_accelerator(self) -> Accelerator:
        """The ``accelerate.Accelerator`` that runs everything; built from ``accelerator_kwargs``.

        Launched on several processes (``torchrun``) on a machine without an accelerator, it
        trains on the CPUs with gloo, where a bare ``Accelerator()`` would run every process alone.
        """
        return Accelerator(**_accelerate_state.accelerator_kwargs_for(self.accelerator_kwargs))

    def create_train_dataloader(
        self, batch_size: int, dataloader_kwargs: dict[str, Any] | None
    ) -> DataLoader:
        """A DataLoader over ``self.train_dataset`` (shuffled, unless ``dataloader_kwargs`` give a
        ``sampler`` or ``batch_sampler``, or it is an ``IterableDataset``: it orders itself); the
        trainer shards it across processes."""
        defaults = {
            "shuffle": not _data.is_iterable(self.train_dataset),
            "pin_memory": self.device.type == "cuda",
            "collate_fn": self.collate_fn,
        }
        return DataLoader(
            self.train_dataset, **_checks.dataloader_kwargs(batch_size, defaults, dataloader_kwargs)
        )

    def create_eval_dataloader(self, batch_size: int, dataloader_kwargs: dict[str, Any] | None) -> DataLoader:
        """A DataLoader over ``self.eval_dataset`` (in order, unless ``dataloader_kwargs`` give a
        ``sampler`` or ``batch_sampler``); the trainer shards it without padding."""
        defaults = {"shuffle": False, "pin_memory": self.device.type == "cuda", "collate_fn": self.collate_fn}
        return DataLoader(
            self.eval_dataset, **_checks.dataloader_kwargs(batch_size, defaults, dataloader_kwargs)
        )

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
        takes ``**kwargs``), never one by position, and ``batch["labels"]`` is the target.

        A loss that is a mean over items of uneven number (a language model's non-padding tokens) adds
        ``num_items_in_batch``: their count, a tensor on the device. Each update's gradient is then that of
        the mean over every item of the global batch (all accumulated batches, all processes), and the
        logged losses are means over items too.

        Args:
            batch: a batch of the training dataloader, on the trainer's device.
        """
        return self._forward_and_loss(batch)

    def backward_step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (already divided by the accumulation window's length, or summed over its
        items)."""
        if self._torch_optimizer is not None:
            loss.backward()  # all accelerate's backward would do here, less a division by 1
        elif self._engine_steps_in_backward:
            self.accelerator.backward(loss, scale_wrt_gas=False)  # DeepSpeed would divide by the window again
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
        # first: isinstance(batch, Mapping) is an ABC check, slow on a list
        if isinstance(batch, (list, tuple)):
            model_outputs, targets = self.model(batch[0]), batch[1] if len(batch) > 1 else None
        elif isinstance(batch, Mapping):
            model_outputs, targets = self.model(**self._forward_inputs_of(batch)), batch.get("labels")
        else:
            model_outputs, targets = self.model(batch), None
        try:  # costs nothing until it raises
            if self.loss_func is None:
                loss = _loss_from_model_outputs(model_outputs)
            else:
                loss = self.loss_func(model_outputs, targets)
        except Exception as error:
            # inputs only: say so, not torch's error in the loss
            if targets is None and self.loss_func is not None:
                raise _checks.no_targets_error(batch) from error
            raise
        return {"loss": loss, "model_outputs": model_outputs, "batch_size": _batch_size(batch)}

    def _forward_inputs_of(self, batch: Mapping) -> Mapping:
        return self._forward_inputs.select(
            self.model, batch, self._unwrapped_model, self.loss_func is not None
        )

    def _unwrapped_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model, keep_torch_compile=False)

    # ------------------------------------------------------------------ checkpoints and training states

    def save_checkpoint(
        self,
        save_path,
        checkpoint_kwargs: dict[str, Any] | None = None,
        save_optimizer: bool = True,
        save_scheduler: bool = True,
    ) -> None:
        """Save the model weights (without DDP or ``torch.compile`` wrappers), the optimizer and scheduler
        states and extra plain data to one file, atomically, from the main process. Call it on every process.

        Args:
            save_path: the file to write.
            checkpoint_kwargs: extra plain data (tensors, numbers, strings, lists and dicts of these).
            save_optimizer: include the optimizer's state.
            save_scheduler: include the scheduler's state, if there is a scheduler.
        """
        checkpointing.save_checkpoint(
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            save_path,
            checkpoint_kwargs,
            save_optimizer,
            save_scheduler,
        )

    def load_checkpoint(
        self, checkpoint_path, load_optimizer: bool = True, load_scheduler: bool = True
    ) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save_checkpoint` (weights-only: nothing arbitrary is
        unpickled) and return it whole, its extra keys included (as 0.1.61 did).

        Args:
            checkpoint_path: the file to read.
            load_optimizer: put the optimizer's state back, if the file holds one.
            load_scheduler: put the scheduler's state back, if the file holds one.
        """
        return checkpointing.load_checkpoint(
            self.accelerator,
            self.model,
            self.optimizer,
            self.scheduler,
            checkpoint_path,
            load_optimizer,
            load_scheduler,
        )

    def save_training_state(
        self,
        save_dir: str | os.PathLike,
        checkpoint_kwargs: dict | None = None,
        *,
        asynchronous: bool = False,
    ) -> Path:
        """Save everything this run needs to continue exactly to the folder ``save_dir`` (replaced
        atomically if it exists): weights, optimizer, scheduler, gradient scaler, every random
        generator of every process, the position in the epoch, the run history, the callbacks'
        states and ``checkpoint_kwargs``. ``train(..., resume_from=save_dir)`` continues from it.

        Call it on every process, from ``on_save_point`` (where a state resumes exactly) or after
        ``train`` returns; the main process writes, the others wait. The folder must be on a file
        system that every process can read when resuming.

        With ``asynchronous=True`` (during a run), the call returns once the state is copied to host
        memory, and the main process writes it in a background thread while training goes on: the
        folder appears, complete, when the write ends. At most one state is written at a time (the
        next save waits for it), the run's end waits for it too, and a write that failed raises its
        error on every process there. The host copy is kept from one save to the next (the state's
        size in host memory, pinned from a CUDA device) until the run ends.

        Args:
            save_dir: the folder to write.
            checkpoint_kwargs: extra plain data, returned by :meth:`load_training_state`.
            asynchronous: write in the background instead of before returning.
        """
        _sharding.check_training_state_supported(self.accelerator)
        if self._resume is None:
            raise CheckpointError(
                "Nothing to save yet: save_training_state saves a run started with train()."
            )
        point = self._save_point if self._in_training_run else "run_end"
        return self._resume.save(save_dir, point, checkpoint_kwargs, asynchronous=asynchronous)

    def load_training_state(self, state_dir: str | os.PathLike) -> dict[str, Any]:
        """Load a training state's weights, optimizer, scheduler and gradient scaler now, not its
        position (pytorch-accelerated 0.1.61's hand resume; ``resume_from`` is the exact resume).

        Args:
            state_dir: a folder written by :meth:`save_training_state`.

        Returns:
            ``{"current_epoch", "completed_update_steps", **checkpoint_kwargs}`` of the state.
        """
        return warm_start.load_training_state(
            self.accelerator, self.model, self.optimizer, self.scheduler, state_dir
        )

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
        return any_process(self.accelerator, flag)

    def num_real_samples(self, batch_size: int) -> int:
        """How many of this process's ``batch_size`` samples in the current training batch are
        real. To give every process the same number of steps, the last batches of an epoch are
        completed with samples from its start; of the last step's samples, taken in process order,
        only the first ``len(dataset) % (batch size * processes)`` are real. Metrics use this to
        count each training sample once, without communicating."""
        remainder = getattr(self.train_dataloader, "remainder", -1)
        if (
            self.num_processes == 1
            or not getattr(self.train_dataloader, "end_of_dataloader", False)
            or remainder <= 0
        ):
            return batch_size
        first = self.process_index * batch_size
        return min(max(remainder - first, 0), batch_size)

    def request_epoch_end(self) -> None:
        """End the current epoch early: an evaluation epoch after the current step, a training
        epoch after the current accumulation window's update. Request it on every process at the
        same step (decide with :meth:`any_process` if needed) so that processes stay in step."""
        self._position.epoch_end_requested = True

    def wait_for_everyone(self) -> None:
        """Block until every process reaches this point."""
        self.accelerator.wait_for_everyone()

    def recorded_metric_names(self) -> list[str]:
        """The metric names a training run declares it records: this Trainer's (``train_loss_epoch``,
        and ``eval_loss_epoch`` under each evaluation set's name), then each callback's
        :meth:`TrainerCallback.recorded_metric_names`; a ``*`` stands for any text. Known once ``train``
        has set up its dataloaders (from ``on_training_run_start``). Other names may still be recorded: a
        subclass whose hooks record some declares them, ``[*super().recorded_metric_names(), "my_metric"]``.
        """
        own = ["train_loss_epoch", *self.evaluation_metric_names("eval_loss_epoch")]
        declared = own + [name for cb in self.callback_handler for name in cb.recorded_metric_names(self)]
        return list(dict.fromkeys(declared))  # each once (two loggers declare train_loss_step), in order

    def evaluation_metric_names(self, name: str) -> list[str]:
        """The names a value recorded as ``name`` in an evaluation of the run's evaluation sets is stored
        under: ``[name]`` for one set, each set's name first for a dict of them (``val_`` + ``name``),
        none without one. For :meth:`TrainerCallback.recorded_metric_names`.

        Args:
            name: the name as written in ``run_history.update_metric`` during the evaluation.
        """
        return [_prefix_of(set_name) + name for set_name in self._run_eval]

    # ------------------------------------------------------------------ set-up

    def _prepare_model_and_optimizer(self, run_settings: tuple[int, int, float | None] | None = None) -> None:
        """The model and optimizer prepared; a DeepSpeed engine configured with a training run's
        ``(per_device_batch_size, gradient_accumulation_steps, gradient_clip_norm)``."""
        if self._engine_steps_in_backward:
            self._preparation.configure_engine(self.accelerator, run_settings)
        self.model, self.optimizer = self._preparation.wrap(
            self.accelerator, self.model, self.optimizer, self.get_model
        )
        # decided once per run rather than on every step: the wrapped torch optimizer to call
        # directly, or None where accelerate's wrappers must run
        self._torch_optimizer = (
            self.optimizer.optimizer if plain_optimizer_calls(self.accelerator, self.optimizer) else None
        )

    def _prepare_dataloader(self, dataloader: DataLoader, train: bool) -> DataLoader:
        return prepare_dataloader(self.accelerator, dataloader, train, self.num_processes)

    def _on_device(self, batches: Iterable, dataloader: DataLoader) -> Iterator:
        """``dataloader``'s ``batches`` on the trainer's device."""
        return on_device(batches, dataloader, self.device, self.accelerator.distributed_type)

    def _unwrapped_optimizer(self) -> torch.optim.Optimizer:
        optimizer = self.optimizer
        optimizer = optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer
        if self._engine_steps_in_backward:
            return getattr(optimizer, "optimizer", optimizer)  # DeepSpeed's ZeRO optimizer holds torch's
        return optimizer


def _prefix_of(eval_set_name: str | None) -> str:
    return f"{eval_set_name}_" if eval_set_name else ""


def _model_inputs(batch):
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def _batch_size(batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.size(0)
    # lists and tuples first: isinstance(batch, Mapping) is an ABC check, slow for a list
    items = (
        batch if isinstance(batch, (list, tuple)) else batch.values() if isinstance(batch, Mapping) else batch
    )
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
