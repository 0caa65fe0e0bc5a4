"""A summary of the model at the start of a run: parameters per module, trainable and frozen, size."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pytorch_accelerated.trainer import TrainerCallback


@dataclass(frozen=True)
class ModuleSummary:
    """One row of the summary: a top-level child of the model (or the model's own parameters)."""

    name: str
    type: str
    parameters: int
    trainable_parameters: int
    size_mb: float  # parameters and buffers, in MB (10**6 bytes)

    @property
    def frozen_parameters(self) -> int:
        return self.parameters - self.trainable_parameters


def summarize_model(model: torch.nn.Module) -> list[ModuleSummary]:
    """One :class:`ModuleSummary` per top-level child of ``model``, then ``(own)`` for parameters
    and buffers the model holds itself, if any. Shared tensors count once, in the first row."""
    seen: set[int] = set()
    rows = [_summary(name, child, seen) for name, child in model.named_children()]
    own = _summary("(own)", model, seen, recurse=False)
    if own.parameters or own.size_mb:
        rows.append(own)
    return rows


def format_model_summary(rows: list[ModuleSummary]) -> str:
    """The rows as a text table, with a total line."""
    header = ("module", "type", "params", "trainable", "frozen", "size (MB)")
    lines = [
        (
            r.name,
            r.type,
            f"{r.parameters:,}",
            f"{r.trainable_parameters:,}",
            f"{r.frozen_parameters:,}",
            f"{r.size_mb:.3f}",
        )
        for r in rows
    ]
    total = _total(rows)
    lines.append(
        (
            "total",
            "",
            f"{total['parameters']:,}",
            f"{total['trainable_parameters']:,}",
            f"{total['frozen_parameters']:,}",
            f"{total['size_mb']:.3f}",
        )
    )
    widths = [max(len(line[i]) for line in (header, *lines)) for i in range(len(header))]

    def format_line(cells):
        return "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        )

    rule = "-" * len(format_line(header))
    return "\n".join([format_line(header), rule, *map(format_line, lines[:-1]), rule, format_line(lines[-1])])


class ModelSummaryCallback(TrainerCallback):
    """At the start of a training run, summarizes the model (``trainer.get_model()``, so DDP and
    ``torch.compile`` wrappers do not show): parameters per top-level module, trainable and frozen,
    size in MB of parameters and buffers.

    The table is printed on the main process (``print_summary=False`` for none) at the first run's
    start, and again at a later run's start only if the summary changed (layers unfrozen, say).
    The totals are recorded at every run's start as ``model_parameters``, ``model_trainable_parameters``,
    ``model_frozen_parameters`` and ``model_size_mb``: in the run config (``trainer.run_config.extra``),
    which trackers log as the run's parameters (list this callback before them), and in the run history
    (one value per run). ``callback.summary`` holds the rows of the last run.
    """

    def __init__(self, print_summary: bool = True, record_totals: bool = True):
        self.print_summary = print_summary
        self.record_totals = record_totals
        self.summary: list[ModuleSummary] | None = None
        self._printed: list[ModuleSummary] | None = None

    def on_training_run_start(self, trainer, **kwargs):
        self.summary = summarize_model(trainer.get_model(keep_torch_compile=False))
        if self.print_summary and self.summary != self._printed:
            model_class = type(trainer.get_model(keep_torch_compile=False)).__name__
            trainer.print(f"Model summary ({model_class}):\n{format_model_summary(self.summary)}")
            self._printed = self.summary
        if self.record_totals:
            totals = {f"model_{name}": value for name, value in _total(self.summary).items()}
            trainer.run_config = trainer.run_config.with_extra(**totals)
            for name, value in totals.items():
                trainer.run_history.update_metric(name, value)

    def recorded_metric_names(self, trainer):
        return [f"model_{name}" for name in _total([])] if self.record_totals else []

    def totals(self) -> dict[str, float]:
        """``parameters``, ``trainable_parameters``, ``frozen_parameters`` and ``size_mb`` of the last
        summary."""
        return _total(self.summary or [])


def _summary(name: str, module: torch.nn.Module, seen: set[int], recurse: bool = True) -> ModuleSummary:
    parameters = trainable = size = 0
    for parameter in module.parameters(recurse=recurse):
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        parameters += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
        size += parameter.numel() * parameter.element_size()
    for buffer in module.buffers(recurse=recurse):
        if id(buffer) not in seen:
            seen.add(id(buffer))
            size += buffer.numel() * buffer.element_size()
    return ModuleSummary(name, type(module).__name__, parameters, trainable, size / 1e6)


def _total(rows: list[ModuleSummary]) -> dict[str, float]:
    return {
        "parameters": sum(r.parameters for r in rows),
        "trainable_parameters": sum(r.trainable_parameters for r in rows),
        "frozen_parameters": sum(r.frozen_parameters for r in rows),
        "size_mb": sum(r.size_mb for r in rows),
    }


__all__ = ["ModelSummaryCallback", "ModuleSummary", "summarize_model", "format_model_summary"]
