"""PlotMetricsCallback at the end of real tiny training runs."""

import re
import sys

import pytest

from pytorch_accelerated.callbacks.monitors import LearningRateMonitorCallback
from pytorch_accelerated.callbacks.plotting import PlotMetricsCallback
from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path):
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > len(PNG_SIGNATURE), path
    height, width, _ = imread(path).shape
    assert height > 100 and width > 100


def test_one_png_per_quantity_with_train_and_eval_curves_together(tmp_path, monkeypatch):
    # Drawn without pyplot (importing it fails here), so the global backend is never touched.
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    plots = PlotMetricsCallback(tmp_path / "plots")
    run_tiny_training(callbacks=[LearningRateMonitorCallback(), plots], num_epochs=3)

    names = sorted(path.name for path in (tmp_path / "plots").iterdir())
    # train_loss_epoch and eval_loss_epoch share a plot; metrics.png holds every plot side by side
    assert names == ["loss_epoch.png", "lr.png", "metrics.png"]
    assert sorted(path.name for path in plots.saved_paths) == names
    for path in plots.saved_paths:
        assert_valid_png(path)


def test_metric_names_limits_the_plots(tmp_path):
    plots = PlotMetricsCallback(tmp_path, metric_names=["eval_loss_epoch"], summary_filename=None)
    run_tiny_training(callbacks=[plots], num_epochs=2)
    assert [path.name for path in plots.saved_paths] == ["loss_epoch.png"]


class StopAtEpochEnd(TrainerCallback):
    def on_training_run_epoch_end(self, trainer, **kwargs):
        if trainer.run_history.current_epoch == 2:
            raise StopTrainingError("stop for the test")


def test_a_stopped_run_is_plotted_too(tmp_path):
    plots = PlotMetricsCallback(tmp_path)
    run_tiny_training(callbacks=[StopAtEpochEnd(), plots], num_epochs=5)
    assert [path.name for path in plots.saved_paths] == ["loss_epoch.png", "metrics.png"]
    assert_valid_png(plots.saved_paths[0])
    assert_valid_png(plots.saved_paths[1])


class NotMainProcessTrainer(Trainer):
    @property
    def is_world_process_zero(self) -> bool:
        return False


def test_processes_other_than_the_main_one_plot_nothing(tmp_path):
    plots = PlotMetricsCallback(tmp_path / "plots")
    run_tiny_training(callbacks=[plots], num_epochs=1, trainer_class=NotMainProcessTrainer)
    assert not (tmp_path / "plots").exists() and plots.saved_paths == []


def test_a_missing_matplotlib_is_named_when_the_callback_is_created(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    message = "PlotMetricsCallback needs matplotlib: pip install 'trainer-callbacks[plot]'"
    with pytest.raises(ImportError, match=re.escape(message)):
        PlotMetricsCallback(tmp_path)
