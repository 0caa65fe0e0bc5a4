"""MetricsCallback, record_metrics and default_metric_inputs in real tiny training runs."""

import warnings
from contextlib import contextmanager

import pytest
import torch
import torchmetrics
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.wrappers import ClasswiseWrapper

from pytorch_accelerated.metrics import MetricsCallback, default_metric_inputs, record_metrics
from pytorch_accelerated.trainer import InMemoryRunHistory, StopTrainingError, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model, run_tiny_training

NUM_EPOCHS = 3
UNSHUFFLED = {"train_dataloader_kwargs": {"shuffle": False}}
# unshuffled, with an eval accuracy that rises for four epochs, then stays
IMPROVING = {"num_samples": 200, "lr": 0.05, **UNSHUFFLED}


def accuracy(**kwargs):
    return torchmetrics.Accuracy(task="multiclass", num_classes=3, **kwargs)


class LabelAgreement(Metric):
    """The fraction of predicted labels equal to the targets: a metric that needs labels, not scores."""

    def __init__(self):
        super().__init__()
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds, target):
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        self.correct += (preds == target).sum()
        self.total += target.numel()

    def compute(self):
        return self.correct.float() / self.total


class EvaluateAgain(TrainerCallback):
    """Evaluates once more, with a prefix, at each evaluation epoch's end (as an EMA callback does)."""

    def __init__(self):
        self.inside = False

    def on_eval_epoch_end(self, trainer, **kwargs):
        if not self.inside:
            self.inside = True
            try:
                with trainer.run_history.metric_prefix("again_"):
                    trainer.evaluate()
            finally:
                self.inside = False


class ReadAtEpochEnd(TrainerCallback):
    """Reads the latest value of a metric at the end of each epoch."""

    def __init__(self, name):
        self.name, self.seen = name, []

    def on_training_run_epoch_end(self, trainer, **kwargs):
        self.seen.append(trainer.run_history.get_latest_metric(self.name))


def first_epoch_without_improvement(values, threshold):
    """The first epoch (from 1) whose value does not beat the best before it by ``threshold`` or more,
    to float32's precision (the watchers' rule: 0.86 - 0.85 is 0.0099999 in float32 and counts)."""
    from pytorch_accelerated.callbacks.watching import MetricWatcher

    watcher = MetricWatcher("eval_accuracy", greater_is_better=True, threshold=threshold)
    for epoch in range(2, len(values) + 1):
        if not watcher.improves_on(values[epoch - 1], max(values[: epoch - 1])):
            return epoch
    return None


def eval_accuracy_of(trainer) -> float:
    """Accuracy over the tiny run's whole eval set, computed from predict()."""
    inputs, targets = make_tiny_dataset(32, seed=1).tensors
    return (trainer.predict(inputs).argmax(dim=1) == targets).float().mean().item()


# ---------------------------------------------------------------------------------------- recording


def test_values_are_recorded_once_per_epoch_as_plain_numbers():
    metrics = MetricsCallback({"accuracy": accuracy(), "per_class": accuracy(average=None)})
    result = run_tiny_training(callbacks=[metrics], num_epochs=NUM_EPOCHS)
    assert [type(value) for value in result.metrics["eval_accuracy"]] == [float] * NUM_EPOCHS
    per_class = result.metrics["eval_per_class"]
    assert len(per_class) == NUM_EPOCHS
    assert all(isinstance(value, torch.Tensor) and value.shape == (3,) for value in per_class)
    assert all(value.device.type == "cpu" for value in per_class)
    assert not any(name.startswith("train_") and name != "train_loss_epoch" for name in result.metrics)
    assert result.metrics["eval_accuracy"][-1] == pytest.approx(eval_accuracy_of(result.trainer), abs=1e-6)


def test_train_and_eval_metrics_are_recorded_together():
    metrics = MetricsCallback({"accuracy": accuracy()}, on_train=True)
    result = run_tiny_training(callbacks=[metrics], num_epochs=NUM_EPOCHS)
    assert len(result.metrics["train_accuracy"]) == len(result.metrics["eval_accuracy"]) == NUM_EPOCHS
    assert result.metrics["train_accuracy"] != result.metrics["eval_accuracy"]


def test_a_metric_collection_works_like_a_dict_and_keeps_its_prefix():
    from_dict = run_tiny_training(callbacks=[MetricsCallback({"accuracy": accuracy()})], **UNSHUFFLED)
    collection = MetricCollection({"accuracy": accuracy()}, prefix="top1_")
    from_collection = run_tiny_training(callbacks=[MetricsCallback(collection)], **UNSHUFFLED)
    assert from_collection.metrics["eval_top1_accuracy"] == from_dict.metrics["eval_accuracy"]


def test_evaluate_returns_the_metrics():
    metrics = MetricsCallback({"accuracy": accuracy()})
    result = run_tiny_training(callbacks=[metrics], num_epochs=1)
    values = result.trainer.evaluate()
    assert values["eval_accuracy"] == pytest.approx(eval_accuracy_of(result.trainer), abs=1e-6)


def test_record_metrics_flattens_dict_results_and_resets():
    history = InMemoryRunHistory()
    metric = ClasswiseWrapper(MulticlassAccuracy(3, average=None), labels=["a", "b", "c"])
    metric.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    values = record_metrics(history, {"per_class": metric}, prefix="eval_")
    expected = {"eval_per_class_multiclassaccuracy_a": 1.0, "eval_per_class_multiclassaccuracy_b": 0.5}
    assert values == {**expected, "eval_per_class_multiclassaccuracy_c": 1.0}
    assert {name: history.get_latest_metric(name) for name in history.get_metric_names()} == values
    assert not metric.metric.update_called


# ---------------------------------------------------------------------------------------- callback order


@pytest.mark.parametrize("reader_first", [True, False])
def test_a_consumer_reads_this_epochs_value_whatever_its_place(reader_first):
    reader, metrics = ReadAtEpochEnd("eval_accuracy"), MetricsCallback({"accuracy": accuracy()})
    callbacks = [reader, metrics] if reader_first else [metrics, reader]
    result = run_tiny_training(callbacks=callbacks, num_epochs=NUM_EPOCHS, **IMPROVING)
    assert reader.seen == result.metrics["eval_accuracy"]
    assert len(set(reader.seen)) == NUM_EPOCHS  # each epoch's value differs from the others


def test_early_stopping_placed_first_watches_this_epochs_accuracy():
    from pytorch_accelerated.callbacks import EarlyStoppingCallback

    stopping = EarlyStoppingCallback(
        early_stopping_patience=1,
        early_stopping_threshold=0.01,
        watch_metric="eval_accuracy",
        greater_is_better=True,
    )
    num_epochs = 10
    metrics = MetricsCallback({"accuracy": accuracy()})
    result = run_tiny_training(callbacks=[stopping, metrics], num_epochs=num_epochs, **IMPROVING)
    values = result.metrics["eval_accuracy"]
    stop_epoch = first_epoch_without_improvement(values, threshold=0.01)
    assert stop_epoch is not None and stop_epoch > 2  # the accuracy improved for a while first
    assert "on_stop_training_error" in result.events
    assert len(values) == result.events.count("on_training_run_epoch_end") == stop_epoch


@pytest.mark.parametrize("evaluate_again_first", [True, False])
def test_an_evaluation_inside_an_evaluation_epoch_end_gets_its_own_metrics(evaluate_again_first):
    again, metrics = EvaluateAgain(), MetricsCallback({"accuracy": accuracy()})
    callbacks = [again, metrics] if evaluate_again_first else [metrics, again]
    result = run_tiny_training(callbacks=callbacks, num_epochs=NUM_EPOCHS)
    assert len(result.metrics["eval_accuracy"]) == NUM_EPOCHS
    assert result.metrics["again_eval_accuracy"] == result.metrics["eval_accuracy"]


def test_an_evaluation_stopped_midway_leaves_nothing_behind():
    class StopInFirstEval(TrainerCallback):
        def on_eval_step_end(self, trainer, **kwargs):
            raise StopTrainingError("stop during the first evaluation")

    stopper = StopInFirstEval()
    result = run_tiny_training(callbacks=[MetricsCallback({"accuracy": accuracy()}), stopper], num_epochs=2)
    assert "eval_accuracy" not in result.metrics
    result.trainer.callback_handler.remove_callback(stopper)
    assert result.trainer.evaluate()["eval_accuracy"] == pytest.approx(
        eval_accuracy_of(result.trainer), abs=1e-6
    )


# ---------------------------------------------------------------------------------------- the subclass
# pattern


class PlainTorchmetricsTrainer(Trainer):
    """Metrics in the loop with plain torchmetrics, as the README shows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=3).to(self.device)

    def calculate_eval_batch_loss(self, batch):
        batch_output = super().calculate_eval_batch_loss(batch)
        self.accuracy.update(batch_output["model_outputs"], batch[1])
        return batch_output

    def eval_epoch_end(self):
        self.run_history.update_metric("eval_accuracy", self.accuracy.compute().item())
        self.accuracy.reset()


class RecordMetricsTrainer(Trainer):
    """Metrics in the loop with a MetricCollection and record_metrics, as the README shows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_metrics = MetricCollection({"accuracy": accuracy(), "f1": accuracy(average="macro")}).to(
            self.device
        )

    def calculate_eval_batch_loss(self, batch):
        batch_output = super().calculate_eval_batch_loss(batch)
        self.eval_metrics.update(batch_output["model_outputs"], batch[1])
        return batch_output

    def eval_epoch_end(self):
        record_metrics(self.run_history, self.eval_metrics, prefix="eval_")


@pytest.mark.parametrize("trainer_class", [PlainTorchmetricsTrainer, RecordMetricsTrainer])
def test_a_trainer_subclass_records_the_same_values_as_the_callback(trainer_class):
    expected = run_tiny_training(callbacks=[MetricsCallback({"accuracy": accuracy()})], **UNSHUFFLED)
    result = run_tiny_training(trainer_class=trainer_class, **UNSHUFFLED)
    assert result.metrics["eval_accuracy"] == pytest.approx(expected.metrics["eval_accuracy"], abs=1e-7)
    assert all(type(value) is float for value in result.metrics["eval_accuracy"])


# ---------------------------------------------------------------------------------------- inputs


def test_default_inputs_argmax_scores_only_for_label_metrics():
    """Default inputs argmax class scores only for metrics that need labels."""
    scores, targets = torch.randn(8, 3), torch.randint(0, 3, (8,))
    batch, batch_output = (torch.zeros(8, 4), targets), {"model_outputs": scores}
    preds, target = default_metric_inputs(batch, batch_output, MulticlassAccuracy(3))
    assert preds is scores and target is targets
    preds, _ = default_metric_inputs(batch, batch_output, LabelAgreement())
    assert torch.equal(preds, scores.argmax(dim=1))


def test_a_metric_that_needs_labels_gets_them_in_a_run():
    metrics = MetricsCallback({"agreement": LabelAgreement(), "accuracy": accuracy()})
    result = run_tiny_training(callbacks=[metrics])
    assert result.metrics["eval_agreement"] == pytest.approx(result.metrics["eval_accuracy"], abs=1e-7)


def test_default_inputs_squeeze_single_outputs_and_read_dict_batches():
    outputs, targets = torch.randn(8, 1), torch.randn(8)
    preds, _ = default_metric_inputs(
        (None, targets), {"model_outputs": outputs}, torchmetrics.MeanSquaredError()
    )
    assert preds.shape == (8,)
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    batch = {"input_ids": torch.zeros(8, 5), "labels": labels}
    preds, target = default_metric_inputs(
        batch, {"model_outputs": {"logits": logits, "loss": 0.0}}, accuracy()
    )
    assert preds is logits and target is labels


@pytest.mark.parametrize(
    "batch, model_outputs",
    [
        (torch.zeros(8, 4), torch.zeros(8, 3)),  # no targets in the batch
        ((torch.zeros(8, 4), torch.zeros(8)), {"hidden_states": torch.zeros(8, 3)}),  # no logits
    ],
)
def test_default_inputs_explain_what_they_cannot_find(batch, model_outputs):
    with pytest.raises(ValueError, match="inputs_fn"):
        default_metric_inputs(batch, {"model_outputs": model_outputs}, accuracy())


def test_unfitting_inputs_raise_an_error_naming_the_metric_and_inputs_fn():
    """Inputs that do not fit raise an error naming the metric and ``inputs_fn``."""
    metrics = MetricsCallback({"multilabel_f1": torchmetrics.F1Score(task="multilabel", num_labels=3)})
    expected = r"(?s)'multilabel_f1' \(MultilabelF1Score\).*float32\[8, 3\], int64\[8\].*inputs_fn"
    with pytest.raises(ValueError, match=expected):
        run_tiny_training(callbacks=[metrics], num_epochs=1)


class CountUpdates(TrainerCallback):
    updates = 0

    def on_optimizer_step_end(self, trainer, **kwargs):
        self.updates += 1


@pytest.mark.parametrize("on_train", [False, True], ids=["eval-metric", "train-metric"])
@pytest.mark.parametrize(
    ("metric", "num_classes"),
    [
        (torchmetrics.Accuracy(task="multiclass", num_classes=2), 2),
        # torchmetrics says nothing without validate_args: a wrong value, or an IndexError at compute
        (torchmetrics.AUROC(task="multiclass", num_classes=4, validate_args=False), 4),
    ],
    ids=["accuracy", "auroc-unvalidated"],
)
def test_a_metric_of_the_wrong_class_count_fails_before_the_first_update(metric, num_classes, on_train):
    """A metric of the wrong number of classes fails before the first update."""
    updates = CountUpdates()
    expected = rf"'m' \(\w+\) was created with num_classes={num_classes}, but the model gives 3 class scores"
    with pytest.raises(ValueError, match=rf"{expected}.*create it with num_classes=3"):
        callbacks = [MetricsCallback({"m": metric}, on_train=on_train), updates]
        run_tiny_training(callbacks=callbacks, num_epochs=1)
    assert updates.updates == 0, "failed only after the first epoch's updates"


def test_evaluate_alone_names_the_wrong_class_count_at_its_first_step():
    """Evaluate alone names the wrong number of classes at its first step."""
    trainer = run_tiny_training(num_epochs=1).trainer
    metric = torchmetrics.Accuracy(task="multiclass", num_classes=5)
    trainer.callback_handler.add_callback(MetricsCallback({"m": metric}))
    with pytest.raises(ValueError, match="num_classes=5, but the model gives 3 class scores"):
        trainer.evaluate()


def test_a_custom_inputs_fn_is_used():
    def predicted_labels(batch, batch_output, metric):
        return batch_output["model_outputs"].argmax(dim=1), batch[1]

    custom_metrics = MetricsCallback({"accuracy": accuracy()}, inputs_fn=predicted_labels)
    custom = run_tiny_training(callbacks=[custom_metrics], **UNSHUFFLED)
    default = run_tiny_training(callbacks=[MetricsCallback({"accuracy": accuracy()})], **UNSHUFFLED)
    assert custom.metrics["eval_accuracy"] == default.metrics["eval_accuracy"]


# ---------------------------------------------------------------------------------------- declared names


@contextmanager
def warnings_about_watched_metrics():
    """Within the block, (message, updates done then) of each warning about a watched metric, in a list."""
    updates, seen = CountUpdates(), []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: seen.append((str(message), updates.updates))
        yield updates, seen
    seen[:] = [(message, count) for message, count in seen if " watches '" in message]


def test_a_watched_metric_the_metrics_callback_declares_gets_no_warning(tmp_path):
    from pytorch_accelerated.callbacks import EarlyStoppingCallback, SaveBestModelCallback

    metrics = MetricsCallback({"accuracy": accuracy()}, on_train=True)
    stopping = EarlyStoppingCallback(5, watch_metric="eval_accuracy", greater_is_better=True)
    best = SaveBestModelCallback(tmp_path / "best.pt", watch_metric="train_accuracy", greater_is_better=True)
    with warnings_about_watched_metrics() as (updates, seen):
        run_tiny_training(callbacks=[updates, stopping, best, metrics], num_epochs=1)
    assert seen == []


def test_a_misspelled_metric_is_warned_about_before_the_first_update():
    from pytorch_accelerated.callbacks import EarlyStoppingCallback

    stopping = EarlyStoppingCallback(watch_metric="eval_acc", greater_is_better=True)
    with warnings_about_watched_metrics() as (updates, seen):
        with pytest.raises(ValueError, match="watches 'eval_acc', which this run has not recorded"):
            callbacks = [updates, stopping, MetricsCallback({"accuracy": accuracy()})]
            run_tiny_training(callbacks=callbacks, num_epochs=1)
    assert len(seen) == 1, seen
    message, updates_then = seen[0]
    assert updates_then == 0, f"warned after {updates_then} updates: {message}"
    assert "Did you mean 'eval_accuracy'?" in message, message


def test_the_metrics_callback_declares_every_name_it_records():
    """Every name the metrics callback records is declared, also for named eval sets."""
    from pytorch_accelerated.callbacks.watching import warn_if_undeclared

    per_class = ClasswiseWrapper(MulticlassAccuracy(3, average=None), labels=["a", "b", "c"])  # a dict
    metrics = MetricsCallback({"accuracy": accuracy(), "per_class": per_class}, on_train=True)
    model = make_tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=[metrics])
    evaluation = {"val": make_tiny_dataset(16, seed=1), "ood": make_tiny_dataset(16, seed=2)}
    trainer.train(make_tiny_dataset(32), num_epochs=1, eval_dataset=evaluation, per_device_batch_size=8)
    recorded = trainer.run_history.get_metric_names()
    assert "ood_eval_per_class_multiclassaccuracy_b" in recorded and "val_eval_accuracy" in recorded
    with warnings.catch_warnings(record=True):
        undeclared = [name for name in recorded if warn_if_undeclared(name, trainer, "test")]
    declared = trainer.recorded_metric_names()
    assert not undeclared, f"recorded but not declared: {undeclared}; declared: {declared}"
    never_recorded = [name for name in declared if "*" not in name and name not in recorded]
    dict_names = ["val_eval_per_class", "ood_eval_per_class", "train_per_class"]  # recorded per key instead
    assert never_recorded == dict_names, f"declared but never recorded: {never_recorded}"


# ---------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("name", ["accuracy", "top-1", "val/acc", "f1.macro", "F1_macro"])
def test_usable_metric_names(name):
    assert list(MetricsCallback({name: accuracy()}).eval_metrics) == [name]


@pytest.mark.parametrize("name", ["top 1", "", "acc!", "é", 3])
def test_unusable_metric_names_are_rejected(name):
    with pytest.raises(ValueError, match="no spaces"):
        MetricsCallback({name: accuracy()})


@pytest.mark.parametrize("metrics", [{}, {"accuracy": "not a metric"}, accuracy(), [accuracy()]])
def test_metrics_must_be_named_torchmetrics_metrics(metrics):
    with pytest.raises(TypeError, match="Metric"):
        MetricsCallback(metrics)


def test_a_metric_that_would_not_sync_is_rejected_on_several_processes():
    class PretendTwoProcesses(Trainer):
        @property
        def num_processes(self):
            return 2

    metrics = MetricsCallback({"accuracy": accuracy(sync_on_compute=False)})
    with pytest.raises(ValueError, match="sync_on_compute=False"):
        run_tiny_training(callbacks=[metrics], trainer_class=PretendTwoProcesses, num_epochs=1)


def test_training_metrics_resume_exactly_from_inside_an_epoch(tmp_path):
    from pytorch_accelerated.trainer.testing import check_exact_resume

    def callbacks():
        # AUROC without thresholds keeps every prediction: a list state
        auroc = torchmetrics.AUROC(task="multiclass", num_classes=3, thresholds=None)
        return [MetricsCallback({"accuracy": accuracy(), "auroc": auroc}, on_train=True)]

    states = check_exact_resume(callbacks, tmp_path, num_epochs=2)
    assert any("update" in state.name for state in states)
