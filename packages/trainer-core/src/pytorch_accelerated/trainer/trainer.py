"""The :class:`Trainer`: a training loop made of overridable hooks, on top of HuggingFace accelerate."""

from __future__ import annotations

import atexit
import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import DistributedType, gather_object, send_to_device
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset

from . import _accelerate_state, _checks, _data
from ._arguments import check_positive_int
from ._forward_inputs import ForwardInputs
from ._removed_hooks import check_no_removed_hooks
from .agreement import StopAgreement, agree_on_training_state
from .callbacks import CallbackHandler, StopTrainingError, TrainerCallback
from .checkpointing import CheckpointError, atomic_torch_save, check_plain_data, safe_torch_load
from .dataloader_workers import start_workers_safely
from .default_callbacks import DEFAULT_CALLBACKS
from .resumable_data import TrainData
from .run_config import TrainerPlaceholderValues, TrainerRunConfig
from .run_history import InMemoryRunHistory, RunHistory
from .training_state import (
    capture_rng_state,
    check_rng_state_fits,
    load_training_state,
    newest_of,
    resolve_training_state,
    restore_rng_state,
    write_training_state,
)

_CHECKPOINT_MODEL_KEY = "model_state_dict"
_CHECKPOINT_OPTIMIZER_KEY = "optimizer_state_dict"
_CHECKPOINT_SCHEDULER_KEY = "scheduler_state_dict"
_RESERVED_CHECKPOINT_KEYS = (_CHECKPOINT_MODEL_KEY, _CHECKPOINT_OPTIMIZER_KEY, _CHECKPOINT_SCHEDULER_KEY)
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
        if "gradient_accumulation_steps" in self.accelerator_kwargs:
            raise ValueError(
                "Pass gradient_accumulation_steps to Trainer.train(), not in accelerator_kwargs: "
                "the trainer accumulates gradients itself so that logged losses stay true."
            )
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
        self._train_loss: _RunningLoss | None = None
        self._epoch_start_rng: dict | None = None
        self._train_data: TrainData | None = None
        self._resume: _PendingResume | None = None
        self._prepared_model: torch.nn.Module | None = None
        self._trainable_when_wrapped: frozenset[int] = frozenset()
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
        check_positive_int("num_epochs", num_epochs)
        check_positive_int("per_device_batch_size", per_device_batch_size)
        check_positive_int("gradient_accumulation_steps", gradient_accumulation_steps)
        if max_num_train_steps is not None:
            check_positive_int("max_num_train_steps", max_num_train_steps)
        if gradient_clip_value is not None and gradient_clip_norm is not None:
            raise ValueError("Pass gradient_clip_value or gradient_clip_norm, not both.")
        _checks.check_clip("gradient_clip_value", gradient_clip_value)
        _checks.check_clip("gradient_clip_norm", gradient_clip_norm)
        _checks.check_scheduler_fn(create_scheduler_fn)
        _checks.check_not_empty(train_dataset, "train_dataset", "training")
        if eval_dataset is not None:
            _checks.check_not_empty(eval_dataset, "eval_dataset", "evaluation")
        self._check_accelerate_state_is_own()

        training_state = self._find_training_state(resume_from)

        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.collate_fn = collate_fn
        self.create_scheduler_fn = create_scheduler_fn
        if reset_run_history:
            self.run_history.reset()

        _checks.warn_of_parameters_outside_the_optimizer(self._unwrapped_optimizer(), self._unwrapped_model(self.model))
        self._prepare_model_and_optimizer()
        self._train_loss_unchecked = True
        self.train_dataloader = self._prepare_dataloader(
            self.create_train_dataloader(per_device_batch_size, train_dataloader_kwargs), train=True
        )
        self._train_data = TrainData(self.train_dataloader, self.num_processes)
        self.eval_dataloader = None
        if eval_dataset is not None:
            self.eval_dataloader = self._prepare_dataloader(
                self.create_eval_dataloader(per_device_batch_size, eval_dataloader_kwargs), train=False
            )
        self.run_config = self._create_run_config(
            num_epochs,
            per_device_batch_size,
            max_num_train_steps,
            gradient_accumulation_steps,
            gradient_clip_value,
            gradient_clip_norm,
        )
        self.scheduler = self.create_scheduler() if create_scheduler_fn is not None else None
        self._start_run_position()
        if training_state is not None:
            self._resume = self._load_training_state(training_state)
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
            self._resume = None

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
            elif not self._resume.mid_epoch:
                self._finish_resuming()
            # a callback may evaluate() another dataset mid-run: each epoch evaluates this run's
            run_eval_dataset, run_eval_dataloader = self.eval_dataset, self.eval_dataloader
            while not self._run_is_over():
                self._run_train_epoch()
                if run_eval_dataloader is not None:
                    self.eval_dataset, self.eval_dataloader = run_eval_dataset, run_eval_dataloader
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
        if self._resume is not None:
            return False  # resuming inside an epoch: that epoch is finished first
        return (
            self._training_stopped
            or self._epochs_completed >= self.run_config.num_epochs
            or self._reached_max_train_steps()
        )

    def _run_train_epoch(self) -> None:
        resuming = self._resume is not None  # only a resume inside an epoch is still pending here
        if resuming:
            restore_rng_state(self._resume.epoch_start_rng, self.train_dataloader)
        else:
            self._start_epoch_position()
        self._train_data.start_epoch(self._epoch_start_rng)
        self.train_epoch_start()
        self.callback_handler.call_event("on_train_epoch_start", self)
        # a resumed epoch skips to its position without loading what the saved run had seen
        batches = self._on_device(self._train_data.batches(skip=self.completed_epoch_batches), self.train_dataloader)
        if resuming:
            self._finish_resuming()
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
        call_event = self.callback_handler.call_event
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
            call_event("on_train_step_start", self)
            if self._several_processes and not is_update_step:
                with self.accelerator.no_sync(self.model):
                    self._train_step(batch, window_size)
            else:
                self._train_step(batch, window_size)  # no context to enter: ~1 us a step
            self.completed_epoch_batches = step + 1
            if is_update_step:
                self._update_parameters(window_size, step - window_start + 1)
                self._reach_save_point("update")
                if self._epoch_end_requested or (max_steps is not None and self.completed_update_steps >= max_steps):
                    break  # _train_epoch_should_end(), inlined
        else:
            if not is_update_step:  # the data ended inside a window whose length was unknown: it updates too
                self._update_parameters(window_size, step - window_start + 1)
                self._reach_save_point("update")

    def _train_step(self, batch, window_size: int) -> None:
        batch_output = self.calculate_train_batch_loss(batch)
        if type(batch_output) is not dict or not batch_output.keys() >= _BATCH_OUTPUT_KEY_SET:
            _check_batch_output(batch_output, "calculate_train_batch_loss")  # a Mapping, or an error
        if self._train_loss_unchecked:  # once per run: the loss's type does not change from step to step
            _checks.check_batch_loss(batch_output, "calculate_train_batch_loss", training=True)
            self._train_loss_unchecked = False
        self._train_loss.update(batch_output["loss"], batch_output["batch_size"])
        self.callback_handler.call_event("on_train_step_end", self, batch=batch, batch_output=batch_output)
        loss = batch_output["loss"]
        # Backward needs the loss, not the outputs: unless a callback kept them, the outputs (a
        # language model's logits: gigabytes) are freed here rather than at the next forward.
        del batch_output
        self.backward_step(loss / window_size if window_size > 1 else loss)

    def _train_epoch_should_end(self) -> bool:
        return self._reached_max_train_steps() or self._epoch_end_requested

    def _update_parameters(self, window_size: int, batches_in_window: int) -> None:
        if batches_in_window < window_size:  # a window cut short by the end of data of unknown length
            _data.rescale_short_window(self.model.parameters(), window_size, batches_in_window)
        self.clip_gradients()
        self.callback_handler.call_event("on_before_optimizer_step", self, optimizer=self.optimizer)
        self.optimizer_step()
        # torch's own step (no grad scaler) is never skipped: no need to ask accelerate every update
        self.optimizer_step_was_skipped = self._torch_optimizer is None and self.accelerator.optimizer_step_was_skipped
        if self.scheduler is not None and not self.optimizer_step_was_skipped:
            self.scheduler_step()
        self.optimizer_zero_grad()
        self.completed_update_steps += 1
        self.callback_handler.call_event("on_optimizer_step_end", self, optimizer=self.optimizer)

    def _run_eval_epoch(self, dataloader: DataLoader, loss_metric_name: str) -> None:
        # an evaluation run from inside a training epoch must not end that epoch when it ends early
        training_epoch_end_requested, self._epoch_end_requested = self._epoch_end_requested, False
        self._sync_buffers_before_evaluation()
        self.eval_epoch_start()
        self.callback_handler.call_event("on_eval_epoch_start", self)
        loss_tracker = _RunningLoss(self.device)
        check_loss = True
        with torch.no_grad():
            for batch in _data.real_samples_only(self._on_device(iter(dataloader), dataloader), dataloader, self.process_index):
                self.callback_handler.call_event("on_eval_step_start", self)
                self._eval_step(batch, loss_tracker, check_loss)
                check_loss = False
                if self._epoch_end_requested:
                    break
        self.run_history.update_metric(loss_metric_name, loss_tracker.compute(self.accelerator))
        self._epoch_end_requested = training_epoch_end_requested
        self.eval_epoch_end()
        self.callback_handler.call_event("on_eval_epoch_end", self)

    def _eval_step(self, batch, loss_tracker: _RunningLoss, check_loss: bool) -> None:
        batch_output = self.calculate_eval_batch_loss(batch)  # freed on return, as in _train_step
        _check_batch_output(batch_output, "calculate_eval_batch_loss")
        if check_loss:  # the first step of each evaluation
            _checks.check_batch_loss(batch_output, "calculate_eval_batch_loss", training=False)
        loss_tracker.update(batch_output["loss"], batch_output["batch_size"])
        self.callback_handler.call_event("on_eval_step_end", self, batch=batch, batch_output=batch_output)

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
    ) -> dict[str, Any]:
        """Run one evaluation epoch over ``dataset`` (default: the last ``eval_dataset``), record
        ``evaluation_loss`` and return the metrics recorded during it, by name. Every sample counts
        exactly once, also on several processes. The model's train/eval mode is restored afterwards,
        so a callback may call this in the middle of training."""
        reuse_dataloader = (
            self.eval_dataloader is not None
            and dataset in (None, self.eval_dataset)
            and per_device_batch_size is None
            and dataloader_kwargs is None
            and collate_fn is None
        )
        if not reuse_dataloader:
            self._set_up_eval_dataloader(dataset, per_device_batch_size, dataloader_kwargs, collate_fn)
        self._prepare_model_and_optimizer()
        was_training = self.model.training
        counts_before = {name: len(self.run_history.get_metric_values(name)) for name in self.run_history.get_metric_names()}
        try:
            self.evaluation_run_start()
            self.callback_handler.call_event("on_evaluation_run_start", self)
            self._run_eval_epoch(self.eval_dataloader, "evaluation_loss")
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

    def _sync_buffers_before_evaluation(self) -> None:
        # DDP broadcasts buffers (BatchNorm statistics) from process 0 in the first forward after
        # training: a collective that a process with no evaluation batch would never join. Do it
        # here, where every process is, and tell DDP it is done.
        model = self.model
        if isinstance(model, DistributedDataParallel) and model.broadcast_buffers and model.require_forward_param_sync:
            for buffer in model.module.buffers():
                torch.distributed.broadcast(buffer, src=0)
            model.require_forward_param_sync = False

    def _set_up_eval_dataloader(self, dataset, per_device_batch_size, dataloader_kwargs, collate_fn) -> None:
        dataset = dataset if dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError("evaluate() needs a dataset: pass evaluate(dataset) or train(..., eval_dataset=...) first.")
        if collate_fn is not None:
            self.collate_fn = collate_fn
        batch_size = per_device_batch_size or self._default_eval_batch_size()
        check_positive_int("per_device_batch_size", batch_size)
        _checks.check_not_empty(dataset, "The evaluation dataset", "evaluate()")
        self.eval_dataset = dataset
        self.eval_dataloader = self._prepare_dataloader(
            self.create_eval_dataloader(batch_size, dataloader_kwargs), train=False
        )

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
        check_positive_int("per_device_batch_size", per_device_batch_size)
        _data.check_predictable(dataset)
        self._prepare_model_and_optimizer()
        share = _contiguous_share(len(dataset), self.accelerator.process_index, self.num_processes)
        kwargs = {"shuffle": False, "collate_fn": collate_fn or self.collate_fn, **(dataloader_kwargs or {})}
        if kwargs.get("shuffle"):
            raise ValueError("predict() returns outputs in dataset order: remove shuffle=True.")
        dataloader = DataLoader(Subset(dataset, share), batch_size=per_device_batch_size, **kwargs)
        self._sync_buffers_before_evaluation()
        was_training = self.model.training
        self.model.eval()
        outputs = []
        with torch.no_grad():
            for batch in dataloader:
                batch_predictions = self.calculate_batch_predictions(send_to_device(batch, self.device))
                outputs.append(send_to_device(_detach(batch_predictions), "cpu"))
        self.model.train(was_training)
        local = _concatenate(outputs) if outputs else None
        if self.num_processes == 1:
            return local
        shares = [part for part in gather_object([local]) if part is not None]
        return _concatenate(shares)

    # ------------------------------------------------------------------ hooks: creation

    def create_accelerator(self) -> Accelerator:
        """The ``accelerate.Accelerator`` that runs everything; built from ``accelerator_kwargs``.

        Launched on several processes (``torchrun``) on a machine without an accelerator, it
        trains on the CPUs with gloo, where a bare ``Accelerator()`` would run every process alone.
        """
        kwargs = dict(self.accelerator_kwargs)
        _accelerate_state.make_way_for(kwargs)
        if "cpu" not in kwargs and _launched_on_several_processes() and not _accelerator_device_available():
            kwargs["cpu"] = True
        return Accelerator(**kwargs)

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
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise TypeError(
                "ReduceLROnPlateau steps with a metric, and the trainer steps its scheduler every update "
                "without one. Pass it to MetricSchedulerCallback (trainer-callbacks) instead of "
                "create_scheduler_fn: callbacks=[..., MetricSchedulerCallback(partial(ReduceLROnPlateau, ...), "
                "monitor='eval_loss_epoch')], which steps it with the metric at the end of each epoch."
            )
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

    def _plain_optimizer_calls(self) -> bool:
        # Without a grad scaler, XLA, DeepSpeed or Megatron, accelerate's backward and optimizer
        # wrapper only forward to torch, but first search for an optional package or inspect a
        # signature on every call (0.1-0.25 ms each): call torch directly then.
        return (
            isinstance(self.optimizer, AcceleratedOptimizer)
            and self.accelerator.scaler is None
            and self.accelerator.distributed_type
            not in (DistributedType.XLA, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
        )

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
        if isinstance(batch, Mapping):
            model_outputs = self.model(**self._forward_inputs_of(batch))
            targets = batch.get("labels")
        else:
            model_outputs = self.model(_model_inputs(batch))
            targets = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        if self.loss_func is None:
            loss = _loss_from_model_outputs(model_outputs)
        else:
            loss = self.loss_func(model_outputs, targets)
        return {"loss": loss, "model_outputs": model_outputs, "batch_size": _batch_size(batch)}

    def _forward_inputs_of(self, batch: Mapping) -> Mapping:
        return self._forward_inputs.select(self.model, batch, self._unwrapped_model, self.loss_func is not None)

    def _unwrapped_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model, keep_torch_compile=False)

    def _check_accelerate_state_is_own(self) -> None:
        if self.accelerator.mixed_precision != self._mixed_precision:
            raise RuntimeError(
                f"This Trainer was created with mixed_precision={self._mixed_precision!r}, but a Trainer created since "
                f"set accelerate's process-wide state to {self.accelerator.mixed_precision!r}: create this Trainer "
                "again (after the other) to train with it."
            )

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
        extra = dict(checkpoint_kwargs or {})
        clashing = sorted(set(extra) & set(_RESERVED_CHECKPOINT_KEYS))
        if clashing:
            raise CheckpointError(f"checkpoint_kwargs may not use the reserved keys {clashing}; rename them.")
        check_plain_data(extra, "checkpoint_kwargs")
        checkpoint = {_CHECKPOINT_MODEL_KEY: self._model_state_dict(), **extra}
        if save_optimizer:
            checkpoint[_CHECKPOINT_OPTIMIZER_KEY] = self.optimizer.state_dict()
        if save_scheduler and self.scheduler is not None:
            checkpoint[_CHECKPOINT_SCHEDULER_KEY] = self.scheduler.state_dict()
        if self.is_world_process_zero:
            atomic_torch_save(checkpoint, save_path)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, checkpoint_path, load_optimizer: bool = True, load_scheduler: bool = True) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save_checkpoint` (weights-only: nothing arbitrary is
        unpickled) and return its extra keys."""
        checkpoint = safe_torch_load(checkpoint_path)
        if _CHECKPOINT_MODEL_KEY not in checkpoint:
            raise CheckpointError(f"{str(checkpoint_path)!r} is not a Trainer checkpoint: it has no {_CHECKPOINT_MODEL_KEY!r}.")
        self._load_model_state_dict(checkpoint[_CHECKPOINT_MODEL_KEY], checkpoint_path)
        if load_optimizer and _CHECKPOINT_OPTIMIZER_KEY in checkpoint:
            self.optimizer.load_state_dict(checkpoint[_CHECKPOINT_OPTIMIZER_KEY])
        if load_scheduler and _CHECKPOINT_SCHEDULER_KEY in checkpoint:
            if self.scheduler is None:
                raise CheckpointError(
                    f"{str(checkpoint_path)!r} holds a scheduler state but the trainer has no scheduler; "
                    "pass load_scheduler=False or create the scheduler first."
                )
            self.scheduler.load_state_dict(checkpoint[_CHECKPOINT_SCHEDULER_KEY])
        return {key: value for key, value in checkpoint.items() if key not in _RESERVED_CHECKPOINT_KEYS}

    def _model_state_dict(self) -> dict[str, torch.Tensor]:
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return self.accelerator.get_state_dict(self.model)
        return self.get_model(keep_torch_compile=False).state_dict()

    def _load_model_state_dict(self, state_dict, checkpoint_path) -> None:
        self._check_model_fits(state_dict, checkpoint_path)
        self.get_model(keep_torch_compile=False).load_state_dict(state_dict)

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
        self._check_training_state_can_be_saved()
        save_dir = Path(save_dir)
        own = self._on_every_process(lambda: _to_cpu(self._process_training_state()), "collect its training state")
        states = [own] if self.num_processes == 1 else gather_object([own])

        def write() -> None:
            if self.is_world_process_zero:
                write_training_state(save_dir, self._shared_training_state(), states, self._position())

        self._on_every_process(write, f"write the training state {str(save_dir)!r}")
        return save_dir

    def _check_training_state_can_be_saved(self) -> None:
        if self.run_config is None:
            raise CheckpointError("Nothing to save yet: save_training_state saves a run started with train().")
        if self._in_training_run and self._save_point is None:
            raise CheckpointError(
                "save_training_state was called in the middle of a training step, where a saved state would "
                "not resume exactly: call it from on_save_point (fired after each update and each epoch), "
                "or after train() returns."
            )
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise CheckpointError(
                "save_training_state supports one device and DDP, not sharded FSDP/DeepSpeed models: "
                "use accelerator.save_state / load_state there."
            )

    def _position(self) -> dict[str, Any]:
        return {
            "completed_update_steps": self.completed_update_steps,
            "epochs_completed": self._epochs_completed,
            "epoch_batches": self.completed_epoch_batches,
            "epoch_end_requested": self._epoch_end_requested,
            "stopped": self._training_stopped,
            "epoch": self.run_history.current_epoch,
            "point": self._save_point or "run_end",
        }

    def _resume_settings(self) -> dict[str, Any]:
        """The settings a position inside an epoch depends on."""
        config = self.run_config
        return {
            "train_dataloader_len": config.train_dataloader_len,
            "train_per_device_batch_size": config.train_per_device_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
        }

    def _shared_training_state(self) -> dict[str, Any]:
        state = {
            "model": self._model_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_class": type(self._unwrapped_optimizer()).__name__,
            "run_history": self.run_history.state_dict(),
            "position": self._position(),
            "settings": self._resume_settings(),
            "callbacks": self._callback_states(per_process=False),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
            state["scheduler_class"] = type(self.scheduler).__qualname__
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        check_plain_data(state["run_history"], "run_history.state_dict()")
        check_plain_data(state.get("scheduler"), "scheduler.state_dict()")
        return state

    def _process_training_state(self) -> dict[str, Any]:
        return {
            "rng": capture_rng_state(self.train_dataloader),
            "epoch_start_rng": self._epoch_start_rng if self.completed_epoch_batches else None,
            "train_loss": self._train_loss.state_dict() if self._train_loss is not None else None,
            "train_data": self._train_data.state_dict(),
            "callbacks": self._callback_states(per_process=True),
        }

    def _callback_keys(self) -> list[tuple[str, TrainerCallback]]:
        """Each callback under its class name, numbered from the second of a class: ``Logger#2``."""
        seen: dict[str, int] = {}
        keys = []
        for callback in self.callback_handler.callbacks:
            name = type(callback).__qualname__
            seen[name] = seen.get(name, 0) + 1
            keys.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
        return keys

    def _callback_states(self, per_process: bool) -> dict[str, dict]:
        states = {}
        for key, callback in self._callback_keys():
            if bool(callback.per_process_state) == per_process:
                state = callback.state_dict()
                if state:
                    check_plain_data(state, f"{key}.state_dict()")
                    states[key] = state
        return states

    def _on_every_process(self, action: Callable, what: str):
        """Run ``action`` on every process; if it fails on any, raise on all of them (never leave
        the others waiting in a collective for a process that gave up)."""
        error = None
        try:
            result = action()
        except Exception as caught:  # re-raised below, after the processes agree
            error = caught
        if self.any_process(error is not None):
            if error is not None:
                raise error
            raise CheckpointError(f"Another process failed to {what}; its error is in its output.")
        return result

    def _find_training_state(self, resume_from) -> Path | None:
        if resume_from is None:
            return None
        if isinstance(resume_from, str) and resume_from == "latest":
            latest = agree_on_training_state(self, self._latest_training_state_of_callbacks, resume_from)
            if latest is None:
                self.print("resume_from='latest': no training state has been saved yet; starting a new run.")
            return latest
        return agree_on_training_state(self, functools.partial(resolve_training_state, resume_from), resume_from)

    def _latest_training_state_of_callbacks(self) -> Path | None:
        finders = [
            callback.latest_training_state
            for callback in self.callback_handler.callbacks
            if callable(getattr(callback, "latest_training_state", None))
        ]
        if not finders:
            raise ValueError(
                "resume_from='latest' needs a callback that saves training states (SaveTrainingStateCallback "
                "from trainer-callbacks); otherwise pass the folder to resume from."
            )
        return newest_of(path for path in (find() for find in finders) if path is not None)

    def _load_training_state(self, path: Path) -> _PendingResume:
        return self._on_every_process(lambda: self._apply_training_state(path), f"load the training state {str(path)!r}")

    def _apply_training_state(self, path: Path) -> _PendingResume:
        manifest, shared, own = load_training_state(path, self.process_index)
        callback_states = {**shared["callbacks"], **own["callbacks"]}
        self._check_training_state_fits(path, manifest, shared, own, callback_states)
        # the small parts first: should one still refuse its state, the weights are untouched
        if self.scheduler is not None:
            self.scheduler.load_state_dict(shared["scheduler"])
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(shared["scaler"])
        self.optimizer.load_state_dict(shared["optimizer"])
        self._load_model_state_dict(shared["model"], path)
        self.run_history.load_state_dict(shared["run_history"])
        position = shared["position"]
        self.completed_update_steps = position["completed_update_steps"]
        self.completed_epoch_batches = position["epoch_batches"]
        self._epochs_completed = position["epochs_completed"]
        self._epoch_end_requested = position["epoch_end_requested"]
        self._training_stopped = position["stopped"]
        self._train_loss = _RunningLoss.from_state_dict(own["train_loss"], self.device)
        self._epoch_start_rng = own["epoch_start_rng"]  # a state saved later in this epoch needs it too
        self.resumed_from = path
        mid_epoch = not position["stopped"] and position["epoch_batches"] > 0
        self._train_data.load_state_dict(own.get("train_data"), mid_epoch)
        return _PendingResume(
            rng=own["rng"], epoch_start_rng=own["epoch_start_rng"], callback_states=callback_states, mid_epoch=mid_epoch
        )

    def _check_training_state_fits(self, path: Path, manifest: dict, shared: dict, own: dict, callback_states: dict) -> None:
        """Everything the state must match, checked before any of it is applied."""
        where = repr(str(path))
        if manifest["num_processes"] != self.num_processes:
            raise CheckpointError(
                f"{where} was saved by {manifest['num_processes']} process(es) and this run has {self.num_processes}: "
                "resume with as many processes as it was saved with (the data order and the random generators depend on it)."
            )
        position = shared["position"]
        if position["epoch_batches"] > 0 and not position["stopped"]:
            differences = [
                f"{name} {saved} there, {now} here"
                for (name, saved), now in zip(shared["settings"].items(), self._resume_settings().values())
                if saved != now
            ]
            if differences:
                raise CheckpointError(
                    f"{where} was saved in the middle of an epoch of a run with other settings ({'; '.join(differences)}): "
                    "resume with the settings it was saved with."
                )
        self._check_model_fits(shared["model"], path)
        self._check_optimizer_fits(shared, path)
        for part, present in (("scheduler", self.scheduler is not None), ("scaler", self.accelerator.scaler is not None)):
            if (part in shared) != present:
                saved_it = "holds" if part in shared else "has no"
                here = "has one" if present else "has none"
                raise CheckpointError(
                    f"{where} {saved_it} a {part} state and this run {here}: resume with the "
                    f"{'create_scheduler_fn' if part == 'scheduler' else 'mixed_precision'} the run was saved with."
                )
        saved_scheduler = shared.get("scheduler_class")  # older states do not name it
        if self.scheduler is not None and saved_scheduler not in (None, type(self.scheduler).__qualname__):
            raise CheckpointError(
                f"{where} holds the state of a {saved_scheduler} scheduler; this run's is a "
                f"{type(self.scheduler).__qualname__}. Resume with the create_scheduler_fn the run was saved with."
            )
        for rng_state in (own["rng"], own["epoch_start_rng"]):
            if rng_state is not None:
                check_rng_state_fits(rng_state, self.train_dataloader)
        callbacks_here = {key for key, _ in self._callback_keys()}
        homeless = sorted(set(callback_states) - callbacks_here)
        if homeless:
            raise CheckpointError(
                f"{where} holds the state of callbacks this trainer does not have: {homeless}. Create the Trainer "
                "with the callbacks the run was saved with (several of one class in the same order)."
            )

    def _check_model_fits(self, saved: Mapping[str, torch.Tensor], path) -> None:
        current = self.get_model(keep_torch_compile=False).state_dict()
        problems = []
        missing = [name for name in current if name not in saved]
        unexpected = [name for name in saved if name not in current]
        if missing:
            problems.append(f"missing {_some(missing)}")
        if unexpected:
            problems.append(f"unexpected {_some(unexpected)}")
        mismatched = [
            f"{name} is {tuple(saved[name].shape)} there and {tuple(tensor.shape)} here"
            for name, tensor in current.items()
            if name in saved and tuple(saved[name].shape) != tuple(tensor.shape)
        ]
        if mismatched:
            problems.append(_some(mismatched))
        if problems:
            raise CheckpointError(
                f"The weights in {str(path)!r} are not for this model: {'; '.join(problems)}. "
                "Use the model the checkpoint was saved from."
            )

    def _check_optimizer_fits(self, shared: dict, path: Path) -> None:
        optimizer_class = type(self._unwrapped_optimizer()).__name__
        if shared["optimizer_class"] != optimizer_class:
            raise CheckpointError(
                f"{str(path)!r} holds the state of a {shared['optimizer_class']} optimizer; this trainer's is a "
                f"{optimizer_class}. Resume with the optimizer the run was saved with."
            )
        saved_sizes = [len(group["params"]) for group in shared["optimizer"]["param_groups"]]
        sizes = [len(group["params"]) for group in self._unwrapped_optimizer().param_groups]
        if saved_sizes != sizes:
            raise CheckpointError(
                f"The optimizer state in {str(path)!r} has param groups of {saved_sizes} parameters; this optimizer's "
                f"have {sizes}. Create the optimizer (and add any param groups) as the saved run had them."
            )

    def _finish_resuming(self) -> None:
        """The last step of resuming, once the run-start (and epoch-start) events have run: the
        callbacks' states, then the random generators as they were when the state was saved."""
        resume, self._resume = self._resume, None
        callbacks = dict(self._callback_keys())
        for key, state in resume.callback_states.items():
            callbacks[key].load_state_dict(state)
        restore_rng_state(resume.rng, self.train_dataloader)

    def _reach_save_point(self, point: str) -> None:
        self._save_point = point
        try:
            self.callback_handler.call_event("on_save_point", self, point=point)
        finally:
            self._save_point = None

    def _start_run_position(self) -> None:
        self.completed_update_steps = 0
        self.completed_epoch_batches = 0
        self._epochs_completed = 0
        self._training_stopped = False
        self._epoch_end_requested = False
        self.resumed_from = None
        self._resume = None

    def _start_epoch_position(self) -> None:
        self.completed_epoch_batches = 0
        self._epoch_end_requested = False
        self._train_loss = _RunningLoss(self.device)
        # the epoch's data order is drawn from these: a state saved inside the epoch replays them
        self._epoch_start_rng = capture_rng_state(self.train_dataloader)

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
        self._wrap_model_for_distribution()
        # decided once per run rather than on every step: the wrapped torch optimizer to call
        # directly, or None where accelerate's wrappers must run
        self._torch_optimizer = self.optimizer.optimizer if self._plain_optimizer_calls() else None

    def _wrap_model_for_distribution(self) -> None:
        if self._prepared_model is None or self.model is not self._prepared_model:
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
            self._prepared_model = self.model
            self._trainable_when_wrapped = _trainable_parameter_ids(self.model)
        elif isinstance(self.model, DistributedDataParallel) and _trainable_parameter_ids(self.model) != self._trainable_when_wrapped:
            # DDP reduces the gradients of only the parameters that were trainable when it wrapped
            # the model: after (un)freezing, wrap it again or the processes' weights drift apart.
            self.model = self.accelerator.prepare_model(self.get_model())
            self._prepared_model = self.model
            self._trainable_when_wrapped = _trainable_parameter_ids(self.model)

    def _prepare_dataloader(self, dataloader: DataLoader, train: bool) -> DataLoader:
        _checks.check_sampler_not_sharded_twice(dataloader, self.num_processes, "training" if train else "evaluation")
        if not train:
            _checks.check_dataloader_not_empty(dataloader, "evaluation")
        if self.accelerator.distributed_type == DistributedType.NO:
            # One process: nothing to shard, and accelerate's wrapper costs ~50 us per batch;
            # batches are moved to the device by _on_device instead.
            return dataloader
        start_workers_safely(dataloader)  # where forking this process can hang, workers start from a forkserver
        # Evaluation shards without padding, so that every sample counts exactly once; training
        # pads the last batches so that every process runs the same number of steps.
        even_batches = self.accelerator.even_batches
        self.accelerator.even_batches = train
        try:
            return self.accelerator.prepare(dataloader)
        finally:
            self.accelerator.even_batches = even_batches

    def _on_device(self, batches: Iterator, dataloader: DataLoader) -> Iterator:
        """``dataloader``'s ``batches`` on the trainer's device."""
        if self.device.type == "cpu" or self.accelerator.distributed_type != DistributedType.NO:
            return batches  # already there, or moved by accelerate's prepared dataloader
        non_blocking = getattr(dataloader, "pin_memory", False)
        return map(functools.partial(send_to_device, device=self.device, non_blocking=non_blocking), batches)

    def _default_eval_batch_size(self) -> int:
        if self.run_config is None:
            return 8
        return self.run_config.eval_per_device_batch_size or self.run_config.train_per_device_batch_size

    def _create_run_config(
        self, num_epochs, batch_size, max_num_train_steps, accumulation_steps, clip_value, clip_norm
    ) -> TrainerRunConfig:
        train_len = _length_or_none(self.train_dataloader)
        _data.check_length_known(train_len, max_num_train_steps)
        if train_len == 0:
            raise ValueError("The training dataloader is empty: the dataset is smaller than one batch with drop_last=True, or empty.")
        updates_per_epoch = None if train_len is None else math.ceil(train_len / accumulation_steps)
        num_epochs, num_training_steps = _data.sized_for_steps(updates_per_epoch, num_epochs, max_num_train_steps)
        return TrainerRunConfig(
            num_epochs=num_epochs,
            train_per_device_batch_size=batch_size,
            eval_per_device_batch_size=batch_size if self.eval_dataloader is not None else None,
            train_dataloader_len=train_len,
            eval_dataloader_len=_length_or_none(self.eval_dataloader) if self.eval_dataloader is not None else None,
            gradient_accumulation_steps=accumulation_steps,
            num_update_steps_per_epoch=updates_per_epoch,
            max_num_train_steps=max_num_train_steps,
            num_training_steps=num_training_steps,
            gradient_clip_value=clip_value,
            gradient_clip_norm=clip_norm,
            num_processes=self.num_processes,
            is_local_process_zero=self.is_local_process_zero,
            is_world_process_zero=self.is_world_process_zero,
            mixed_precision=str(self.accelerator.mixed_precision),
        )


@dataclass
class _PendingResume:
    """What a resumed run restores once its start events have run."""

    rng: dict
    epoch_start_rng: dict | None
    callback_states: dict[str, dict]
    mid_epoch: bool


class _RunningLoss:
    """A sample-weighted running mean kept on the device; read (and reduced) once per epoch."""

    def __init__(self, device: torch.device):
        self.total = torch.zeros((), dtype=torch.float32, device=device)
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "count": self.count}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any] | None, device: torch.device) -> _RunningLoss:
        tracker = cls(device)
        if state is not None:
            tracker.total.copy_(state["total"])
            tracker.count = state["count"]
        return tracker

    def update(self, loss: torch.Tensor, batch_size: int) -> None:
        self.total.add_(loss.detach(), alpha=batch_size)  # one op; accumulates in float32 whatever the loss's dtype
        self.count += batch_size

    def compute(self, accelerator: Accelerator) -> float:
        totals = torch.stack([self.total, torch.tensor(float(self.count), device=self.total.device)])
        if accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, "sum")
        total, count = totals.tolist()
        return total / count if count else math.nan



def _some(names: list[str], limit: int = 5) -> str:
    """Up to ``limit`` names, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _map_tensors(value, function: Callable):
    """``value`` with ``function`` applied to every tensor in it (through dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, Mapping):
        return {key: _map_tensors(item, function) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(item, function) for item in value)
    return value


def _to_cpu(value):
    return _map_tensors(value, lambda tensor: tensor.detach().cpu())


def _detach(outputs):
    return _map_tensors(outputs, torch.Tensor.detach)


def _trainable_parameter_ids(model: torch.nn.Module) -> frozenset[int]:
    return frozenset(id(parameter) for parameter in model.parameters() if parameter.requires_grad)


@functools.cache
def _destroy_process_group_at_exit() -> None:
    # A gloo process group still alive when the interpreter shuts down can abort a process that
    # trained successfully ("terminate called without an active exception", exit code -6): its worker
    # threads outlive Python. Destroying it while Python is whole avoids that; cached: once per process.
    atexit.register(_destroy_process_group_if_alive)


def _destroy_process_group_if_alive() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _launched_on_several_processes() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _accelerator_device_available() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()




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


def _length_or_none(dataloader) -> int | None:
    try:
        return len(dataloader)
    except TypeError:
        return None


def _contiguous_share(length: int, process_index: int, num_processes: int) -> range:
    per_process, remainder = divmod(length, num_processes)
    start = process_index * per_process + min(process_index, remainder)
    return range(start, start + per_process + (1 if process_index < remainder else 0))


def _concatenate(parts: list):
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([part if part.dim() else part.reshape(1) for part in parts])
    if isinstance(first, Mapping):
        return {key: _concatenate([part[key] for part in parts]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(_concatenate(list(items)) for items in zip(*parts))
    raise TypeError(
        f"predict() can concatenate tensors and dicts/tuples of tensors, not {type(first).__name__}; "
        "override calculate_batch_predictions to return tensors."
    )
