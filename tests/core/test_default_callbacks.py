"""The default callbacks: device placement, non-finite loss, progress bar, printed metrics."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
import torch

from pytorch_accelerated.trainer import (
    DEFAULT_CALLBACKS,
    MoveModulesToDeviceCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    Trainer,
    format_metric_value,
)
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from ..launching import REPO_ROOT, launch_env
from . import console_scenario
from .helpers import make_trainer


def test_a_default_trainer_has_one_fresh_instance_of_each_default_callback():
    model = make_tiny_model()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    assert [type(cb) for cb in trainer.callback_handler] == list(DEFAULT_CALLBACKS)
    assert [type(cb) for cb in make_trainer(callbacks=()).callback_handler] == []


def test_default_callbacks_train_and_print_a_readable_line_per_epoch(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line: the summary becomes a table only when it does not fit
    model = make_tiny_model()
    trainer = Trainer(model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(
        make_tiny_dataset(32), num_epochs=2, eval_dataset=make_tiny_dataset(16), per_device_batch_size=8
    )
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1: train_loss_epoch: ") and " | eval_loss_epoch: " in lines[0]
    assert "Starting training run: 2 epoch(s), 8 update step(s)" in out.out
    # stderr is not a terminal here: no bar redrawn in place; epochs shorter than 30 s print no line
    assert out.err == ""


def test_print_metrics_callback_prints_evaluation_results(capsys):
    trainer = make_trainer(callbacks=[PrintMetricsCallback()])
    trainer.evaluate(make_tiny_dataset(8))
    assert capsys.readouterr().out.startswith("evaluation: eval_loss: ")


def test_terminate_on_nan_stops_with_a_clear_message(capsys):
    class ExplodingLoss(Trainer):
        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            if self.completed_update_steps >= 2:
                output["loss"] = output["loss"] * float("nan")
            return output

    trainer = make_trainer(
        callbacks=[TerminateOnNaNCallback(check_every_n_steps=1), PrintMetricsCallback()],
        trainer_class=ExplodingLoss,
    )
    trainer.train(make_tiny_dataset(64), num_epochs=3, per_device_batch_size=4)
    assert trainer.completed_update_steps == 2  # checked every step: stopped before the first bad update
    out = capsys.readouterr().out
    assert "Training stopped early: The training loss became NaN or infinite" in out
    assert "gradient_clip_norm" in out

    # by default the kept losses are read every 50 steps and at each epoch's end (16 steps here)
    trainer = make_trainer(callbacks=[TerminateOnNaNCallback()], trainer_class=ExplodingLoss)
    trainer.train(make_tiny_dataset(64), num_epochs=3, per_device_batch_size=4)
    assert trainer.completed_update_steps == 16


def test_terminate_on_nan_checks_at_its_interval_and_at_epoch_end():
    """``terminate_on_nan`` with an interval checks at the interval and epoch end."""

    class NanAtStepThree(Trainer):
        def calculate_train_batch_loss(self, batch):
            output = super().calculate_train_batch_loss(batch)
            if self.completed_update_steps == 3:
                output["loss"] = output["loss"] * float("inf")
            return output

    trainer = make_trainer(
        callbacks=[TerminateOnNaNCallback(check_every_n_steps=5)], trainer_class=NanAtStepThree
    )
    trainer.train(make_tiny_dataset(64), num_epochs=1, per_device_batch_size=4)
    # the 4th step's loss is infinite; the check at the end of the 5th step stops before its update
    assert trainer.completed_update_steps == 4


def test_terminate_on_nan_rejects_a_bad_interval():
    for bad in (0, None, 2.5):
        with pytest.raises(ValueError, match="check_every_n_steps"):
            TerminateOnNaNCallback(check_every_n_steps=bad)


def test_move_modules_to_device_moves_other_modules_but_not_the_model():
    moved = []

    class Spy(torch.nn.Module):
        def _apply(self, fn, recurse=True):
            moved.append(True)
            return super()._apply(fn, recurse)

    trainer = make_trainer(callbacks=[MoveModulesToDeviceCallback()])
    trainer.extra_metric = Spy()
    trainer.train(make_tiny_dataset(8), num_epochs=1)
    trainer.evaluate(make_tiny_dataset(8))
    assert len(moved) == 2


def test_the_progress_bar_shows_one_bar_per_epoch_and_closes_it(capsys):
    trainer = make_trainer(callbacks=[ProgressBarCallback(file_refresh_interval_s=0.0)])
    trainer.train(
        make_tiny_dataset(16), num_epochs=2, eval_dataset=make_tiny_dataset(8), per_device_batch_size=4
    )
    err = capsys.readouterr().err
    assert "epoch 1 train: 4/4 batches" in err and "epoch 2 train" in err and "eval: 2/2 batches" in err
    assert trainer.callback_handler.callbacks[0]._bar is None


@pytest.mark.parametrize(
    "value, text",
    [
        (0.123456, "0.1235"),
        (3, "3"),
        (torch.tensor(0.5), "0.5000"),
        (1e-6, "1.0000e-06"),
        (float("nan"), "nan"),
        ("x", "x"),
    ],
)
def test_format_metric_value(value, text):
    assert format_metric_value(value) == text


def test_print_metrics_puts_mid_epoch_evaluations_in_the_epoch_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line: the summary becomes a table only when it does not fit

    class EvaluateOnce(MoveModulesToDeviceCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 1:
                trainer.evaluate()

    trainer = make_trainer(callbacks=[EvaluateOnce(), PrintMetricsCallback()])
    trainer.train(
        make_tiny_dataset(16), num_epochs=1, eval_dataset=make_tiny_dataset(8), per_device_batch_size=8
    )
    out = capsys.readouterr().out
    assert "evaluation:" not in out
    epoch_line = next(line for line in out.splitlines() if line.startswith("epoch 1:"))
    assert "train_loss_epoch" in epoch_line and "eval_loss" in epoch_line and "eval_loss_epoch" in epoch_line


# ---------------------------------------------------------------------------------------- the console, as a
# user sees it


def _run_console_scenario(stdout, stderr, tmp_path) -> int:
    env = {**launch_env(tmp_path), "COLUMNS": "80"}
    command = [sys.executable, str(console_scenario.__file__)]
    return subprocess.run(
        command, stdout=stdout, stderr=stderr, cwd=REPO_ROOT, env=env, timeout=120
    ).returncode


def test_output_to_a_file_is_plain_lines_without_carriage_returns(tmp_path):
    """Output redirected to a file is plain lines without carriage returns."""
    log = tmp_path / "train.log"
    with open(log, "w") as file:
        assert _run_console_scenario(file, subprocess.STDOUT, tmp_path) == 0
    output = log.read_text()
    assert "\r" not in output
    progress = [line for line in output.splitlines() if line.startswith("epoch 1 train:")]
    assert len(progress) == 9, output  # at the start, then one line per update at file_refresh_interval_s=0
    assert re.fullmatch(r"epoch 1 train: 8/8 batches \[.*, loss=\d\.\d{4}\]", progress[-1]), progress[-1]
    _assert_a_readable_summary(output)


def test_a_terminal_gets_a_bar_redrawn_in_place_with_the_running_loss(tmp_path):
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 24 rows of 80 columns
    try:
        status = _run_console_scenario(terminal, terminal, tmp_path)
        os.close(terminal)
        terminal = None
        output = _read_all(controller)
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    assert status == 0, output
    redraws = re.findall(r"\repoch 1 train: +\d+%\|[^\r\n]*\| (\d)/8 \[[^\]]*loss=(\d\.\d{4})\]", output)
    assert len(redraws) >= 4, output  # drawn in place (carriage returns), with the epoch's running loss
    _assert_a_readable_summary(output.replace("\r\n", "\n"))


def _read_all(fd) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def _assert_a_readable_summary(output: str) -> None:
    """Twelve long metric names and the losses: a table under ``epoch 1:``, no line over 80 characters."""
    lines = output.splitlines()
    start = lines.index("epoch 1:") + 1
    table = lines[start : start + 2 + console_scenario.NUM_EXTRA_METRICS]
    assert all(line.startswith("  ") and len(line) <= 80 for line in table), table
    cells = re.findall(r"(\S+) +(\S+)", " ".join(table))
    names = [name for name, _ in cells]
    extra = [f"some_metric_with_a_long_name_{i}" for i in range(console_scenario.NUM_EXTRA_METRICS)]
    assert names == ["train_loss_epoch", *extra, "eval_loss_epoch"]


def test_a_short_summary_is_one_line_and_a_long_one_aligned_rows():
    """A summary that fits stays on one line and a long one becomes aligned rows."""
    from pytorch_accelerated.trainer.default_callbacks import format_metrics_summary

    assert (
        format_metrics_summary("epoch 2", [("a", "1.0000"), ("bb", "2.0000")], width=80)
        == "epoch 2: a: 1.0000 | bb: 2.0000"
    )
    assert format_metrics_summary("evaluation", [], width=80) == "evaluation: (no metrics)"
    metrics = [(f"metric_{i}", f"{i}.0000") for i in range(5)] + [("a_much_longer_name", "12.5000")]
    assert format_metrics_summary("epoch 2", metrics, width=60).splitlines() == [
        "epoch 2:",
        "  metric_0             0.0000   metric_1             1.0000",
        "  metric_2             2.0000   metric_3             3.0000",
        "  metric_4             4.0000   a_much_longer_name  12.5000",
    ]


def test_a_non_scalar_value_is_printed_as_its_shape(capsys):
    class RecordsAnImage(MoveModulesToDeviceCallback):
        def on_train_epoch_end(self, trainer, **kwargs):
            trainer.run_history.update_metric("sample", torch.rand(3, 8, 8))

    make_trainer(callbacks=[RecordsAnImage(), PrintMetricsCallback()]).train(
        make_tiny_dataset(8), num_epochs=1, per_device_batch_size=4
    )
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1:"))
    assert "sample: tensor[3, 8, 8]" in line and re.search(r"train_loss_epoch: \d\.\d{4}", line), line
    assert format_metric_value({"a": list(range(50))}) == "<dict>"


def test_the_progress_bar_shows_the_metrics_asked_for(capsys):
    bar = ProgressBarCallback(file_refresh_interval_s=0.0, metrics=("train_loss_epoch", "not_recorded"))
    make_trainer(callbacks=[bar]).train(make_tiny_dataset(16), num_epochs=2, per_device_batch_size=4)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch 2 train: 4/4")]
    assert re.search(r"loss=\d\.\d{4} train_loss_epoch=\d\.\d{4}\]$", lines[-1]), lines
    with pytest.raises(TypeError, match="sequence of metric names"):
        ProgressBarCallback(metrics="eval_accuracy")
