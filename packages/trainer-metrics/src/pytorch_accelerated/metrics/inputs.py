"""From a batch and the trainer's batch output to a metric's ``update`` arguments."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import Metric

INPUTS_FN_HINT = (
    "Map (batch, batch_output) to this metric's inputs with MetricsCallback(..., inputs_fn=...), "
    "a function (batch, batch_output, metric) -> tuple of update() arguments."
)


def default_metric_inputs(batch, batch_output: Mapping[str, Any], metric: Metric) -> tuple:
    """``(preds, target)`` for ``metric.update``: the model's outputs (their ``logits`` if they are
    a dict or an output object) and the batch's targets (``batch[1]``, or ``batch["labels"]``).

    Two shape fixes: outputs of shape ``(N, 1)`` for targets of shape ``(N,)`` are squeezed; and
    class scores (one more dimension than integer targets) become argmax labels, except for
    torchmetrics' classification metrics, which take the scores themselves (AUROC needs them).
    """
    preds = _predictions(batch_output["model_outputs"])
    target = _targets(batch)
    if (
        isinstance(preds, torch.Tensor)
        and isinstance(target, torch.Tensor)
        and preds.dim() == target.dim() + 1
    ):
        if preds.shape[-1] == 1:
            preds = preds.squeeze(-1)
        elif preds.is_floating_point() and not target.is_floating_point() and not _takes_class_scores(metric):
            preds = preds.argmax(dim=-1)
    return preds, target


def _predictions(model_outputs):
    if isinstance(model_outputs, torch.Tensor):
        return model_outputs
    if isinstance(model_outputs, Mapping):
        logits = model_outputs.get("logits")
    else:
        logits = getattr(model_outputs, "logits", None)
    if logits is None:
        raise ValueError(
            f"The model's outputs are a {type(model_outputs).__name__} without 'logits', so the default "
            f"metric inputs cannot find the predictions. {INPUTS_FN_HINT}"
        )
    return logits


def _targets(batch):
    if isinstance(batch, Mapping) and "labels" in batch:
        return batch["labels"]
    if isinstance(batch, (list, tuple)) and len(batch) > 1:
        return batch[1]
    raise ValueError(
        "The default metric inputs take the targets from batch[1] or batch['labels'], and this batch "
        f"({type(batch).__name__}) has neither. {INPUTS_FN_HINT}"
    )


def _takes_class_scores(metric: Metric) -> bool:
    return type(metric).__module__.startswith("torchmetrics.classification")


def check_class_count(name: str, metric: Metric, inputs) -> None:
    """A clear error where a metric counts another number of classes than the model scores: torchmetrics
    says only that the shapes differ, and with ``validate_args=False`` nothing until compute, or never.

    Args:
        name: the metric's name, for the error.
        metric: the metric.
        inputs: its ``update`` arguments, predictions first, targets second.
    """
    num_classes = getattr(metric, "num_classes", None)
    if not isinstance(num_classes, int) or len(inputs) < 2:
        return
    preds, target = inputs[0], inputs[1]
    if not (isinstance(preds, torch.Tensor) and isinstance(target, torch.Tensor)):
        return
    class_scores = preds.is_floating_point() and preds.dim() >= 2 and preds.dim() == target.dim() + 1
    if class_scores and preds.shape[1] != num_classes:
        shape = f"{str(preds.dtype).removeprefix('torch.')}{list(preds.shape)}"
        raise ValueError(
            f"Metric {name!r} ({type(metric).__name__}) was created with num_classes={num_classes}, but the "
            f"model gives {preds.shape[1]} class scores per sample (predictions {shape}): create it with "
            f"num_classes={preds.shape[1]}, or give the model {num_classes} outputs."
        )
