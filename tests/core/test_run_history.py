"""The run history's interface, prefixes and round trip, and the metric names a run declares."""

import pytest

from pytorch_accelerated.trainer import InMemoryRunHistory, RunHistory, Trainer, TrainerCallback

from .helpers import make_tiny_dataset, make_trainer


def test_update_get_latest_and_values():
    history = InMemoryRunHistory()
    history.update_metric("loss", 1.0)
    history.update_metric("loss", 0.5)
    assert history.get_metric_values("loss") == [1.0, 0.5]
    assert history.get_latest_metric("loss") == 0.5
    assert history.get_metric_names() == ["loss"]
    assert history.get_metric_values("missing") == []


def test_missing_metric_names_the_known_ones():
    history = InMemoryRunHistory()
    history.update_metric("eval_loss_epoch", 1.0)
    with pytest.raises(KeyError, match="eval_loss_epoch"):
        history.get_latest_metric("eval_accuracy")


def test_epochs_count_from_one_and_reset():
    history = InMemoryRunHistory()
    assert history.current_epoch == 1
    history.increment_epoch()
    history.update_metric("x", 1)
    assert history.current_epoch == 2
    history.reset()
    assert history.current_epoch == 1 and history.get_metric_names() == []


def test_metric_prefixes_nest_and_end_with_the_block():
    history = InMemoryRunHistory()
    with history.metric_prefix("ema_"):
        history.update_metric("eval_loss_epoch", 1.0)
        with history.metric_prefix("swa_"):
            history.update_metric("eval_loss_epoch", 2.0)
    history.update_metric("eval_loss_epoch", 3.0)
    assert history.get_latest_metric("ema_eval_loss_epoch") == 1.0
    assert history.get_latest_metric("ema_swa_eval_loss_epoch") == 2.0
    assert history.get_latest_metric("eval_loss_epoch") == 3.0


def test_state_dict_round_trip():
    history = InMemoryRunHistory()
    history.update_metric("a", 1.0)
    history.increment_epoch()
    history.update_metric("a", 2.0)
    history.update_metric("b", "text")
    restored = InMemoryRunHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.state_dict() == history.state_dict()
    assert restored.current_epoch == 2


def test_stored_values_are_copies():
    history = InMemoryRunHistory()
    value = [1, 2]
    history.update_metric("list", value)
    value.append(3)
    assert history.get_latest_metric("list") == [1, 2]


# ------------------------------------------------------------------ records: each value's place


def _train(history=None, callbacks=(), num_epochs=2, **train_kwargs):
    """64 samples in batches of 8: 8 updates per epoch."""
    extra = {} if history is None else {"run_history": history}
    trainer = make_trainer(callbacks=callbacks, **extra)
    trainer.train(
        make_tiny_dataset(),
        num_epochs=num_epochs,
        eval_dataset=make_tiny_dataset(16, seed=1),
        per_device_batch_size=8,
        **train_kwargs,
    )
    return trainer


def test_every_value_of_a_run_carries_its_update_step_epoch_and_evaluation():
    trainer = _train()
    history = trainer.run_history
    train_losses = history.get_metric_records("train_loss_epoch")
    assert [(r.step, r.epoch, r.evaluation) for r in train_losses] == [(8, 1, None), (16, 2, None)]
    assert [(r.step, r.epoch, r.evaluation) for r in history.get_metric_records("eval_loss_epoch")] == [
        (8, 1, "validation"),
        (16, 2, "validation"),
    ]
    assert [r.value for r in train_losses] == history.get_metric_values("train_loss_epoch")

    trainer.evaluate(make_tiny_dataset(16, seed=2), metric_prefix="test_")
    trainer.evaluate()
    (test,) = history.get_metric_records("test_eval_loss")
    (plain,) = history.get_metric_records("eval_loss")
    assert (test.step, test.epoch, test.evaluation) == (16, 3, "test")
    assert (plain.step, plain.evaluation) == (16, "evaluate")


def test_each_step_based_evaluation_is_recorded_once_at_its_step():
    """A callback that evaluates every few steps gets one record per evaluation at its step."""

    class EvaluateEvery3(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps % 3 == 0:
                trainer.evaluate(metric_prefix="step_")

    history = _train(callbacks=[EvaluateEvery3()]).run_history
    records = history.get_metric_records("step_eval_loss")
    assert [(r.step, r.epoch, r.evaluation) for r in records] == [
        (3, 1, "step"),
        (6, 1, "step"),
        (9, 2, "step"),
        (12, 2, "step"),
        (15, 2, "step"),
    ]
    assert len(history.get_metric_values("eval_loss_epoch")) == 2  # validation kept apart


def test_listeners_get_every_new_record_and_an_explicit_step_wins():
    history = InMemoryRunHistory()
    steps = iter(range(100))
    history.bind_step_source(lambda: next(steps))
    seen = []
    history.add_listener(seen.append)
    history.update_metric("a", 1.0)
    history.update_metric("a", 2.0, step=40)
    with history.metric_prefix("x_"), history.evaluation():
        history.update_metric("b", 3.0)
    history.remove_listener(seen.append)
    history.update_metric("a", 4.0)
    assert [(r.name, r.value, r.step, r.evaluation) for r in seen] == [
        ("a", 1.0, 0, None),
        ("a", 2.0, 40, None),
        ("x_b", 3.0, 1, "x"),
    ]
    assert [r.step for r in history.get_metric_records("a")] == [0, 40, 2]


def test_a_history_saved_before_values_had_places_still_loads():
    old_state = {
        "current_epoch": 3,
        "metrics": {"train_loss_epoch": [1.0, 0.5], "eval_loss_epoch": [0.9, 0.6]},
    }
    history = InMemoryRunHistory()
    history.load_state_dict(old_state)
    assert history.current_epoch == 3
    assert history.get_metric_values("train_loss_epoch") == [1.0, 0.5]
    assert [r.step for r in history.get_metric_records("eval_loss_epoch")] == [None, None]
    restored = InMemoryRunHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.state_dict() == history.state_dict()


class _DictOfListsHistory(RunHistory):
    """A custom history written against the interface as it was before records: per-name values only."""

    def __init__(self):
        super().__init__()
        self.values, self.epoch = {}, 1

    def get_metric_names(self):
        return list(self.values)

    def get_metric_values(self, metric_name):
        return list(self.values.get(metric_name, []))

    def get_latest_metric(self, metric_name):
        return self.values[metric_name][-1]

    def write_metric(self, metric_name, metric_value):
        self.values.setdefault(metric_name, []).append(metric_value)

    @property
    def current_epoch(self):
        return self.epoch

    def increment_epoch(self):
        self.epoch += 1

    def reset(self):
        self.values, self.epoch = {}, 1


def test_a_custom_history_on_the_old_interface_gets_records_too():
    """A custom history written against the old interface gets records too."""
    history = _DictOfListsHistory()
    history.update_metric("stale", 1.0)
    trainer = _train(history=history)  # train() resets it
    assert trainer.run_history is history and "stale" not in history.values
    records = history.get_metric_records("eval_loss_epoch")
    assert [(r.step, r.epoch, r.evaluation) for r in records] == [(8, 1, "validation"), (16, 2, "validation")]
    assert [r.value for r in records] == history.values["eval_loss_epoch"]
    restored = _DictOfListsHistory()
    restored.load_state_dict(history.state_dict())
    assert [r.step for r in restored.get_metric_records("train_loss_epoch")] == [8, 16]


class _DeclaresAtRunStart(TrainerCallback):
    """Declares ``eval_score`` for each evaluation set, and keeps what the trainer declares at run start."""

    def recorded_metric_names(self, trainer):
        return trainer.evaluation_metric_names("eval_score")

    def on_training_run_start(self, trainer, **kwargs):
        self.declared = trainer.recorded_metric_names()


class _RecordsInItsHook(Trainer):
    def recorded_metric_names(self):
        return [*super().recorded_metric_names(), "my_metric"]


@pytest.mark.parametrize(
    "eval_dataset, expected",
    [
        (None, ["train_loss_epoch"]),
        ("one", ["train_loss_epoch", "eval_loss_epoch", "eval_score"]),
        (
            "two",
            [
                "train_loss_epoch",
                "val_eval_loss_epoch",
                "ood_eval_loss_epoch",
                "val_eval_score",
                "ood_eval_score",
            ],
        ),
    ],
    ids=["no-eval", "one-eval-set", "named-eval-sets"],
)
def test_the_names_a_run_declares_are_the_trainers_and_its_callbacks(eval_dataset, expected):
    declaring = _DeclaresAtRunStart()
    trainer = make_trainer(callbacks=[declaring])
    evaluation = {
        "one": make_tiny_dataset(16, seed=1),
        "two": {"val": make_tiny_dataset(16, seed=1), "ood": make_tiny_dataset(16, seed=2)},
    }.get(eval_dataset)
    trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset=evaluation, per_device_batch_size=8)
    assert declaring.declared == expected, "the trainer's own names first, each eval set's under its name"
    recorded = set(trainer.run_history.get_metric_names())
    assert recorded == {name for name in expected if "score" not in name}, "the core records what it declares"


def test_a_trainer_subclass_declares_what_its_hooks_record():
    trainer = make_trainer(trainer_class=_RecordsInItsHook)
    trainer.train(make_tiny_dataset(16), num_epochs=1, per_device_batch_size=8)
    assert trainer.recorded_metric_names() == ["train_loss_epoch", "my_metric"]
