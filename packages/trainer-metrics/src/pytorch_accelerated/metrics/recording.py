"""Computing torchmetrics metrics and recording their values in a run history."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torchmetrics import Metric, MetricCollection

from pytorch_accelerated.trainer import RunHistory

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-/]+")


def check_metric_name(name) -> str:
    """Return ``name`` if it is a usable metric name (letters, digits and ``_ . - /``; no spaces,
    which loggers and CSV headers handle badly), else raise ``ValueError``."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"Metric names may hold only letters, digits and '_', '.', '-', '/' (no spaces), got {name!r}."
        )
    return name


def as_metric_dict(metrics: Mapping[str, Metric] | MetricCollection) -> dict[str, Metric]:
    """``metrics`` as a dict of checked names to torchmetrics metrics (a collection's keys include
    its prefix and postfix)."""
    if isinstance(metrics, MetricCollection):
        # Not copy_state: the collection's metrics are used one by one, never in compute groups.
        metrics = dict(metrics.items(keep_base=False, copy_state=False))
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError(
            "metrics must be a non-empty dict of name to torchmetrics Metric, or a MetricCollection; got"
            f" {metrics!r}."
        )
    for name, metric in metrics.items():
        check_metric_name(name)
        if not isinstance(metric, Metric):
            raise TypeError(f"Metric {name!r} is a {type(metric).__name__}, not a torchmetrics Metric.")
    return dict(metrics)


def record_metrics(
    run_history: RunHistory, metrics: Mapping[str, Metric] | MetricCollection, prefix: str = ""
) -> dict[str, Any]:
    """Compute every metric, record each value in ``run_history`` as ``prefix + name``, reset the
    metrics, and return the recorded values by name.

    torchmetrics gathers the metrics' states from every process when computing (call this on
    every process). Scalars are recorded as plain Python numbers, other tensors on the CPU; a
    metric that returns a dict is recorded as ``prefix + name + "_" + key`` per entry.
    """
    if isinstance(metrics, MetricCollection):
        computed = metrics.compute()
    else:
        computed = {name: metric.compute() for name, metric in metrics.items()}
    values: dict[str, Any] = {}
    for name, value in computed.items():
        values.update(_flatten(prefix + name, value))
    for name, value in values.items():
        run_history.update_metric(check_metric_name(name), value)
    for metric in metrics.values():
        metric.reset()
    return values


def _flatten(name: str, value) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {f"{name}_{key}": _plain(item) for key, item in value.items()}
    return {name: _plain(value)}


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
