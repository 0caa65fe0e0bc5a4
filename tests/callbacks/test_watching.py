"""EarlyStoppingCallback and SaveBestModelCallback inside real training runs."""

import csv
import re
import warnings
from contextlib import contextmanager

import pytest
import torch

from pytorch_accelerated.callbacks import EarlyStoppingCallback, SaveBestModelCallback, TrainerCallback
from pytorch_accelerated.trainer import Trainer, safe_torch_load
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model, run_tiny_training


class ScriptedMetric(TrainerCallback):
    """Records a scripted value of ``name`` at each eval epoch end, like a metrics callback would."""

    def __init__(self, name, values):
        self.name, self.values = name, list(values)

    def on_eval_epoch_end(self, trainer, **kwargs):
        trainer.run_history.update_metric(self.name, self.values[trainer.run_history.current_epoch - 1])


class DeclaredScriptedMetric(ScriptedMetric):
    """A :class:`ScriptedMetric` that declares the name it records."""

    def recorded_metric_names(self, trainer):
        return [self.name]


class UpdatesAtWarnings(TrainerCallback):
    """Within :meth:`watching`, notes each warning with the number of updates its trainer had done then."""

    def __init__(self):
        self.trainer, self.warnings = None, []

    def on_init_end(self, trainer, **kwargs):
        self.trainer = trainer

    @contextmanager
    def watching(self):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *args, **kwargs: self.warnings.append(
                (str(message), self.trainer.completed_update_steps)
            )
            yield

    def about(self, metric):
        """The (message, updates done) of the warnings about ``metric`` being watched."""
        return [(message, updates) for message, updates in self.warnings if f"watches {metric!r}" in message]


@pytest.mark.parametrize(
    "values, greater_is_better, patience, threshold, epochs_run, stops",
    [
        ([1.0, 0.9, 0.85, 0.849, 0.848, 0.5], False, 2, 0.01, 5, True),  # stalls after epoch 3
        ([1.0, 0.9, 0.85, 0.849, 0.7, 0.69, 0.689], False, 2, 0.01, 7, False),  # recovers in time
        ([0.1, 0.2, 0.2, 0.2, 0.9], True, 1, 0.0, 3, True),
        ([0.5, 0.5, 0.5, 0.5], False, 3, 0.0, 4, True),  # patience runs out on the last epoch
        ([0.5, 0.5, 0.5], False, 3, 0.0, 3, False),
    ],
)
def test_early_stopping_stops_after_patience_epochs_without_improvement(
    values, greater_is_better, patience, threshold, epochs_run, stops
):
    stopping = EarlyStoppingCallback(
        early_stopping_patience=patience,
        early_stopping_threshold=threshold,
        watch_metric="eval_score",
        greater_is_better=greater_is_better,
    )
    # the stopping callback comes first: it must still read this epoch's value
    result = run_tiny_training(
        callbacks=[stopping, ScriptedMetric("eval_score", values)], num_epochs=len(values)
    )
    assert result.events.count("on_training_run_epoch_end") == epochs_run
    assert ("on_stop_training_error" in result.events) == stops


def test_early_stopping_on_a_missing_metric_names_it():
    with pytest.raises(
        ValueError, match="EarlyStoppingCallback watches 'eval_accuracy', which this run has not recorded"
    ):
        run_tiny_training(callbacks=[EarlyStoppingCallback(watch_metric="eval_accuracy")], num_epochs=1)


@pytest.mark.parametrize(
    "callback",
    [EarlyStoppingCallback(), SaveBestModelCallback(watch_metric="eval_accuracy", greater_is_better=True)],
    ids=["early-stopping", "save-best"],
)
def test_watching_an_eval_metric_without_an_eval_dataset_fails_at_start(callback, tmp_path):
    """An eval metric watched in a run without eval dataset is an error at run start."""
    callback.save_path = tmp_path / "best.pt"  # SaveBestModelCallback only: where it would save
    name = type(callback).__name__
    with pytest.raises(
        ValueError, match=f"{name} watches 'eval_.*', an evaluation metric, but this run has no eval_dataset"
    ):
        run_tiny_training(callbacks=[callback], with_eval=False, num_epochs=1)


def test_the_run_start_check_comes_before_any_training_step():
    from pytorch_accelerated.trainer.testing import EventRecorder

    recorder = EventRecorder()
    model = make_tiny_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[recorder, EarlyStoppingCallback()],
    )
    with pytest.raises(ValueError, match="no eval_dataset"):
        trainer.train(make_tiny_dataset(16), num_epochs=1)
    assert "on_training_run_start" in recorder.events
    assert "on_train_step_start" not in recorder.events


def test_an_unrecorded_train_metric_names_the_recorded_ones_at_epoch_end():
    """A training metric never recorded names the recorded ones at the first epoch end."""
    with pytest.raises(
        ValueError,
        match=(
            r"watches 'train_accuracy', which this run has not recorded; recorded metrics:"
            r" \['train_loss_epoch'\]"
        ),
    ):
        run_tiny_training(
            callbacks=[EarlyStoppingCallback(watch_metric="train_accuracy")], with_eval=False, num_epochs=1
        )


@pytest.mark.parametrize(
    "make_watcher",
    [
        lambda path: EarlyStoppingCallback(watch_metric="eval_acc"),
        lambda path: SaveBestModelCallback(path, watch_metric="eval_acc"),
    ],
    ids=["early-stopping", "save-best"],
)
def test_a_watched_metric_nobody_records_suggests_the_name_closest_to_it(tmp_path, make_watcher):
    metrics = ScriptedMetric("eval_accuracy", [0.5])
    expected = r"watches 'eval_acc', which this run has not recorded; .*Did you mean 'eval_accuracy'\?"
    with pytest.raises(ValueError, match=expected):
        run_tiny_training(callbacks=[make_watcher(tmp_path / "best.pt"), metrics], num_epochs=1)


WATCHERS = [
    lambda path, metric: EarlyStoppingCallback(watch_metric=metric),
    lambda path, metric: SaveBestModelCallback(path, watch_metric=metric),
]


@pytest.mark.parametrize("make_watcher", WATCHERS, ids=["early-stopping", "save-best"])
def test_a_metric_nobody_declares_is_warned_about_before_the_first_update(tmp_path, make_watcher):
    at_warnings = UpdatesAtWarnings()
    metrics = DeclaredScriptedMetric("eval_accuracy", [0.5])
    callbacks = [at_warnings, make_watcher(tmp_path / "best.pt", "eval_acc"), metrics]
    not_recorded = "watches 'eval_acc', which this run has not recorded"  # the definite check, at epoch end
    with at_warnings.watching(), pytest.raises(ValueError, match=not_recorded):
        run_tiny_training(callbacks=callbacks, num_epochs=1)
    warned = at_warnings.about("eval_acc")
    assert len(warned) == 1, f"one warning about 'eval_acc' expected, got {at_warnings.warnings}"
    message, updates = warned[0]
    assert updates == 0, f"the warning came after {updates} updates, not before the first: {message}"
    assert "Did you mean 'eval_accuracy'?" in message, message
    declared = "['eval_accuracy', 'eval_loss_epoch', 'train_loss_epoch']"
    assert declared in message, f"names the declared metrics: {message}"
    assert "fails there" in message and "ignore this warning" in message, message


def test_a_metric_recorded_undeclared_is_warned_about_once_then_works():
    at_warnings = UpdatesAtWarnings()
    stopping = EarlyStoppingCallback(early_stopping_patience=5, watch_metric="eval_score")
    scores = ScriptedMetric("eval_score", [0.5, 0.4])  # records it without declaring it
    with at_warnings.watching():
        result = run_tiny_training(callbacks=[at_warnings, stopping, scores], num_epochs=2)
        result.trainer.train(make_tiny_dataset(64), num_epochs=2, eval_dataset=make_tiny_dataset(32, seed=1))
    assert result.events.count("on_training_run_epoch_end") == 4, "both runs trained every epoch"
    assert stopping.watcher.best == 0.4
    updates_at_warnings = [updates for _, updates in at_warnings.about("eval_score")]
    assert updates_at_warnings == [0], "warned once, before any update"


@pytest.mark.parametrize(
    "metric, with_eval",
    [
        ("eval_loss_epoch", True),
        ("train_loss_epoch", False),
        ("eval_score", True),
    ],
)
@pytest.mark.parametrize("make_watcher", WATCHERS, ids=["early-stopping", "save-best"])
def test_a_metric_the_core_or_a_callback_declares_is_not_warned_about(
    tmp_path, make_watcher, metric, with_eval
):
    at_warnings = UpdatesAtWarnings()
    scores = DeclaredScriptedMetric("eval_score", [0.5, 0.4])
    callbacks = [at_warnings, make_watcher(tmp_path / "best.pt", metric), scores]
    with at_warnings.watching():
        run_tiny_training(callbacks=callbacks, num_epochs=2, with_eval=with_eval)
    assert at_warnings.about(metric) == []


def test_a_metric_scheduler_monitoring_a_metric_nobody_declares_warns_too():
    from pytorch_accelerated.callbacks import MetricSchedulerCallback

    at_warnings = UpdatesAtWarnings()
    scheduler = MetricSchedulerCallback(torch.optim.lr_scheduler.ReduceLROnPlateau, monitor="eval_los")
    with at_warnings.watching(), pytest.raises(KeyError):
        run_tiny_training(callbacks=[at_warnings, scheduler], num_epochs=1)
    suggests = "Did you mean 'eval_loss_epoch'?"
    warned = [(updates, suggests in message) for message, updates in at_warnings.about("eval_los")]
    assert warned == [(0, True)], at_warnings.warnings


def _recording_callbacks(tmp_path):
    from pytorch_accelerated import callbacks as c

    return [
        c.LearningRateMonitorCallback(),
        c.ThroughputMonitorCallback(log_every_n_steps=3),
        c.GradientNormCallback(log_every_n_steps=2),
        c.ModelSummaryCallback(print_summary=False),
        c.ModelEmaCallback(save_path=None),
        c.StepBasedEvaluationCallback(eval_every_n_steps=5),
        c.CSVLoggerCallback(tmp_path / "m.csv", log_every_n_steps=2),
    ]


def _logger_alone(tmp_path):
    from pytorch_accelerated.callbacks import CSVLoggerCallback

    return [CSVLoggerCallback(tmp_path / "m.csv", log_every_n_steps=2)]  # it records lr and train_loss_step


def _clipping_norms(tmp_path):
    from pytorch_accelerated.callbacks import GradientNormCallback

    return [GradientNormCallback(log_every_n_steps=1)]


@pytest.mark.parametrize("make_callbacks", [_recording_callbacks, _logger_alone, _clipping_norms])
def test_recording_callbacks_declare_every_name_they_record(tmp_path, make_callbacks):
    """Every name the recording callbacks record is declared and recorded."""
    from pytorch_accelerated.callbacks import GradientClippingEventMixin
    from pytorch_accelerated.callbacks.watching import warn_if_undeclared

    clipping = {"gradient_clip_norm": 1.0} if make_callbacks is _clipping_norms else {}
    trainer_class = type("ClippingTrainer", (GradientClippingEventMixin, Trainer), {})
    result = run_tiny_training(callbacks=make_callbacks(tmp_path), trainer_class=trainer_class, **clipping)
    trainer, recorded = result.trainer, set(result.run_history.get_metric_names())
    with warnings.catch_warnings(record=True):
        undeclared = [name for name in sorted(recorded) if warn_if_undeclared(name, trainer, "test")]
    declared = trainer.recorded_metric_names()
    assert not undeclared, f"recorded but not declared: {undeclared}; declared: {declared}"
    never_recorded = [name for name in declared if "*" not in name and name not in recorded]
    assert not never_recorded, f"declared but never recorded: {never_recorded}"


def test_early_stopping_rejects_bad_arguments():
    with pytest.raises(ValueError, match="patience"):
        EarlyStoppingCallback(early_stopping_patience=0)
    with pytest.raises(ValueError, match="threshold"):
        EarlyStoppingCallback(early_stopping_threshold=-1)


def test_early_stopping_state_round_trip():
    first = EarlyStoppingCallback(early_stopping_patience=3)
    run_tiny_training(callbacks=[first, ScriptedMetric("eval_loss_epoch", [1.0, 1.0])], num_epochs=2)
    second = EarlyStoppingCallback(early_stopping_patience=3)
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict() and second.epochs_without_improvement == 1


def test_save_best_model_keeps_the_best_epoch_and_loads_it_at_the_end(tmp_path):
    weights_by_epoch = {}

    class RecordWeights(TrainerCallback):
        def on_training_run_epoch_end(self, trainer, **kwargs):
            epoch = trainer.run_history.current_epoch
            weights_by_epoch[epoch] = [p.detach().clone() for p in trainer.get_model().parameters()]

    path = tmp_path / "best.pt"
    values = [0.5, 0.7, 0.6, 0.65]  # best at epoch 2
    result = run_tiny_training(
        callbacks=[
            RecordWeights(),
            SaveBestModelCallback(path, watch_metric="eval_score", greater_is_better=True),
            ScriptedMetric("eval_score", values),
        ],
        num_epochs=4,
    )
    # the run's own folder: see test_run_folders.py
    saved = safe_torch_load(tmp_path / "version_0" / "best.pt")
    assert saved["epoch"] == 2 and saved["eval_score"] == 0.7
    for loaded, best in zip(result.trainer.get_model().parameters(), weights_by_epoch[2]):
        torch.testing.assert_close(loaded.detach(), best)


def test_save_best_model_without_loading_leaves_the_final_weights(tmp_path):
    path = tmp_path / "best.pt"
    result = run_tiny_training(
        callbacks=[
            SaveBestModelCallback(
                path, watch_metric="eval_score", greater_is_better=False, load_saved_checkpoint=False
            ),
            ScriptedMetric("eval_score", [0.1, 0.5, 0.9]),
        ],
        num_epochs=3,
    )
    path = tmp_path / "version_0" / "best.pt"
    assert safe_torch_load(path)["epoch"] == 1
    saved = safe_torch_load(path)["model_state_dict"]
    final = result.trainer.get_model().state_dict()
    assert not all(torch.equal(saved[name], final[name]) for name in final)


def test_a_failed_save_keeps_the_previous_best(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"

    class FailSecondSave(TrainerCallback):
        def on_training_run_epoch_end(self, trainer, **kwargs):
            if trainer.run_history.current_epoch == 2:
                monkeypatch.setattr(
                    torch, "save", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("disk full"))
                )

    with pytest.raises(OSError, match="disk full"):
        run_tiny_training(
            callbacks=[
                FailSecondSave(),
                SaveBestModelCallback(path),
                ScriptedMetric("eval_loss_epoch", [1.0, 0.5]),
            ],
            num_epochs=2,
        )
    monkeypatch.undo()
    assert safe_torch_load(tmp_path / "version_0" / "best.pt")["epoch"] == 1


def test_save_best_model_works_with_the_default_loss_metric(tmp_path):
    path = tmp_path / "best.pt"
    model = make_tiny_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[SaveBestModelCallback(path)],
    )
    trainer.train(make_tiny_dataset(32), num_epochs=3, eval_dataset=make_tiny_dataset(16, seed=1))
    losses = trainer.run_history.get_metric_values("eval_loss_epoch")
    assert safe_torch_load(tmp_path / "version_0" / "best.pt")["epoch"] == losses.index(min(losses)) + 1


def test_watchers_on_two_processes_stop_together_and_save_once(tmp_path):
    from ..launching import run_scenario_on_two_processes
    from . import watchers_distributed_scenario as scenario

    results, output = run_scenario_on_two_processes(scenario.__file__, tmp_path)
    out = tmp_path / "out"  # where the scenario wrote
    # process 0's score stalls after epoch 2; with patience 2 both processes stop after epoch 4
    assert [r["epochs_run"] for r in results] == [4, 4]
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["ema"] == results[1]["ema"]
    assert (
        results[0]["ema_eval_loss"] == results[1]["ema_eval_loss"] and len(results[0]["ema_eval_loss"]) == 4
    )
    # both processes chose the same fresh folder beside the earlier run's, which is left as it was
    assert [r["save_paths"] for r in results] == [
        [str(out / "version_1" / "best.pt"), str(out / "version_1" / "ema.pt")]
    ] * 2
    assert {name: (out / name).read_text() for name in scenario.EARLIER_RUN} == scenario.EARLIER_RUN
    assert sorted(p.name for p in (out / "version_1").iterdir() if p.suffix == ".pt") == ["best.pt", "ema.pt"]
    assert not [p for p in (out / "version_1").iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------- 0.1.61's arguments


def _second_run(callback, first_epochs=3):
    result = run_tiny_training(callbacks=[callback], num_epochs=first_epochs)
    best_after_first = callback.watcher.best
    result.trainer.train(make_tiny_dataset(64), num_epochs=1, eval_dataset=make_tiny_dataset(32, seed=1))
    return best_after_first, result.trainer


@pytest.mark.parametrize("reset_on_train", [True, False])
def test_reset_on_train_decides_whether_a_later_train_keeps_the_best(tmp_path, reset_on_train):
    """Saving the best model, ``reset_on_train`` decides whether a later train call keeps the best."""
    callback = SaveBestModelCallback(
        tmp_path / "best.pt", reset_on_train=reset_on_train, load_saved_checkpoint=False
    )
    best_after_first, trainer = _second_run(callback)
    last = trainer.run_history.get_latest_metric("eval_loss_epoch")
    if reset_on_train:
        assert callback.watcher.best == last  # the second call's first epoch is its own best
    else:
        assert callback.watcher.best == min(best_after_first, last)


@pytest.mark.parametrize("reset_on_train", [True, False])
def test_early_stopping_reset_on_train_carries_the_patience_used_up(reset_on_train):
    callback = EarlyStoppingCallback(
        early_stopping_patience=100, early_stopping_threshold=10.0, reset_on_train=reset_on_train
    )
    _second_run(callback)  # a threshold no epoch beats: every epoch but a run's first is without improvement
    assert callback.epochs_without_improvement == (0 if reset_on_train else 3)


@pytest.mark.parametrize("save_scheduler", [True, False])
def test_save_best_model_saves_the_scheduler_state_unless_told_not_to(tmp_path, save_scheduler):
    callback = SaveBestModelCallback(tmp_path / "best.pt", save_scheduler=save_scheduler)
    run_tiny_training(
        callbacks=[callback],
        num_epochs=1,
        create_scheduler_fn=lambda optimizer: torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=1, gamma=0.5
        ),
    )
    assert ("scheduler_state_dict" in safe_torch_load(callback.save_path)) == save_scheduler


# ---------------------------------------------------------------------------------------- issue 27


def test_an_improvement_of_exactly_the_threshold_counts_despite_float32():
    """An improvement of exactly the threshold counts though float32 makes it 0.0099999."""
    scores = [0.904, 0.914, 0.9145]  # as float32 values become Python floats: 0.914 - 0.904 = 0.0099999...
    stopping = EarlyStoppingCallback(
        early_stopping_threshold=0.01, watch_metric="eval_score", greater_is_better=True
    )
    metric = ScriptedMetric(
        "eval_score", [torch.tensor(score, dtype=torch.float32).item() for score in scores]
    )
    result = run_tiny_training(callbacks=[stopping, metric], num_epochs=3)
    assert result.events.count("on_training_run_epoch_end") == 3, "0.904 -> 0.914 improves by the threshold"
    assert stopping.watcher.best == pytest.approx(0.914), f"best {stopping.watcher.best}: 0.914 was reached"
    assert stopping.epochs_without_improvement == 1  # 0.9145 is not 0.01 better


def test_save_top_k_keeps_the_k_best_checkpoints_with_lightnings_names(tmp_path):
    """``save_top_k`` keeps the k best checkpoints named as Lightning names them."""
    values = [0.5, 0.7, 0.6, 0.65, 0.4]  # the 3 best: epochs 2, 4, 3
    callback = SaveBestModelCallback(
        tmp_path / "best.pt", watch_metric="eval_score", greater_is_better=True, save_top_k=3
    )
    result = run_tiny_training(callbacks=[callback, ScriptedMetric("eval_score", values)], num_epochs=5)
    folder = tmp_path / "version_0"
    kept = {path.name: value for path, value in callback.best_k_checkpoints.items()}
    assert kept == {
        "best-epoch=2-step=16.pt": 0.7,
        "best-epoch=4-step=32.pt": 0.65,
        "best-epoch=3-step=24.pt": 0.6,
    }
    assert sorted(path.name for path in folder.iterdir()) == sorted(kept), (
        "epoch 1's file deleted when pushed out"
    )
    assert callback.best_checkpoint_path == folder / "best-epoch=2-step=16.pt"
    best = safe_torch_load(callback.best_checkpoint_path)
    assert best["epoch"] == 2 and best["eval_score"] == 0.7
    loaded = result.trainer.get_model().state_dict()
    assert all(torch.equal(loaded[name], best["model_state_dict"][name]) for name in loaded), (
        "the best loaded back"
    )


def test_save_top_k_resumes_with_the_checkpoints_it_kept(tmp_path):
    from pytorch_accelerated.trainer.testing import check_exact_resume

    values = [0.5, 0.7, 0.6, 0.65]
    check_exact_resume(
        lambda: [
            SaveBestModelCallback(
                tmp_path / "best.pt",
                watch_metric="eval_score",
                greater_is_better=True,
                save_top_k=2,
                if_exists="overwrite",
            ),
            ScriptedMetric("eval_score", values),
        ],
        tmp_path / "states",
        num_epochs=4,
    )


SAFETENSORS = "model.safetensors"


def test_the_best_weights_are_exported_as_model_safetensors(tmp_path):
    from safetensors.torch import load_file

    callback = SaveBestModelCallback(tmp_path / "best.pt", watch_metric="eval_score", export_safetensors=True)
    result = run_tiny_training(
        callbacks=[callback, ScriptedMetric("eval_score", [0.5, 0.3, 0.4])], num_epochs=3
    )
    assert callback.safetensors_path == tmp_path / "version_0" / "model.safetensors"
    exported = load_file(callback.safetensors_path)
    best = safe_torch_load(callback.best_checkpoint_path)["model_state_dict"]
    assert exported.keys() == best.keys() and all(torch.equal(exported[name], best[name]) for name in best)
    assert sorted(path.name for path in callback.safetensors_path.parent.iterdir()) == [
        "best.pt",
        SAFETENSORS,
    ]
    model = make_tiny_model(seed=1)
    from safetensors.torch import load_model

    load_model(model, callback.safetensors_path)  # what the HF ecosystem does with it
    trained = result.trainer.get_model().state_dict()
    assert all(torch.equal(value, trained[name]) for name, value in model.state_dict().items())


def test_a_missing_safetensors_is_named_with_its_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'trainer-callbacks[safetensors]'")):
        SaveBestModelCallback(export_safetensors=True)
    with pytest.raises(ValueError, match="save_top_k must be >= 1, or -1"):
        SaveBestModelCallback(save_top_k=0)


def test_an_evaluate_after_loading_the_best_is_logged_at_the_best_epoch(tmp_path):
    """An evaluate after the best is loaded back is logged at the best epoch."""
    from pytorch_accelerated.callbacks import CSVLoggerCallback

    logger = CSVLoggerCallback(tmp_path / "m.csv")
    best = SaveBestModelCallback(tmp_path / "best.pt", watch_metric="eval_score", greater_is_better=True)
    scores = ScriptedMetric("eval_score", [0.5, 0.9, 0.6, 0.0])  # the last: the evaluate() after training
    result = run_tiny_training(callbacks=[best, scores, logger], num_epochs=3)
    with result.trainer.run_history.metric_prefix("test_"):
        result.trainer.evaluate(make_tiny_dataset(16, seed=2))
    rows = list(csv.DictReader(logger.path.open()))
    tested = [(row["epoch"], row["step"]) for row in rows if row["test_eval_loss"]]
    assert tested == [("2", "16")], f"the test score belongs to epoch 2's weights, loaded back: {tested}"
    assert len(rows) == 3, "on the row of the epoch it scored"
