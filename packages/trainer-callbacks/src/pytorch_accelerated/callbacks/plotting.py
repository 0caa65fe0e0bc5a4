"""A callback that plots a run's metrics to PNG files a person can read."""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from pytorch_accelerated.trainer import TrainerCallback

from .extras import require_extra
from .loggers import as_number, metric_counts

Curve = tuple[list[float], list[float]]

# Words for the parts of metric names that are not words already.
_WORDS = {
    "lr": "learning rate",
    "f1": "F1 score",
    "eval": "validation",
    "train": "training",
    "auroc": "AUROC",
}
_SOURCES = {"train": "training", "eval": "validation", "step": "step-based evaluation"}


@dataclass
class _RunMarks:
    """What the plots mark besides the curves: the best epoch, an early stop, scores from ``evaluate``."""

    best: tuple[float, float, int] | None = None  # (step, value, epoch) of best_metric
    stopped: tuple[float, str, int] | None = None  # (step, why, epoch)
    scores: dict[str, dict[str, float]] | None = None  # quantity -> {label: value}
    epoch_ends: list[tuple[int, int]] | None = None  # (step, epoch) where each epoch ended


class PlotMetricsCallback(TrainerCallback):
    """Saves one PNG per quantity to ``save_dir`` at the end of each training run (on the main
    process), with the optimizer update step on the x axis and the end of each epoch marked
    (needs the ``plot`` extra, matplotlib).

    Each value is drawn at the update step it was recorded at (its ``MetricRecord.step``): the
    epoch's loss at the epoch's last update, ``lr`` from ``LearningRateMonitorCallback`` at every
    update it was read, a step-based evaluation at its update. Metrics of one quantity from
    different sources share one plot, named after the quantity: ``train_loss_epoch``,
    ``eval_loss_epoch`` and ``step_eval_loss`` go to ``loss_epoch.png``, titled "Loss" with
    the curves "training", "validation" and "step-based evaluation" (``eval_accuracy`` and
    ``step_eval_accuracy`` to ``accuracy.png``). ``metric_names`` limits the plots to those
    metrics; non-scalar values, and values recorded without a step (a history loaded from a state
    saved before values had one), are skipped.

    The plots mark the epoch where ``best_metric`` was best (``greater_is_better`` as for
    ``SaveBestModelCallback`` and ``EarlyStoppingCallback``, whose defaults these are), the epoch
    where a callback stopped the run early, with its reason, and the scores of an ``evaluate()``
    called after training (the test set's, say: a horizontal line on the plot of the same quantity;
    the plots are saved again with it).

    With ``summary_filename`` set (``"metrics.png"`` by default), one more PNG holds every plot side
    by side. Plots from an earlier run in the same ``save_dir`` are replaced; the paths written are
    in ``saved_paths``. Figures are drawn on matplotlib's Agg canvas without pyplot, so the global
    matplotlib backend and pyplot's figures are left alone.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        metric_names: Iterable[str] | None = None,
        dpi: int = 100,
        summary_filename: str | None = "metrics.png",
        best_metric: str | None = "eval_loss_epoch",
        greater_is_better: bool = False,
    ):
        require_extra("matplotlib", "plot", type(self).__name__)
        self.save_dir = Path(save_dir)
        self.summary_filename = summary_filename
        self.metric_names = list(metric_names) if metric_names is not None else None
        self.dpi = dpi
        self.best_metric, self.greater_is_better = best_metric, greater_is_better
        self.saved_paths: list[Path] = []
        # (epoch, its last update step, how many values each metric held at its end), from the run's start
        self._epoch_ends: list[tuple[int, int, dict[str, int]]] = []
        self._stop_reason: str | None = None

    def on_training_run_start(self, trainer, **kwargs):
        history = trainer.run_history
        self._epoch_ends = [
            (history.current_epoch - 1, trainer.completed_update_steps, metric_counts(history))
        ]
        self._stop_reason = None

    def on_training_run_epoch_end(self, trainer, **kwargs):
        history = trainer.run_history
        self._epoch_ends.append(
            (history.current_epoch, trainer.completed_update_steps, metric_counts(history))
        )

    def on_stop_training_error(self, trainer, stop_training_error, **kwargs):
        self._stop_reason = str(stop_training_error)

    def on_training_run_end(self, trainer, **kwargs):
        history = trainer.run_history
        if metric_counts(history) != self._epoch_ends[-1][2]:
            # stopped mid-epoch, or before this callback's on_training_run_epoch_end
            self._epoch_ends.append(
                (history.current_epoch, trainer.completed_update_steps, metric_counts(history))
            )
        if trainer.is_world_process_zero:
            self.saved_paths = self._save_plots(history)

    def on_evaluation_run_end(self, trainer, **kwargs):
        """An ``evaluate()`` after a plotted training run: the plots again, with its scores."""
        if self._epoch_ends and trainer.is_world_process_zero and self.saved_paths:
            self.saved_paths = self._save_plots(trainer.run_history)

    def _save_plots(self, history) -> list[Path]:
        groups: dict[str, dict[str, Curve]] = {}
        for name in history.get_metric_names():
            if self.metric_names is None or name in self.metric_names:
                curve = self._curve(history, name)
                if curve[0]:
                    groups.setdefault(_quantity(name), {})[name] = curve
        marks = self._marks(history)
        self.save_dir.mkdir(parents=True, exist_ok=True)
        paths = [self._save_plot(quantity, curves, marks) for quantity, curves in groups.items()]
        if self.summary_filename and groups:
            paths.append(self._save_summary(groups, marks))
        return paths

    def _run_records(self, history, name: str) -> list:
        """The records of ``name`` written during the run, with a step and a scalar value."""
        start, end = self._epoch_ends[0][2].get(name, 0), self._epoch_ends[-1][2].get(name, 0)
        records = history.get_metric_records(name)[start:end]
        return [
            record for record in records if record.step is not None and as_number(record.value) is not None
        ]

    def _curve(self, history, name: str) -> Curve:
        """The metric's (update step, value) points during the run."""
        records = self._run_records(history, name)
        return [float(record.step) for record in records], [
            float(as_number(record.value)) for record in records
        ]

    def _marks(self, history) -> _RunMarks:
        marks = _RunMarks(scores=self._scores_after_the_run(history))
        marks.epoch_ends = [(step, epoch) for epoch, step, _ in self._epoch_ends[1:]]
        if self.best_metric is not None:
            records = self._run_records(history, self.best_metric)
            if records:
                pick = max if self.greater_is_better else min
                best = pick(records, key=lambda record: float(as_number(record.value)))
                marks.best = (float(best.step), float(as_number(best.value)), best.epoch)
        if self._stop_reason is not None:
            epoch, step, _ = self._epoch_ends[-1]
            marks.stopped = (float(step), self._stop_reason, epoch)  # where the curves end
        return marks

    def _scores_after_the_run(self, history) -> dict[str, dict[str, float]]:
        """The scalar metrics recorded since the training run ended (by ``evaluate()``), by quantity:
        ``test_eval_accuracy`` is the "test" score of ``accuracy``, ``test_eval_loss`` that of
        ``loss_epoch``."""
        scores: dict[str, dict[str, float]] = {}
        at_run_end = self._epoch_ends[-1][2]
        for name in history.get_metric_names():
            values = history.get_metric_values(name)[at_run_end.get(name, 0) :]
            number = as_number(values[-1]) if values else None
            split = _evaluation_split(name)
            if number is not None and split:
                label, quantity = split
                scores.setdefault(quantity, {})[(label or "evaluation").replace("_", " ")] = float(number)
        return scores

    def _save_plot(self, quantity: str, curves: dict[str, Curve], marks: _RunMarks) -> Path:
        figure = _new_figure(6.4, 4.2)
        _draw(figure.add_subplot(), quantity, curves, marks, self.best_metric)
        if marks.stopped:
            figure.suptitle(_stop_note(marks.stopped, width=95), fontsize=8, color="0.3")
        path = self.save_dir / (re.sub(r"[^\w.-]", "_", quantity) + ".png")
        figure.savefig(path, dpi=self.dpi)
        return path

    def _save_summary(self, groups: dict[str, dict[str, Curve]], marks: _RunMarks) -> Path:
        columns = min(3, len(groups))
        rows = -(-len(groups) // columns)
        figure = _new_figure(5.0 * columns, 3.8 * rows)
        for index, (quantity, curves) in enumerate(groups.items(), start=1):
            _draw(figure.add_subplot(rows, columns, index), quantity, curves, marks, self.best_metric)
        if marks.stopped:
            figure.suptitle(_stop_note(marks.stopped, width=75 * columns), fontsize=9, color="0.3")
        path = self.save_dir / self.summary_filename
        figure.savefig(path, dpi=self.dpi)
        return path


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _draw(axes, quantity: str, curves: dict[str, Curve], marks: _RunMarks, best_metric: str | None) -> None:
    from matplotlib.ticker import MaxNLocator

    for name, (xs, ys) in curves.items():
        axes.plot(
            xs, ys, marker="o" if len(xs) <= 50 else None, markersize=3, label=_curve_label(name, quantity)
        )
    _mark_epoch_ends(axes, marks.epoch_ends or [])
    if marks.best is not None:
        step, value, epoch = marks.best
        axes.axvline(
            step,
            color="tab:green",
            linestyle=":",
            linewidth=1.2,
            label=f"best epoch: {epoch:g} ({_words(best_metric)})",
        )
        if best_metric in curves:
            axes.plot(
                [step],
                [value],
                marker="*",
                markersize=12,
                color="tab:green",
                linestyle="none",
                label=f"best {_words(best_metric)}: {value:.4g}",
            )
    if marks.stopped is not None:
        axes.axvline(
            marks.stopped[0],
            color="tab:red",
            linestyle="--",
            linewidth=1.2,
            label=f"stopped early (epoch {marks.stopped[2]:g})",
        )
    for (label, value), color in zip(
        (marks.scores or {}).get(quantity, {}).items(), ("tab:purple", "tab:brown", "tab:pink")
    ):
        axes.axhline(value, color=color, linestyle="-.", linewidth=1.2, label=f"{label}: {value:.4g}")
    values = [y for _, ys in curves.values() for y in ys]
    if "loss" in quantity and min(values) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")  # a loss falls by orders of magnitude: the late epochs stay readable
    elif _is_fraction(quantity, [*values, *(marks.scores or {}).get(quantity, {}).values()]):
        axes.set_ylim(-0.03, 1.03)  # a score from 0 to 1 (accuracy): its whole scale, every point inside
    words = _words(quantity)
    axes.set(xlabel="update step", ylabel=words)
    axes.set_title(words[:1].upper() + words[1:], pad=14)  # above the epoch labels
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    # below the axes: it hides no point
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)


def _is_fraction(quantity: str, values: list[float]) -> bool:
    """Whether a quantity is a score from 0 to 1 (accuracy, F1): its values are, and it is no loss or lr."""
    return not ({"loss", "lr"} & set(quantity.split("_"))) and all(0.0 <= value <= 1.0 for value in values)


def _mark_epoch_ends(axes, epoch_ends: list[tuple[int, int]]) -> None:
    """A thin line at each epoch's last update, labelled with the epoch at the top (at most ~5 labels:
    more overlap on a plot of the summary's width)."""
    every = max(1, -(-len(epoch_ends) // 5))
    for index, (step, epoch) in enumerate(epoch_ends):
        axes.axvline(step, color="0.75", linestyle="-", linewidth=0.8, zorder=0)
        # not on top of the one before
        last_far_enough = index == len(epoch_ends) - 1 and index % every >= every // 2
        if index % every == every - 1 or last_far_enough:
            axes.text(
                step,
                1.0,
                f"epoch {epoch}",
                transform=axes.get_xaxis_transform(),
                fontsize=7,
                color="0.45",
                ha="right",
                va="bottom",
            )


def _split(metric_name: str) -> tuple[str, str]:
    """(source, quantity) of a metric name: ``train_loss_epoch`` -> ("train", "loss_epoch"),
    ``step_eval_loss`` -> ("step", "loss_epoch"), ``step_eval_accuracy`` -> ("step", "accuracy")."""
    if metric_name == "eval_loss":
        return "evaluate", "loss_epoch"  # an evaluate() under no prefix during the run
    for source in ("train", "eval"):
        if metric_name.startswith(source + "_"):
            return source, metric_name[len(source) + 1 :]
    split = _evaluation_split(metric_name)
    return (split[0] or "evaluate", split[1]) if split else ("", metric_name)


def _evaluation_split(metric_name: str) -> tuple[str | None, str] | None:
    """(prefix, quantity) of an evaluation's metric ``<prefix>_eval_<name>``, the loss ``eval_loss``
    plotted with ``loss_epoch``; None for a name of no evaluation."""
    match = re.fullmatch(r"(?:(\w+?)_)?eval_(\w+)", metric_name)
    if not match:
        return None
    prefix, quantity = match.groups()
    return prefix, "loss_epoch" if quantity == "loss" else quantity


def _quantity(metric_name: str) -> str:
    """What the plot of the metric shows: its name without the source (``train_``, ``eval_``,
    ``step_eval_``)."""
    return _split(metric_name)[1]


def _words(name: str) -> str:
    """A metric name in words: ``loss_epoch`` -> "loss", ``lr`` -> "learning rate"."""
    parts = [part for part in name.split("_") if part not in ("epoch", "step")] or [name]
    return " ".join(_WORDS.get(part, part) for part in parts)


def _curve_label(metric_name: str, quantity: str) -> str:
    """The legend's name of a curve: "training" for ``train_loss_epoch`` on the loss plot."""
    source = _split(metric_name)[0]
    if not source:
        return _words(metric_name)
    return _SOURCES.get(source, _words(source))


def _stop_note(stopped: tuple[float, str, int], width: int) -> str:
    step, reason, epoch = stopped
    return textwrap.fill(f"Stopped early after epoch {epoch:g} (update step {step:g}): {reason}", width)
