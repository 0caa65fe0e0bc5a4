"""The offline examples of trainer-examples: each runs for a few steps on tiny sizes, and the main
command (the quickstart) runs end to end, as a user runs it."""

from __future__ import annotations

import ast
import csv
import importlib
import math
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pytorch_accelerated.examples
from pytorch_accelerated.examples import accumulation_clipping_scheduler, custom_event, quickstart
from pytorch_accelerated.examples import metrics_in_callback, metrics_in_trainer_subclass, resumable
from pytorch_accelerated.examples.digits import load_digits_datasets

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = Path(pytorch_accelerated.examples.__file__).parent
README = REPO_ROOT / "packages" / "trainer-examples" / "README.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The arguments of a run of a few steps, for the quickstart's own tests (--run-dir is added by them).
TINY_RUNS = {"quickstart": ["--num-epochs", "2", "--max-steps", "5"]}
# Examples that need an extra, and the module whose absence makes their run of seconds skip.
NEEDS = {
    "tuning_tools": "pytorch_accelerated.tuning",
    "optuna_search": "optuna",
    "mnist_quickstart": "torchvision",
    "timm_transfer_learning": "timm",
    "transformers_classifier": "transformers",
}
NOT_EXAMPLES = ("__init__", "__main__", "cli", "digits")


def example_names() -> list[str]:
    return sorted(path.stem for path in EXAMPLES_DIR.glob("*.py") if path.stem not in NOT_EXAMPLES)


def readme_small_runs() -> dict[str, list[str]]:
    """The examples README's "A run of seconds" commands, by example: the arguments of each."""
    section = README.read_text().split("### A run of seconds", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    runs = {}
    for line in block.strip().splitlines():
        program, flag, module, *args = shlex.split(line)
        package, name = module.rsplit(".", 1)
        assert (program, flag, package) == ("python", "-m", "pytorch_accelerated.examples"), line
        runs[name] = args
    return runs


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def assert_is_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    height, width, _ = imread(path).shape
    assert height > 100 and width > 100


# ---------------------------------------------------------------------------------- every example


@pytest.mark.parametrize("name", sorted(readme_small_runs()))
def test_each_example_runs_as_the_readme_prints_it(name, tmp_path, monkeypatch, capsys):
    """``python -m pytorch_accelerated.examples.<name> <small sizes>``, read from the examples README,
    run in this process (a few seconds each) in a fresh folder."""
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"{name} needs {NEEDS[name]} (trainer-examples' extra)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [f"pytorch_accelerated.examples.{name}", *readme_small_runs()[name]])
    # runpy warns about a module imported already
    sys.modules.pop(f"pytorch_accelerated.examples.{name}", None)
    try:
        runpy.run_module(f"pytorch_accelerated.examples.{name}", run_name="__main__", alter_sys=True)
    finally:
        sys.modules.pop(f"pytorch_accelerated.examples.{name}", None)
    assert "Finished training run" in capsys.readouterr().out


def test_the_readme_runs_every_example_at_the_sizes_its_help_prints():
    runs = readme_small_runs()
    assert sorted(runs) == example_names(), "the README's 'A run of seconds' must run each example once"
    for name, args in runs.items():
        source = (EXAMPLES_DIR / f"{name}.py").read_text()
        epilog = re.search(rf'example_parser\(\s*"{name}",\s*__doc__,\s*"([^"]*)",?\s*\)', source)
        assert epilog, f"{name} does not build its parser with example_parser"
        assert shlex.split(epilog.group(1)) == args, (
            f"{name}: its --help and the README show different small sizes"
        )


@pytest.mark.parametrize("name", ["accumulation_clipping_scheduler", "resumable", "quickstart"])
def test_an_example_help_lists_its_arguments_defaults_and_a_run_of_seconds(name):
    completed = subprocess.run(
        [sys.executable, "-m", f"pytorch_accelerated.examples.{name}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert (
        "--num-epochs" in completed.stdout
        and "--max-steps" in completed.stdout
        and "(default: " in completed.stdout
    )
    small_run = " ".join(readme_small_runs()[name])
    assert (
        f"A run of seconds:\n  python -m pytorch_accelerated.examples.{name} {small_run}" in completed.stdout
    )


def test_the_package_lists_the_examples_also_with_help():
    for args in ([], ["--help"]):
        completed = subprocess.run(
            [sys.executable, "-m", "pytorch_accelerated.examples", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
        assert all(f"``{name}``" in completed.stdout for name in example_names()), completed.stdout


def test_every_example_module_has_a_main_and_is_listed():
    names = example_names()
    listed = re.findall(r"^- ``(\w+)``", pytorch_accelerated.examples.__doc__, flags=re.M)
    for name in names:
        assert name in listed, f"{name} is not listed in pytorch_accelerated/examples/__init__.py's docstring"
        source = (EXAMPLES_DIR / f"{name}.py").read_text()
        assert "def main(argv=None)" in source, f"{name} has no main(argv=None)"
        assert 'if __name__ == "__main__":' in source, f"{name} cannot run with python -m"


def _imports_from_the_library(source_file: Path):
    tree = ast.parse(source_file.read_text(), filename=str(source_file))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytorch_accelerated"):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pytorch_accelerated"):
                    yield alias.name, []


@pytest.mark.parametrize("source_file", sorted(EXAMPLES_DIR.glob("*.py")), ids=lambda path: path.name)
def test_examples_use_only_public_names(source_file):
    for module_name, names in _imports_from_the_library(source_file):
        assert not any(part.startswith("_") for part in module_name.split(".")), (
            f"imports the private module {module_name}"
        )
        module = importlib.import_module(module_name)
        public = set(getattr(module, "__all__", ()))
        for name in names:
            assert name in public, (
                f"{source_file.name} imports {name} from {module_name}, which is not in its __all__"
            )


def test_the_readme_commands_name_existing_examples():
    commands = re.findall(r"python -m pytorch_accelerated\.examples\.(\w+)", README.read_text())
    assert "quickstart" in commands
    for name in commands:
        assert (EXAMPLES_DIR / f"{name}.py").is_file(), f"the README runs {name}, which does not exist"


# ---------------------------------------------------------------------------------- the main command


def test_the_main_command_end_to_end(tmp_path):
    """``python -m pytorch_accelerated.examples.quickstart`` with its defaults, in a fresh folder:
    the whole run, as the README's first command starts it (about 15 s here)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "pytorch_accelerated.examples.quickstart"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()

    # the run folder is printed last, and is the only thing the run wrote
    assert lines[-1].startswith("run folder: "), lines[-5:]
    run_dir = Path(lines[-1].removeprefix("run folder: "))
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("quickstart-")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]
    assert [path.name for path in (tmp_path / "runs").iterdir()] == [run_dir.name]

    test_accuracy = float(re.search(r"^test accuracy: ([0-9.]+)", completed.stdout, flags=re.M).group(1))
    assert test_accuracy > 0.9
    # one naming scheme: the test set's loss and accuracy side by side, under one prefix
    assert re.search(
        r"^evaluation: test_eval_loss: [0-9.]+ \| test_eval_accuracy: [0-9.]+", completed.stdout, flags=re.M
    )

    # output to a pipe: the bars write plain lines (none for epochs shorter than file_refresh_interval_s),
    # never carriage returns; early stopping; the best checkpoint loaded back
    assert "\r" not in completed.stderr
    assert "Training stopped early: Early stopping" in completed.stdout
    assert "Loading the best checkpoint" in completed.stdout

    epoch_rows = read_csv(run_dir / "metrics.csv")
    assert len(epoch_rows) >= 5 and [int(row["epoch"]) for row in epoch_rows] == list(
        range(1, len(epoch_rows) + 1)
    )
    assert max(float(row["eval_accuracy"]) for row in epoch_rows) > 0.9

    import torch

    checkpoint = torch.load(run_dir / "best_model.pt", weights_only=True)
    assert checkpoint["eval_accuracy"] == pytest.approx(
        max(float(row["eval_accuracy"]) for row in epoch_rows)
    )
    # the test score is that of the best epoch's weights, loaded back: it is on that epoch's row
    (test_row,) = [row for row in epoch_rows if row["test_eval_accuracy"]]
    assert int(test_row["epoch"]) == checkpoint["epoch"] < len(epoch_rows), "the best epoch, not the last"
    assert float(test_row["test_eval_accuracy"]) == pytest.approx(test_accuracy, abs=1e-4)
    for plot in ("loss_epoch.png", "accuracy.png", "metrics.png"):
        assert_is_png(run_dir / "plots" / plot)


def test_quickstart_returns_where_everything_is(tmp_path, capsys):
    result = quickstart.main(["--run-dir", str(tmp_path / "run"), *TINY_RUNS["quickstart"]])

    assert result.run_dir == tmp_path / "run"
    assert result.num_epochs_run == 1  # 5 updates end the run in its first epoch
    assert 0 <= result.test_accuracy <= 1 and math.isfinite(result.test_loss)
    assert result.checkpoint_path.is_file()
    assert sorted(path.name for path in result.plot_paths) == [
        "accuracy.png",
        "loss_epoch.png",
        "metrics.png",
    ]
    for path in result.plot_paths:
        assert_is_png(path)
    rows = read_csv(result.csv_path)
    assert [row["epoch"] for row in rows] == [
        "1"
    ]  # the test scores share the row of the epoch they come from
    assert {
        "train_loss_epoch",
        "eval_loss_epoch",
        "train_accuracy",
        "eval_accuracy",
        "test_eval_accuracy",
    } <= set(rows[0])
    assert float(rows[0]["test_eval_accuracy"]) == pytest.approx(result.test_accuracy, abs=1e-4)
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"run folder: {result.run_dir.resolve()}"


def test_quickstart_is_reproducible(tmp_path):
    first = quickstart.main(["--run-dir", str(tmp_path / "a"), "--num-epochs", "2", "--max-steps", "50"])
    second = quickstart.main(["--run-dir", str(tmp_path / "b"), "--num-epochs", "2", "--max-steps", "50"])

    assert read_csv(first.csv_path) == read_csv(second.csv_path)
    assert first.test_accuracy == second.test_accuracy


def test_quickstart_never_writes_into_a_run_folder_that_holds_files(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("my earlier log\n")

    with pytest.raises(SystemExit) as stopped:
        quickstart.main(["--run-dir", str(run_dir), *TINY_RUNS["quickstart"]])

    assert stopped.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(path.name for path in run_dir.iterdir()) == ["metrics.csv"]
    assert (run_dir / "metrics.csv").read_text() == "my earlier log\n"


def test_quickstart_refuses_a_file_as_run_folder(tmp_path):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(SystemExit):
        quickstart.main(["--run-dir", str(tmp_path / "run"), *TINY_RUNS["quickstart"]])


def test_quickstart_overwrites_only_when_asked(tmp_path):
    run_dir = tmp_path / "run"
    quickstart.main(["--run-dir", str(run_dir), "--num-epochs", "2", "--max-steps", "50"])
    result = quickstart.main(["--run-dir", str(run_dir), *TINY_RUNS["quickstart"], "--overwrite"])

    assert [row["epoch"] for row in read_csv(result.csv_path)] == ["1"]  # only the second run's row


def test_quickstart_default_run_folders_are_new_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = quickstart.main(TINY_RUNS["quickstart"])
    second = quickstart.main(TINY_RUNS["quickstart"])  # within the same second, often

    assert first.run_dir != second.run_dir
    assert first.run_dir.parent == second.run_dir.parent == Path("runs")
    assert all(
        re.fullmatch(r"quickstart-\d{8}-\d{6}(-\d+)?", path.name) for path in (first.run_dir, second.run_dir)
    )


def test_quickstart_asks_for_a_run_folder_on_several_processes(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        quickstart.main(TINY_RUNS["quickstart"])
    assert "--run-dir" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- the other examples


def test_metrics_in_a_callback_and_in_a_trainer_subclass_agree():
    argv = ["--num-epochs", "2", "--max-steps", "60"]
    from_callback = metrics_in_callback.main(argv)
    from_subclass = metrics_in_trainer_subclass.main(argv)

    assert from_callback == from_subclass
    assert len(from_callback["eval_accuracy"]) == 2
    assert all(0 <= value <= 1 for value in from_callback["eval_accuracy"] + from_callback["eval_f1"])
    assert from_callback["eval_accuracy"][-1] > 0.5  # 60 updates learn something


def test_the_custom_event_reaches_the_callback_that_defines_it():
    result = custom_event.main(["--num-epochs", "2", "--max-steps", "60"])
    trainer, mistakes_per_epoch = result["trainer"], result["mistakes_per_epoch"]

    assert len(mistakes_per_epoch) == 2 and all(len(counts) == 10 for counts in mistakes_per_epoch)
    assert trainer.run_history.get_metric_values("eval_num_mistakes") == [
        sum(counts) for counts in mistakes_per_epoch
    ]

    # the last epoch's counts are the mistakes of the trained model, counted independently
    _, eval_dataset, _ = load_digits_datasets()
    predictions = trainer.predict(eval_dataset, per_device_batch_size=64).argmax(dim=1)
    targets = [int(label) for _, label in eval_dataset]
    expected = [0] * 10
    for prediction, target in zip(predictions.tolist(), targets):
        expected[target] += prediction != target
    assert mistakes_per_epoch[-1] == expected


def test_accumulation_clipping_and_a_schedule_sized_to_the_run():
    result = accumulation_clipping_scheduler.main(
        ["--num-epochs", "2", "--warmup-epochs", "0.5", "--lr", "0.003"]
    )
    trainer, lrs = result["trainer"], result["learning_rates"]
    config = trainer.run_config

    assert (config.gradient_accumulation_steps, config.gradient_clip_norm) == (4, 1.0)
    updates_per_epoch = math.ceil(math.ceil(len(load_digits_datasets()[0]) / 16) / 4)
    assert trainer.completed_update_steps == len(lrs) == 2 * updates_per_epoch
    warmup = trainer.scheduler.num_warmup_steps
    assert warmup == round(0.5 * updates_per_epoch)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1 : warmup + 1]))  # linear warmup up to the peak
    assert lrs[warmup] == pytest.approx(0.003)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))  # then cosine decay
    assert lrs[-1] < 0.05 * 0.003


def test_the_schedule_ends_with_a_run_cut_short_by_max_steps():
    result = accumulation_clipping_scheduler.main(
        ["--num-epochs", "5", "--max-steps", "15", "--warmup-epochs", "0.25"]
    )
    lrs = result["learning_rates"]

    assert len(lrs) == 15 == result["trainer"].run_config.num_training_steps
    assert lrs[-1] < 0.05 * max(lrs)  # sized to 15 updates, not to 5 epochs


def test_the_resumable_example_stopped_by_a_signal_continues_exactly(tmp_path):
    import signal

    from pytorch_accelerated.trainer import TrainerCallback

    class InterruptAtUpdate30(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            if trainer.completed_update_steps == 30:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would

    settings = ["--num-epochs", "3", "--save-every", "10"]
    reference = resumable.main([*settings, "--run-dir", str(tmp_path / "reference")])
    assert reference.resumed_from is None and reference.test_accuracy > 0.8

    run_dir = tmp_path / "run"
    stopped = resumable.run(
        resumable.parse_args([*settings, "--run-dir", str(run_dir)]), callbacks=[InterruptAtUpdate30()]
    )
    # the save point follows the update
    assert (stopped.stopped_by_signal, stopped.test_accuracy, stopped.completed_update_steps) == (
        "SIGINT",
        None,
        30,
    )

    resumed = resumable.main([*settings, "--run-dir", str(run_dir)])
    assert resumed.resumed_from.name == "step-00000030"
    assert resumed.test_accuracy == reference.test_accuracy
    expected_log = (tmp_path / "reference" / "metrics.csv").read_text()
    assert (run_dir / "metrics.csv").read_text() == expected_log

    again = resumable.main([*settings, "--run-dir", str(run_dir)])  # a finished run only evaluates again
    assert again.resumed_from.name.endswith("-end") and again.test_accuracy == reference.test_accuracy
    assert (run_dir / "metrics.csv").read_text() == expected_log


# ---------------------------------------------------------------------------------- issue 27


@pytest.mark.parametrize("name", example_names())
def test_every_examples_help_shows_its_whole_summary_and_every_default(name, capsys):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"{name} needs {NEEDS[name]} (trainer-examples' extra)")
    module = importlib.import_module(f"pytorch_accelerated.examples.{name}")
    with pytest.raises(SystemExit):
        (getattr(module, "parse_args", None) or module.main)(["--help"])
    help_text = capsys.readouterr().out
    description = " ".join(help_text.split("\n\n")[1].split())
    summary = " ".join(module.__doc__.strip().split("\n\n")[0].split())
    assert description == summary and summary.endswith("."), (
        f"{name}: the description is cut: {description!r}"
    )
    options = re.split(r"\n(?=  -)", help_text.split("options:\n", 1)[1].split("\n\n")[0])
    without_default = [
        option.split()[0]
        for option in options
        if "(default: " not in " ".join(option.split()) and "--help" not in option
    ]
    assert not without_default, f"{name}: options whose --help shows no default: {without_default}"


def test_the_tensorboard_example_stopped_at_its_time_limit_goes_on_exactly(tmp_path, monkeypatch):
    """The TensorBoard and checkpoints example stopped by its time limit goes on exactly."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pytorch_accelerated.callbacks import training_state
    from pytorch_accelerated.examples import tensorboard_and_checkpoints as example
    from safetensors.torch import load_file

    settings = ["--num-epochs", "3", "--max-time", "00:00:00:40"]
    reference = example.main([*settings, "--run-dir", str(tmp_path / "reference")])
    assert not reference.stopped_by_time_limit and reference.completed_update_steps == 120

    clock = {"now": 0.0}  # a clock that advances a second each time the time limit is checked

    def a_second_later() -> float:
        clock["now"] += 1
        return clock["now"]

    monkeypatch.setattr(training_state.time, "monotonic", a_second_later)
    runs = []
    while not runs or runs[-1].stopped_by_time_limit:  # a job at a time, as a scheduler runs them
        runs.append(example.main([*settings, "--run-dir", str(tmp_path / "run")]))
    assert len(runs) > 2 and runs[1].resumed_from is not None
    assert (tmp_path / "run" / "metrics.csv").read_text() == (
        tmp_path / "reference" / "metrics.csv"
    ).read_text()

    result = runs[-1]
    assert [path.name for path in result.best_checkpoints] == [
        path.name for path in reference.best_checkpoints
    ]
    assert len(result.best_checkpoints) == 3 and all(path.is_file() for path in result.best_checkpoints)
    best = torch.load(next(iter(result.best_checkpoints)), weights_only=True)["model_state_dict"]
    exported = load_file(result.safetensors_path)
    assert all(torch.equal(exported[name], best[name]) for name in best)

    everything = {"images": 0, "histograms": 0, "scalars": 0}
    events = EventAccumulator(str(result.tensorboard_dir), size_guidance=everything)
    events.Reload()
    assert {"first_layer_weights", "validation_digits"} <= set(events.Tags()["images"])
    assert "first_layer_values" in events.Tags()["histograms"]
    for name in ("val_eval_accuracy", "noisy_eval_accuracy", "train_loss_step", "lr"):
        assert events.Scalars(name), name
