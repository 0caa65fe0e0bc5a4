""":meth:`Trainer.predict`: the model's outputs for every sample, once and in dataset order, on
every process (each process predicts a contiguous share; the shares are gathered)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.utils import find_batch_size, gather_object, send_to_device
from torch.utils.data import DataLoader, Subset

from . import _data
from ._arguments import check_positive_int
from ._evaluation import EvenForwards, spare_batch, sync_buffers_before_evaluation
from .safe_files import map_tensors


def check_arguments(dataset, batch_size: int) -> None:
    """What :meth:`Trainer.predict` refuses before it prepares anything."""
    check_positive_int("per_device_batch_size", batch_size)
    _data.check_predictable(dataset)


def predict(
    accelerator: Accelerator,
    model: torch.nn.Module,
    predict_batch: Callable,
    dataset,
    batch_size: int,
    dataloader_kwargs: dict[str, Any],
    even_forwards: bool = False,
):
    """Every sample's ``predict_batch(batch)`` (the model in evaluation mode), in dataset order, on every
    process; with ``even_forwards`` (FSDP: forwards are collectives) as many forwards on every process."""
    share = _contiguous_share(len(dataset), accelerator.process_index, accelerator.num_processes)
    kwargs = {"shuffle": False, **dataloader_kwargs}
    if kwargs.get("shuffle"):
        raise ValueError("predict() returns outputs in dataset order: remove shuffle=True.")
    dataloader = DataLoader(Subset(dataset, share), batch_size=batch_size, **kwargs)
    batches = dataloader
    if even_forwards:  # the shares differ by one sample at most, but their batches may differ by one batch
        forward = functools.partial(_predict_on_device, predict_batch, accelerator.device)
        spare = functools.partial(spare_batch, dataset, dataloader.collate_fn, "cpu")  # for an empty share
        batches = EvenForwards(dataloader, accelerator, forward, spare, len(dataloader))
    sync_buffers_before_evaluation(model)
    was_training = model.training
    model.eval()
    outputs = []
    with torch.no_grad():
        for batch in batches:
            batch_predictions = _predict_on_device(predict_batch, accelerator.device, batch)
            batch_predictions = _per_sample(
                map_tensors(batch_predictions, torch.Tensor.detach), find_batch_size(batch)
            )
            outputs.append(send_to_device(batch_predictions, "cpu"))
    model.train(was_training)
    local = _concatenate(outputs) if outputs else None
    if accelerator.num_processes == 1:
        return local
    shares = [part for part in gather_object([local]) if part is not None]
    return _concatenate(shares)


def _predict_on_device(predict_batch: Callable, device, batch):
    return predict_batch(send_to_device(batch, device))


def _contiguous_share(length: int, process_index: int, num_processes: int) -> range:
    per_process, remainder = divmod(length, num_processes)
    start = process_index * per_process + min(process_index, remainder)
    return range(start, start + per_process + (1 if process_index < remainder else 0))


def _per_sample(predictions, batch_size: int):
    """A batch's predictions without its per-batch values (a transformers model's ``loss``): scalars in a dict
    are left out, in a tuple replaced by ``None``; they are not one per sample (``evaluate()`` gives the
    loss).
    """
    if isinstance(predictions, torch.Tensor):
        if predictions.dim() == 0 and batch_size != 1:
            raise TypeError(
                f"calculate_batch_predictions returned one scalar for a batch of {batch_size} samples, and"
                " predict() returns a value per sample: return the per-sample outputs (use evaluate() for a"
                " loss)."
            )
        return predictions
    if isinstance(predictions, Mapping):
        return {
            key: _per_sample(value, batch_size) for key, value in predictions.items() if not _is_scalar(value)
        }
    if isinstance(predictions, (list, tuple)):
        return type(predictions)(
            None if _is_scalar(item) else _per_sample(item, batch_size) for item in predictions
        )
    return predictions


def _is_scalar(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 0


def _concatenate(parts: list):
    first = parts[0]
    if first is None:  # a per-batch value's place in a tuple
        return None
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
