"""A training run's settings (:class:`TrainerRunConfig`) and the placeholders that refer to them."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any, Callable, Mapping

from accelerate import Accelerator

from . import _data


@dataclass(frozen=True)
class TrainerRunConfig:
    """The settings of the current run, as ``trainer.run_config``, computed once ``train`` starts.

    Lengths and step counts are per process: with a dataset of 1000 samples, batch size 10 and
    two processes, ``train_dataloader_len`` is 50. For a training dataset without a length (an
    ``IterableDataset``), ``train_dataloader_len`` and ``num_update_steps_per_epoch`` are ``None`` and
    ``num_training_steps`` is ``max_num_train_steps``.
    """

    num_epochs: int
    train_per_device_batch_size: int
    eval_per_device_batch_size: int | None
    train_dataloader_len: int | None
    eval_dataloader_len: int | None
    gradient_accumulation_steps: int
    num_update_steps_per_epoch: int | None
    max_num_train_steps: int | None
    num_training_steps: int
    gradient_clip_value: float | None
    gradient_clip_norm: float | None
    num_processes: int
    is_local_process_zero: bool
    is_world_process_zero: bool
    mixed_precision: str
    #: settings that callbacks add for the run (a model summary's totals, say): see :meth:`with_extra`
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name, the :attr:`extra` ones included: what trackers log as the run's
        parameters."""
        settings = asdict(self)
        return {**settings, **settings.pop("extra")}

    def with_extra(self, **settings: Any) -> TrainerRunConfig:
        """A copy with ``settings`` added to :attr:`extra`. A callback records a setting of the run with
        ``trainer.run_config = trainer.run_config.with_extra(name=value)`` in ``on_training_run_start``;
        loggers that log the run config there see it if they come later in the callback list."""
        return replace(self, extra={**self.extra, **settings})

    # Derived values that pytorch-accelerated 0.1.61's run config held as fields.

    @property
    def is_distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.num_processes > 1

    @property
    def train_total_batch_size(self) -> int:
        """Samples per optimizer update, over every process and the accumulation window."""
        return self.train_per_device_batch_size * self.num_processes * self.gradient_accumulation_steps

    @property
    def eval_total_batch_size(self) -> int | None:
        """Samples per evaluation step, over every process."""
        return (
            None
            if self.eval_per_device_batch_size is None
            else self.eval_per_device_batch_size * self.num_processes
        )

    @property
    def num_local_update_steps_per_epoch(self) -> int | None:
        """The same as ``num_update_steps_per_epoch``: every count here is per process."""
        return self.num_update_steps_per_epoch


class TrainerPlaceholderValues(Enum):
    """Stand-ins for values known only once ``train`` starts, for ``create_scheduler_fn``.

    Example::

        create_scheduler_fn = functools.partial(
            torch.optim.lr_scheduler.OneCycleLR,
            max_lr=0.01,
            epochs=TrainerPlaceholderValues.NUM_EPOCHS,
            steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
        )
    """

    NUM_EPOCHS = "num_epochs"
    NUM_UPDATE_STEPS_PER_EPOCH = "num_update_steps_per_epoch"
    #: pytorch-accelerated 0.1.61's name; an alias (counts here are per process already).
    PER_PROCESS_NUM_UPDATE_STEPS_PER_EPOCH = "num_update_steps_per_epoch"
    NUM_TRAINING_STEPS = "num_training_steps"
    TRAIN_DATALOADER_LEN = "train_dataloader_len"
    EVAL_DATALOADER_LEN = "eval_dataloader_len"
    TRAIN_PER_DEVICE_BATCH_SIZE = "train_per_device_batch_size"
    EVAL_PER_DEVICE_BATCH_SIZE = "eval_per_device_batch_size"
    GRADIENT_ACCUMULATION_STEPS = "gradient_accumulation_steps"

    @classmethod
    def fill(cls, fn: Callable, run_config: TrainerRunConfig) -> Callable:
        """Replace every placeholder in a ``functools.partial``'s arguments with its value."""
        if not isinstance(fn, functools.partial):
            return fn

        def resolve(value):
            if not isinstance(value, cls):
                return value
            resolved = getattr(run_config, value.value)
            if resolved is None and value.value in _UNKNOWN_WITHOUT_LENGTH:
                raise ValueError(
                    f"TrainerPlaceholderValues.{value.name} is unknown: the training dataset has no length"
                    " (an IterableDataset without __len__). Size the schedule in updates instead, with"
                    " TrainerPlaceholderValues.NUM_TRAINING_STEPS (max_num_train_steps)."
                )
            return resolved

        return functools.partial(
            fn.func,
            *(resolve(arg) for arg in fn.args),
            **{key: resolve(value) for key, value in fn.keywords.items()},
        )


# run settings that only a training dataset with a length gives
_UNKNOWN_WITHOUT_LENGTH = frozenset({"train_dataloader_len", "num_update_steps_per_epoch"})


def create_run_config(
    accelerator: Accelerator,
    train_dataloader,
    eval_dataloaders,
    num_epochs,
    batch_size,
    max_num_train_steps,
    accumulation_steps,
    clip_value,
    clip_norm,
) -> TrainerRunConfig:
    """The run's settings, once its dataloaders are built."""
    train_len = _data.length_or_none(train_dataloader)
    _data.check_length_known(train_len, max_num_train_steps)
    if train_len == 0:
        raise ValueError(
            "The training dataloader is empty: the dataset is smaller than one batch with drop_last=True, or"
            " empty."
        )
    updates_per_epoch = None if train_len is None else math.ceil(train_len / accumulation_steps)
    num_epochs, num_training_steps = _data.sized_for_steps(updates_per_epoch, num_epochs, max_num_train_steps)
    return TrainerRunConfig(
        num_epochs=num_epochs,
        train_per_device_batch_size=batch_size,
        eval_per_device_batch_size=batch_size if eval_dataloaders else None,
        train_dataloader_len=train_len,
        eval_dataloader_len=_total_length(eval_dataloaders),
        gradient_accumulation_steps=accumulation_steps,
        num_update_steps_per_epoch=updates_per_epoch,
        max_num_train_steps=max_num_train_steps,
        num_training_steps=num_training_steps,
        gradient_clip_value=clip_value,
        gradient_clip_norm=clip_norm,
        num_processes=accelerator.num_processes,
        is_local_process_zero=accelerator.is_local_main_process,
        is_world_process_zero=accelerator.is_main_process,
        mixed_precision=str(accelerator.mixed_precision),
    )


def _total_length(dataloaders) -> int | None:
    """The batches of every evaluation set together (``None``: none, or one of unknown length)."""
    lengths = [_data.length_or_none(dataloader) for dataloader in dataloaders]
    return None if not lengths or None in lengths else sum(lengths)


def default_eval_batch_size(run_config: TrainerRunConfig | None) -> int:
    """``evaluate()``'s batch size when none is given: the last run's, or 8."""
    if run_config is None:
        return 8
    return run_config.eval_per_device_batch_size or run_config.train_per_device_batch_size
