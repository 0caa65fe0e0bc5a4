"""A callback that plots a run's metrics to PNG files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from pytorch_accelerated.trainer import TrainerCallback

from .extras import require_extra
from .loggers import as_number, metric_counts

Curve = tuple[list[float], list[float]]


class PlotMetricsCallback(TrainerCallback):
    """Saves one PNG per quantity to ``save_dir`` at the end of each training run (on the main
    process), with the epoch on the x axis (needs the ``plot`` extra, matplotlib).

    Metrics whose names differ only by a leading ``train_`` or ``eval_`` share one plot, named
    after the rest: ``train_loss_epoch`` and ``eval_loss_epoch`` go to ``loss_epoch.png``. A metric
    recorded several times in an epoch (``lr`` from ``LearningRateMonitorCallback``) is spread
    evenly over that epoch. ``metric_names`` limits the plots to those metrics; non-scalar values
    are skipped. With ``summary_filename`` set (``"metrics.png"`` by default), one more PNG holds
    every plot side by side, so that loss and accuracy can be read in one picture. Plots from an
    earlier run in the same ``save_dir`` are replaced; the paths written are in ``saved_paths``. Figures are drawn on matplotlib's Agg canvas without pyplot, so the
    global matplotlib backend and pyplot's figures are left alone.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        metric_names: Iterable[str] | None = None,
        dpi: int = 100,
        summary_filename: str | None = "metrics.png",
    ):
        require_extra("matplotlib", "plot", type(self).__name__)
        self.save_dir = Path(save_dir)
        self.summary_filename = summary_filename
        self.metric_names = list(metric_names) if metric_names is not None else None
        self.dpi = dpi
        self.saved_paths: list[Path] = []
        # (epoch, how many values each metric held at its end), from the run's start
        self._epoch_ends: list[tuple[int, dict[str, int]]] = []

    def on_training_run_start(self, trainer, **kwargs):
        history = trainer.run_history
        self._epoch_ends = [(history.current_epoch - 1, metric_counts(history))]

    def on_training_run_epoch_end(self, trainer, **kwargs):
        self._epoch_ends.append((trainer.run_history.current_epoch, metric_counts(trainer.run_history)))

    def on_training_run_end(self, trainer, **kwargs):
        history = trainer.run_history
        if metric_counts(history) != self._epoch_ends[-1][1]:
            # stopped mid-epoch, or before this callback's on_training_run_epoch_end
            self._epoch_ends.append((history.current_epoch, metric_counts(history)))
        if trainer.is_world_process_zero:
            self.saved_paths = self._save_plots(history)

    def _save_plots(self, history) -> list[Path]:
        groups: dict[str, dict[str, Curve]] = {}
        for name in history.get_metric_names():
            if self.metric_names is None or name in self.metric_names:
                curve = self._curve(history.get_metric_values(name), name)
                if curve[0]:
                    groups.setdefault(_quantity(name), {})[name] = curve
        self.save_dir.mkdir(parents=True, exist_ok=True)
        paths = [self._save_plot(quantity, curves) for quantity, curves in groups.items()]
        if self.summary_filename and groups:
            paths.append(self._save_summary(groups))
        return paths

    def _curve(self, values: list, name: str) -> Curve:
        """The metric's (epoch, value) points during the run; k values in one epoch sit at 1/k steps."""
        xs, ys = [], []
        for (start_epoch, counts_before), (epoch, counts_after) in zip(self._epoch_ends, self._epoch_ends[1:]):
            epoch_values = values[counts_before.get(name, 0) : counts_after.get(name, 0)]
            for index, value in enumerate(epoch_values):
                number = as_number(value)
                if number is not None:
                    xs.append(start_epoch + (index + 1) * (epoch - start_epoch) / len(epoch_values))
                    ys.append(float(number))
        return xs, ys

    def _save_plot(self, quantity: str, curves: dict[str, Curve]) -> Path:
        figure = _new_figure(6.4, 4.0)
        _draw(figure.add_subplot(), quantity, curves)
        path = self.save_dir / (re.sub(r"[^\w.-]", "_", quantity) + ".png")
        figure.savefig(path, dpi=self.dpi)
        return path

    def _save_summary(self, groups: dict[str, dict[str, Curve]]) -> Path:
        columns = min(3, len(groups))
        rows = -(-len(groups) // columns)
        figure = _new_figure(5.0 * columns, 3.6 * rows)
        for index, (quantity, curves) in enumerate(groups.items(), start=1):
            _draw(figure.add_subplot(rows, columns, index), quantity, curves)
        path = self.save_dir / self.summary_filename
        figure.savefig(path, dpi=self.dpi)
        return path


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _draw(axes, quantity: str, curves: dict[str, Curve]) -> None:
    from matplotlib.ticker import MaxNLocator

    for name, (xs, ys) in curves.items():
        axes.plot(xs, ys, marker="o" if len(xs) <= 50 else None, markersize=3, label=name)
    axes.set(xlabel="epoch", title=quantity)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.legend()


def _quantity(metric_name: str) -> str:
    """The metric's name without a leading ``train_`` or ``eval_``: what the plot shows."""
    for prefix in ("train_", "eval_"):
        if metric_name.startswith(prefix):
            return metric_name[len(prefix) :]
    return metric_name
