"""SaveTrainingStateCallback in one process: when it saves, what it keeps, what it refuses, signals;
and every stateful callback of this package resuming exactly from any save point."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch

from pytorch_accelerated.callbacks import (
    CSVLoggerCallback,
    EarlyStoppingCallback,
    JSONLinesLoggerCallback,
    LearningRateMonitorCallback,
    LimitBatchesCallback,
    ModelEmaCallback,
    SaveBestModelCallback,
    SaveTrainingStateCallback,
)
from pytorch_accelerated.schedulers import CosineLrScheduler
from pytorch_accelerated.trainer import (
    StopTrainingError,
    Trainer,
    TrainerCallback,
    list_training_states,
    seed_everything,
)
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, final_state, make_tiny_dataset

from .helpers import Crash, CrashAtUpdate

# 50 samples, batch 8: 7 batches per epoch; accumulation 2: 4 updates per epoch
NUM_SAMPLES, BATCH_SIZE, ACCUMULATION = 50, 8, 2


@pytest.fixture(autouse=True)
def keep_signal_handlers():
    """A test that fails midway must not leave the handlers of a run to the next tests."""
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield
    for number, handler in before.items():
        signal.signal(number, handler)


def make_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3)
        )


def train(callbacks, num_epochs=3, resume_from=None, scheduler=True):
    seed_everything(3)
    model = make_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        callbacks=callbacks,
    )
    trainer.train(
        make_tiny_dataset(NUM_SAMPLES),
        num_epochs=num_epochs,
        eval_dataset=make_tiny_dataset(16, seed=1),
        per_device_batch_size=BATCH_SIZE,
        gradient_accumulation_steps=ACCUMULATION,
        create_scheduler_fn=(
            CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=0.5) if scheduler else None
        ),
        resume_from=resume_from,
    )
    return trainer


# ---------------------------------------------------------------------------------------- when and what


def test_saves_at_the_start_every_n_steps_every_epoch_and_at_the_end(tmp_path):
    saver = SaveTrainingStateCallback(
        tmp_path, save_every_n_steps=3, save_every_n_epochs=2, max_checkpoints=None
    )
    train([saver])
    assert [path.name for path in saver.saved_paths] == [
        "step-00000000-start",
        "step-00000003",
        "step-00000006",
        "step-00000008-epoch-2-end",
        "step-00000009",
        "step-00000012",
        "step-00000012-end",  # after the last update come the epoch's evaluation and end
    ]
    assert [path.name for path in sorted(tmp_path.iterdir())] == [path.name for path in saver.saved_paths]
    assert saver.latest_training_state() == tmp_path / "step-00000012-end"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["synchronous", "asynchronous"])
def test_keeps_only_the_newest_states(tmp_path, asynchronous):
    saver = SaveTrainingStateCallback(
        tmp_path, save_every_n_steps=1, max_checkpoints=2, asynchronous=asynchronous
    )
    train([saver])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-00000012", "step-00000012-end"]


def test_background_states_resume_exactly_and_never_fewer_are_kept(tmp_path):
    """States written in the background resume exactly and never fewer than kept.

    While a state is written in the background, the newest ``max_checkpoints`` complete ones stay."""
    expected = final_state(train([]))
    complete_counts = []

    class CountsCompleteStates(TrainerCallback):
        def on_save_point(self, trainer, point, **kwargs):
            complete_counts.append(len(list_training_states(tmp_path)))

    saver = SaveTrainingStateCallback(tmp_path, save_every_n_steps=2, max_checkpoints=2, asynchronous=True)
    train([saver, CountsCompleteStates()])
    # how many are complete depends on how fast the writes go; never fewer than 2 again
    kept_from = complete_counts.index(2)
    assert 2 <= min(complete_counts[kept_from:]) and max(complete_counts) <= 3, complete_counts
    older_kept = list_training_states(tmp_path)[0]
    assert older_kept != saver.saved_paths[-1]
    assert_bitwise_equal(final_state(train([], resume_from=older_kept)), expected)


def test_an_epoch_end_state_already_saved_is_not_saved_again_at_the_end(tmp_path):
    saver = SaveTrainingStateCallback(tmp_path, save_every_n_epochs=1)
    train([saver], num_epochs=2)
    assert [path.name for path in saver.saved_paths][-1] == "step-00000008-epoch-2-end"


def test_a_state_every_n_minutes_uses_the_main_process_clock(tmp_path, monkeypatch):
    import pytorch_accelerated.callbacks.training_state as module

    clock = {"now": 0.0}
    monkeypatch.setattr(module.time, "monotonic", lambda: clock["now"])

    class TwentySecondsPerUpdate(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            clock["now"] += 20.0

    saver = SaveTrainingStateCallback(tmp_path, save_every_n_minutes=1)
    train([TwentySecondsPerUpdate(), saver], num_epochs=2)
    assert [path.name for path in saver.saved_paths] == [
        "step-00000000-start",
        "step-00000003",
        "step-00000006",
        "step-00000008-end",
    ]


def test_a_run_stopped_early_saves_a_state_that_resumes_to_the_same_end(tmp_path):
    """A run stopped early ends with a stopped state that resumes to the same end."""

    class StopAtUpdate6(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 6:
                raise StopTrainingError("enough")

    saver = SaveTrainingStateCallback(tmp_path, save_every_n_steps=4)
    expected = final_state(train([StopAtUpdate6(), saver]))
    assert saver.saved_paths[-1].name == "step-00000006-stopped"
    resumed = train(
        [StopAtUpdate6(), SaveTrainingStateCallback(tmp_path, save_every_n_steps=4)], resume_from="latest"
    )
    assert resumed.completed_update_steps == 6
    assert_bitwise_equal(final_state(resumed), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"save_every_n_steps": 0}, "save_every_n_steps must be a positive integer"),
        ({"save_every_n_epochs": 1.5}, "save_every_n_epochs must be a positive integer"),
        ({"max_checkpoints": 0}, "max_checkpoints must be a positive integer"),
        ({"save_every_n_minutes": 0}, "save_every_n_minutes must be > 0"),
    ],
)
def test_bad_settings_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SaveTrainingStateCallback(tmp_path, **kwargs)


def test_a_new_run_refuses_a_folder_of_another_runs_states_and_leaves_them(tmp_path):
    train([SaveTrainingStateCallback(tmp_path, save_every_n_steps=4)], num_epochs=1)
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(FileExistsError, match="resume_from='latest'"):
        train([SaveTrainingStateCallback(tmp_path, save_every_n_steps=1, max_checkpoints=1)], num_epochs=1)
    assert sorted(path.name for path in tmp_path.iterdir()) == before


def test_resume_from_latest_starts_a_new_run_when_nothing_was_saved(tmp_path, capsys):
    from pytorch_accelerated.trainer import PrintMetricsCallback

    trainer = train(
        [PrintMetricsCallback(), SaveTrainingStateCallback(tmp_path / "states")],
        num_epochs=1,
        resume_from="latest",
    )
    assert trainer.resumed_from is None
    assert "no training state has been saved yet; starting a new run" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    ("signal_number", "asynchronous"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["sigterm", "sigint", "sigterm-saving-in-the-background"],
)
def test_a_signal_saves_at_the_next_update_then_the_run_resumes_exactly(
    tmp_path, signal_number, asynchronous
):
    """A signal saves at the next update and stops, then the run resumes exactly.

    Saving in the background, the state saved on the signal is written before the run stops."""
    expected = final_state(train([]))

    class SignalMidWindow(TrainerCallback):
        def on_train_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 5 and trainer.completed_epoch_batches == 2:
                os.kill(os.getpid(), signal_number)  # the first batch of update 6's window

    saver = SaveTrainingStateCallback(tmp_path, save_every_n_epochs=1, asynchronous=asynchronous)
    previous = signal.getsignal(signal_number)
    stopped = train([SignalMidWindow(), saver])
    assert stopped.completed_update_steps == 6
    assert saver.saved_paths[-1].name == "step-00000006"  # no final state after a signal
    assert list_training_states(tmp_path) == saver.saved_paths  # every state written, none left half-done
    assert saver.stopped_by_signal == signal.Signals(signal_number).name
    assert signal.getsignal(signal_number) == previous  # handlers put back at the run's end
    resumed = train([SaveTrainingStateCallback(tmp_path, save_every_n_epochs=1)], resume_from="latest")
    assert_bitwise_equal(final_state(resumed), expected)


def test_without_signal_handling_the_handlers_are_left_alone(tmp_path):
    seen = []

    class LooksAtTheHandler(TrainerCallback):
        def on_train_epoch_start(self, trainer, **kwargs):
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    train([SaveTrainingStateCallback(tmp_path, handle_signals=False), LooksAtTheHandler()], num_epochs=1)
    assert seen == [before]


# ---------------------------------------------------------------------------------------- every callback
# resumes


def stateful_callbacks(tmp_path):
    return [
        LimitBatchesCallback(5),
        LearningRateMonitorCallback(),
        ModelEmaCallback(decay=0.8, save_path=tmp_path / "ema.pt"),
        EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.0),
        SaveBestModelCallback(tmp_path / "best.pt"),
        CSVLoggerCallback(tmp_path / "log.csv", log_every_n_steps=1, if_exists="overwrite"),
        JSONLinesLoggerCallback(tmp_path / "log.jsonl", log_every_n_steps=2, if_exists="overwrite"),
    ]


def test_every_stateful_callback_resumes_exactly_from_every_save_point(tmp_path):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference_dir.mkdir()
    run_dir.mkdir()
    expected = final_state(train(stateful_callbacks(reference_dir), num_epochs=4))
    expected_logs = {name: (reference_dir / name).read_text() for name in ("log.csv", "log.jsonl")}

    saver = SaveTrainingStateCallback(run_dir / "states", save_every_n_steps=1, max_checkpoints=None)
    train([*stateful_callbacks(run_dir), saver], num_epochs=4)
    assert len(saver.saved_paths) > 10
    for state in saver.saved_paths:
        # as if killed at the very end: the logs hold every record, the resumed run cuts them back
        for name, text in expected_logs.items():
            (run_dir / name).write_text(text)
        resumed = train(stateful_callbacks(run_dir), num_epochs=4, resume_from=state)
        assert_bitwise_equal(final_state(resumed), expected, state.name)
        for name, text in expected_logs.items():
            assert (run_dir / name).read_text() == text, f"{name} resumed from {state.name}"


def test_a_crashed_run_resumes_and_its_logs_match_the_uninterrupted_run(tmp_path):
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference_dir.mkdir()
    run_dir.mkdir()
    expected = final_state(train(stateful_callbacks(reference_dir)[1:], num_epochs=3))

    def callbacks():
        return [
            *stateful_callbacks(run_dir)[1:],
            SaveTrainingStateCallback(run_dir / "states", save_every_n_steps=3),
        ]

    with pytest.raises(Crash):
        train([*callbacks(), CrashAtUpdate(11)], num_epochs=3)  # 2 updates after the last state
    resumed = train(callbacks(), num_epochs=3, resume_from="latest")
    assert resumed.resumed_from.name == "step-00000009"
    assert_bitwise_equal(final_state(resumed), expected)
    for name in ("log.csv", "log.jsonl"):
        assert (run_dir / name).read_text() == (reference_dir / name).read_text(), name


def test_a_run_resumed_from_an_older_state_refuses_to_mix_with_newer_ones(tmp_path):
    """A run resumed from an older state refuses to mix with the newer ones."""
    saver = SaveTrainingStateCallback(tmp_path, save_every_n_steps=4, max_checkpoints=None)
    train([saver], num_epochs=2)
    older = saver.saved_paths[1]
    with pytest.raises(FileExistsError, match=r"also holds newer training states \(step-00000008"):
        train([SaveTrainingStateCallback(tmp_path, save_every_n_steps=4)], num_epochs=2, resume_from=older)
    assert [path.name for path in sorted(tmp_path.iterdir())] == [path.name for path in saver.saved_paths]


@pytest.mark.parametrize("logger_class", [CSVLoggerCallback, JSONLinesLoggerCallback])
def test_a_log_survives_a_run_interrupted_twice_before_it_logs_again(tmp_path, logger_class):
    """Epoch-only logging: a resumed run saves states before its first write; a second interruption
    must still find the log as the first state left it."""
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference_dir.mkdir()
    run_dir.mkdir()
    train([logger_class(reference_dir / "log")])

    def callbacks(*extra):
        return [
            logger_class(run_dir / "log"),
            SaveTrainingStateCallback(run_dir / "states", save_every_n_steps=1),
            *extra,
        ]

    with pytest.raises(Crash):
        train(callbacks(CrashAtUpdate(6)))  # epoch 1 logged (4 updates per epoch); states up to update 5
    with pytest.raises(Crash):
        train(callbacks(CrashAtUpdate(7)), resume_from="latest")  # saves at update 6, then crashes
    train(callbacks(), resume_from="latest")
    # the resumed runs went on in the interrupted run's own version folder (run_folders.py)
    assert (run_dir / "version_0" / "log").read_text() == (reference_dir / "version_0" / "log").read_text()
    assert not (run_dir / "version_1").exists()


# ---------------------------------------------------------------------------------------- issue 27


def test_by_default_only_the_newest_three_states_are_kept(tmp_path):
    saver = SaveTrainingStateCallback(tmp_path, save_every_n_steps=1)
    train([saver])
    assert len(saver.saved_paths) == 14, "every update, the start and the end"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "step-00000011",
        "step-00000012",
        "step-00000012-end",
    ]


def test_a_job_stopped_at_its_time_limit_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    """A job stopped at its time limit resumes as if it had never stopped."""
    import pytorch_accelerated.callbacks.training_state as module

    clock = {"now": 0.0}
    monkeypatch.setattr(module.time, "monotonic", lambda: clock["now"])

    class TwentySecondsPerUpdate(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            clock["now"] += 20.0

    def callbacks(run_dir):
        return [TwentySecondsPerUpdate(), *stateful_callbacks(run_dir)[1:]]

    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    expected = final_state(train(callbacks(reference_dir)))
    stops = []
    while True:  # a job of 1 min 30 s at a time, run again until the run is done
        saver = SaveTrainingStateCallback(run_dir / "states", max_time="00:01:30")
        trainer = train([*callbacks(run_dir), saver], resume_from="latest")
        if not saver.stopped_by_time_limit:
            break
        stops.append(trainer.completed_update_steps)
        assert saver.saved_paths[-1].name == f"step-{trainer.completed_update_steps:08d}", (
            "a state that goes on"
        )
    assert stops == [5, 10], "90 s are 5 updates of 20 s; each job has its own 90 s"
    assert_bitwise_equal(final_state(trainer), expected)
    for name in ("log.csv", "log.jsonl"):
        assert (run_dir / name).read_text() == (reference_dir / name).read_text(), name


@pytest.mark.parametrize("max_time, message", [("3:50", "'DD:HH:MM:SS' or 'HH:MM:SS'"), (0, "longer than 0")])
def test_a_max_time_lightning_would_not_take_is_refused(tmp_path, max_time, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SaveTrainingStateCallback(tmp_path, max_time=max_time)
    days_hours_minutes = SaveTrainingStateCallback(tmp_path, max_time="01:03:50:00").max_time.total_seconds()
    assert days_hours_minutes == 24 * 3600 + 3 * 3600 + 50 * 60
