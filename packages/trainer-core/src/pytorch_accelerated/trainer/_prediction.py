""":meth:`Trainer.predict`: the model's outputs for every sample, once and in dataset order, on
every process (each process predicts a contiguous share; the shares are gathered)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import gather_object, send_to_device
from torch.utils.data import DataLoader, Subset

from . import _data
from ._arguments import check_positive_int
from .agreement import sync_buffers_before_evaluation
from .checkpointing import map_tensors

if TYPE_CHECKING:
    from .trainer import Trainer


def predict(trainer: Trainer, dataset, batch_size: int, collate_fn, dataloader_kwargs: dict[str, Any] | None):
    check_positive_int("per_device_batch_size", batch_size)
    _data.check_predictable(dataset)
    trainer._prepare_model_and_optimizer()
    share = _contiguous_share(len(dataset), trainer.accelerator.process_index, trainer.num_processes)
    kwargs = {"shuffle": False, "collate_fn": collate_fn or trainer.collate_fn, **(dataloader_kwargs or {})}
    if kwargs.get("shuffle"):
        raise ValueError("predict() returns outputs in dataset order: remove shuffle=True.")
    dataloader = DataLoader(Subset(dataset, share), batch_size=batch_size, **kwargs)
    sync_buffers_before_evaluation(trainer.model)
    was_training = trainer.model.training
    trainer.model.eval()
    outputs = []
    with torch.no_grad():
        for batch in dataloader:
            batch_predictions = trainer.calculate_batch_predictions(send_to_device(batch, trainer.device))
            outputs.append(send_to_device(map_tensors(batch_predictions, torch.Tensor.detach), "cpu"))
    trainer.model.train(was_training)
    local = _concatenate(outputs) if outputs else None
    if trainer.num_processes == 1:
        return local
    shares = [part for part in gather_object([local]) if part is not None]
    return _concatenate(shares)


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
