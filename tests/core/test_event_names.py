"""Event names resolved once, when a Trainer is created: synonyms, misspellings, custom events,
and a callback instance listed twice."""

import warnings

import pytest

from pytorch_accelerated.trainer import CallbackHandler, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training

from .helpers import make_trainer


def _event_name_warnings(callbacks, trainer_class=Trainer) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(callbacks, trainer_class=trainer_class, lr=0.1)
    return [str(w.message) for w in caught if "event" in str(w.message)]


def test_a_misspelled_event_gets_one_warning_naming_the_closest_event():
    class Typo(TrainerCallback):
        def on_train_epoch_ned(self, trainer, **kwargs): ...

        def on_eval_step_edn(self, trainer, **kwargs): ...

    messages = _event_name_warnings([Typo()])
    assert len(messages) == 2
    assert any("Typo.on_train_epoch_ned" in m and "did you mean on_train_epoch_end?" in m for m in messages)
    assert any("did you mean on_eval_step_end?" in m for m in messages)


def test_a_method_far_from_every_event_is_still_reported():
    class Odd(TrainerCallback):
        def on_zzz(self, trainer, **kwargs): ...

    (message,) = _event_name_warnings([Odd()])
    assert "Odd.on_zzz is never called" in message and "custom_events" in message


def test_declared_custom_events_are_never_flagged():
    class Listener(TrainerCallback):
        custom_events = ("on_batch_checked",)

        def on_batch_checked(self, trainer, **kwargs): ...

    class FiringTrainer(Trainer):
        custom_events = ("on_predictions",)

    class PredictionsListener(TrainerCallback):  # handles an event the trainer declares
        def on_predictions(self, trainer, **kwargs): ...

    assert _event_name_warnings([Listener(), PredictionsListener()], FiringTrainer) == []
    # without the trainer's declaration, the listener of on_predictions is reported
    assert len(_event_name_warnings([PredictionsListener()])) == 1


def test_a_custom_event_declared_by_one_callback_is_known_to_the_others():
    class Fires(TrainerCallback):
        custom_events = ("on_thing",)

    class Handles(TrainerCallback):
        def on_thing(self, trainer, **kwargs): ...

    assert _event_name_warnings([Handles(), Fires()]) == []


def test_custom_events_must_be_a_tuple_of_names():
    class Wrong(TrainerCallback):
        custom_events = "on_thing"

    with pytest.raises(TypeError, match=r"Wrong.custom_events must be a tuple of event names"):
        make_trainer([Wrong()], lr=0.1)


def test_a_callback_added_later_is_checked_too():
    trainer = make_trainer([], lr=0.1)

    class Typo(TrainerCallback):
        def on_training_run_strat(self, trainer, **kwargs): ...

    with pytest.warns(UserWarning, match="did you mean on_training_run_start") as caught:
        trainer.callback_handler.add_callback(Typo())
    assert caught[0].filename == __file__  # the warning points at the add_callback line, not a frame above it


def test_both_spellings_of_one_event_get_one_warning_and_both_run():
    calls = []

    class Both(TrainerCallback):
        def on_train_epoch_start(self, trainer, **kwargs):
            calls.append("on_train_epoch_start")

        def on_train_epoch_begin(self, trainer, **kwargs):
            calls.append("on_train_epoch_begin")

    (message,) = _event_name_warnings([Both()])
    assert "defines both on_train_epoch_start and on_train_epoch_begin" in message
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_tiny_training(callbacks=[Both()], num_epochs=2, with_eval=False)
    assert calls == ["on_train_epoch_start", "on_train_epoch_begin"] * 2


def test_an_inherited_synonym_runs_beside_the_subclass_event():
    """A synonym inherited from a founding README callback runs beside the subclass event."""

    class FromReadme(TrainerCallback):
        def on_train_run_end(self, trainer, **kwargs):
            trainer.run_history.update_metric("readme_end", 1)

    result = run_tiny_training(callbacks=[FromReadme()], num_epochs=1, with_eval=False)
    assert result.metrics["readme_end"] == [1]


def test_firing_an_event_by_its_founding_name_reaches_both_spellings():
    calls = []

    class Current(TrainerCallback):
        def on_training_run_start(self, trainer, **kwargs):
            calls.append("current")

    class Founding(TrainerCallback):
        def on_train_run_begin(self, trainer, **kwargs):
            calls.append("founding")

    handler = CallbackHandler([Current(), Founding()])
    handler.call_event("on_train_run_begin", None)
    handler.call_event("on_training_run_start", None)
    assert calls == ["current", "founding"] * 2


def test_the_same_callback_instance_listed_twice_is_an_error_naming_it():
    class Counter(TrainerCallback):
        pass

    counter = Counter()
    with pytest.raises(ValueError, match=r"Counter\) is listed twice"):
        make_trainer([counter, counter], lr=0.1)
    trainer = make_trainer([counter], lr=0.1)
    with pytest.raises(ValueError, match="listed twice"):
        trainer.callback_handler.add_callback(counter)
    # two instances of one class, or the class twice, are two callbacks: allowed
    make_trainer([Counter(), Counter(), Counter, Counter], lr=0.1)


def test_the_shipped_callbacks_and_examples_raise_no_event_name_warning():
    from pytorch_accelerated import callbacks as shipped
    from pytorch_accelerated.examples.custom_event import (
        MistakesPerClassCallback,
        TrainerWithPredictionEvents,
    )
    from pytorch_accelerated.trainer import DEFAULT_CALLBACKS

    instances = []
    for name in (
        "EarlyStoppingCallback",
        "SaveBestModelCallback",
        "ModelEmaCallback",
        "LearningRateMonitorCallback",
        "ThroughputMonitorCallback",
        "ConvertSyncBatchNormCallback",
    ):
        instances.append(getattr(shipped, name)())
    assert _event_name_warnings([*DEFAULT_CALLBACKS, *instances]) == []
    assert _event_name_warnings([MistakesPerClassCallback()], TrainerWithPredictionEvents) == []


def test_a_handler_requiring_an_argument_never_passed_fails_at_creation():
    """A handler requiring an argument its event never passes is an error at creation."""

    class StepCounter(TrainerCallback):  # 0.1.61 passed step= to on_train_step_end
        def on_train_step_end(self, trainer, batch, batch_output, step, **kwargs): ...

    with pytest.raises(
        TypeError, match=r"StepCounter.on_train_step_end requires step.*trainer.completed_epoch_batches"
    ):
        make_trainer([StepCounter()], lr=0.1)

    class WithDefaults(TrainerCallback):  # optional extras, any name for the trainer, fewer arguments: fine
        def on_train_step_end(self, args, batch_output, step=None, **kwargs): ...

        def on_eval_epoch_start(self, trainer, is_intermediate=False, **kwargs): ...

        def on_train_run_begin(self, trainer): ...

    assert _event_name_warnings([WithDefaults()]) == []


def test_the_handler_check_reads_keyword_only_and_decorated_handlers():
    """The handler check reads keyword only and decorated handlers and is made for every trainer."""
    import functools

    class KeywordOnly(TrainerCallback):
        def on_train_step_start(self, trainer, *, epoch, **kwargs): ...

    def logged(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            return method(*args, **kwargs)

        return wrapper

    class Decorated(TrainerCallback):
        @logged
        def on_eval_step_end(self, trainer, batch, batch_output, step, **kwargs): ...

    for callback_class, missing in ((KeywordOnly, "epoch"), (Decorated, "step")):
        for _ in range(2):  # the check's result is cached per class only once it passes
            with pytest.raises(TypeError, match=rf"{callback_class.__name__}\.\w+ requires {missing},"):
                make_trainer([callback_class()], lr=0.1)


def _subclasses(cls):
    for subclass in cls.__subclasses__():
        yield subclass
        yield from _subclasses(subclass)


def test_no_shipped_callback_class_is_reported_as_misspelled():
    # every callback class of every package, not a hand-kept list: a new tool with a custom event
    # (GradientNormCallback's on_before_gradient_clipping) must declare it
    """No callback class shipped in the packages is reported as misspelled."""
    import importlib
    import pkgutil

    for name in ("callbacks", "metrics", "tuning", "finetuning", "schedulers", "examples"):
        package = importlib.import_module(f"pytorch_accelerated.{name}")
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name.endswith(".__main__"):
                continue  # a script (python -m ...), not a module of callbacks
            try:
                importlib.import_module(module.name)
            except ImportError:  # an example's optional dependency (torchvision, timm, transformers)
                pass
    trainer_events = {event for trainer in _subclasses(Trainer) for event in trainer.custom_events}
    shipped = [
        c
        for c in _subclasses(TrainerCallback)
        if c.__module__.startswith("pytorch_accelerated.") and c.__module__ != __name__
    ]
    assert {"GradientNormCallback", "ProfilerCallback", "MetricSchedulerCallback"} <= {
        c.__name__ for c in shipped
    }
    for callback_class in shipped:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            CallbackHandler([callback_class.__new__(callback_class)], custom_events=trainer_events)
        assert [str(w.message) for w in caught if "event" in str(w.message)] == [], callback_class
