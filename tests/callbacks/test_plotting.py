"""PlotMetricsCallback at the end of real tiny training runs."""

import re
import sys

import pytest

from pytorch_accelerated.callbacks.monitors import LearningRateMonitorCallback
from pytorch_accelerated.callbacks.plotting import PlotMetricsCallback
from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training

from .helpers import StopAtEpochEnd

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


def test_a_stopped_run_is_plotted_too(tmp_path):
    plots = PlotMetricsCallback(tmp_path)
    run_tiny_training(callbacks=[StopAtEpochEnd(epoch=2), plots], num_epochs=5)
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


# ------------------------------------------------------------------ what a person reads on the plots


@pytest.fixture
def drawn(monkeypatch):
    """The figures as they are saved, by file name: the real drawing, looked at before it is written."""
    from matplotlib.figure import Figure

    figures = {}
    savefig = Figure.savefig

    def keep_and_save(figure, path, **kwargs):
        figures[path.name] = figure
        return savefig(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_and_save)
    return figures


def legend(axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def test_titles_axis_labels_and_curves_are_named_in_words(tmp_path, drawn):
    run_tiny_training(
        callbacks=[LearningRateMonitorCallback(), PlotMetricsCallback(tmp_path, best_metric=None)],
        num_epochs=2,
    )

    (loss,) = drawn["loss_epoch.png"].axes
    assert (loss.get_title(), loss.get_xlabel(), loss.get_ylabel()) == ("Loss", "update step", "loss")
    assert legend(loss) == ["training", "validation"]
    (lr,) = drawn["lr.png"].axes
    assert (lr.get_title(), lr.get_ylabel()) == ("Learning rate", "learning rate")
    assert sorted(axes.get_title() for axes in drawn["metrics.png"].axes) == ["Learning rate", "Loss"]


def test_a_run_without_a_stop_or_a_test_score_shows_only_its_best_epoch(tmp_path, drawn):
    result = run_tiny_training(callbacks=[PlotMetricsCallback(tmp_path)], num_epochs=3)

    eval_losses = result.trainer.run_history.get_metric_values("eval_loss_epoch")
    best_epoch = 1 + min(range(3), key=eval_losses.__getitem__)
    (loss,) = drawn["loss_epoch.png"].axes
    assert legend(loss) == [
        "training",
        "validation",
        f"best epoch: {best_epoch} (validation loss)",
        f"best validation loss: {min(eval_losses):.4g}",
    ]
    assert drawn["loss_epoch.png"]._suptitle is None


class StopAtEpochTwo(TrainerCallback):
    def on_training_run_epoch_end(self, trainer, **kwargs):
        if trainer.run_history.current_epoch == 2:
            raise StopTrainingError("the test stops it")


def test_the_best_epoch_the_early_stop_and_the_test_score_are_marked(tmp_path, drawn):
    plots = PlotMetricsCallback(tmp_path, best_metric="eval_loss_epoch")
    result = run_tiny_training(callbacks=[StopAtEpochTwo(), plots], num_epochs=5)
    trainer = result.trainer
    (loss,) = drawn["loss_epoch.png"].axes
    assert "stopped early (epoch 2)" in legend(loss)
    assert (
        "Stopped early after epoch 2 (update step 16): the test stops it"
        in drawn["loss_epoch.png"]._suptitle.get_text()
    )
    assert not [label for label in legend(loss) if label.startswith("test")]

    from pytorch_accelerated.trainer.testing import make_tiny_dataset

    with trainer.run_history.metric_prefix("test_"):
        test_loss = trainer.evaluate(make_tiny_dataset(16, seed=2), per_device_batch_size=8)["test_eval_loss"]

    (loss,) = drawn["loss_epoch.png"].axes  # saved again, with the test score
    assert f"test: {test_loss:.4g}" in legend(loss)
    (line,) = [line for line in loss.get_lines() if line.get_label() == f"test: {test_loss:.4g}"]
    assert list(line.get_ydata()) == [test_loss, test_loss]
    assert sorted(path.name for path in plots.saved_paths) == ["loss_epoch.png", "metrics.png"]
    for path in plots.saved_paths:
        assert_valid_png(path)


def test_each_value_is_drawn_at_its_update_step_with_the_epoch_ends_marked(tmp_path, drawn):
    from pytorch_accelerated.callbacks import StepBasedEvaluationCallback

    callbacks = [
        LearningRateMonitorCallback(log_every_n_steps=2),
        StepBasedEvaluationCallback(eval_every_n_steps=3),
        PlotMetricsCallback(tmp_path, dpi=80),
    ]
    result = run_tiny_training(callbacks=callbacks, num_epochs=2)  # 8 updates per epoch
    history = result.trainer.run_history

    def curve(axes, label):
        (line,) = [line for line in axes.get_lines() if line.get_label() == label]
        return list(line.get_xdata()), list(line.get_ydata())

    (loss,) = drawn["loss_epoch.png"].axes
    assert curve(loss, "training") == ([8, 16], history.get_metric_values("train_loss_epoch"))
    assert curve(loss, "validation") == ([8, 16], history.get_metric_values("eval_loss_epoch"))
    # the step-based evaluations share the loss plot, each at its update
    assert curve(loss, "step-based evaluation") == (
        [3, 6, 9, 12, 15],
        history.get_metric_values("step_eval_loss"),
    )
    (lr,) = drawn["lr.png"].axes
    assert curve(lr, "learning rate")[0] == [2, 4, 6, 8, 10, 12, 14, 16]
    for axes in (loss, lr):
        epoch_lines = [
            line.get_xdata()[0]
            for line in axes.get_lines()
            if line.get_label().startswith("_") and line.get_color() == "0.75"
        ]
        assert epoch_lines == [8, 16]
        assert [text.get_text() for text in axes.texts] == ["epoch 1", "epoch 2"]
        assert axes.get_xlabel() == "update step"
    for path in plots_of(tmp_path):
        assert_valid_png(path)


def plots_of(folder):
    return sorted(folder.glob("*.png"))


# ---------------------------------------------------------------------------------------- issue 27


def test_a_score_is_plotted_from_0_to_1_and_no_legend_hides_a_point(tmp_path, monkeypatch):
    """The quickstart's accuracy panel started at ~0.5, under its legend, which hid the first point."""
    from matplotlib.figure import Figure

    drawn = []
    original = Figure.savefig

    def keep_and_save(figure, *args, **kwargs):
        drawn.append(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep_and_save)

    class Accuracy(TrainerCallback):
        def on_eval_epoch_end(self, trainer, **kwargs):
            epoch = trainer.run_history.current_epoch
            trainer.run_history.update_metric(
                "train_accuracy", [0.49, 0.77, 0.87, 0.9, 0.93, 0.95][epoch - 1]
            )
            trainer.run_history.update_metric("eval_accuracy", [0.76, 0.83, 0.9, 0.91, 0.94, 0.94][epoch - 1])

    plots = PlotMetricsCallback(tmp_path, best_metric="eval_accuracy", greater_is_better=True)
    run_tiny_training(callbacks=[Accuracy(), plots], num_epochs=6)
    accuracy_axes = [axes for figure in drawn for axes in figure.axes if axes.get_ylabel() == "accuracy"]
    assert len(accuracy_axes) == 2, "accuracy.png and its panel in metrics.png"
    for axes in accuracy_axes:
        bottom, top = axes.get_ylim()
        assert bottom <= 0.0 and top >= 1.0, f"the whole scale of a score: {bottom:.2f} to {top:.2f}"
        renderer = axes.figure.canvas.get_renderer()
        legend = axes.get_legend().get_window_extent(renderer)
        for line in axes.get_lines():
            for x, y in zip(*line.get_data()):
                if line.get_marker() not in (None, "None", ""):
                    px, py = axes.transData.transform((x, y))
                    assert not legend.contains(px, py), f"the legend hides ({x}, {y}) of {line.get_label()}"
