"""The examples of the training and tuning tools, on tiny sizes."""

import json

import pytest

from pytorch_accelerated.examples import training_tools


def test_training_tools(tmp_path, capsys):
    result = training_tools.main(["--num-epochs", "4", "--profile-dir", str(tmp_path / "profile")])
    out = capsys.readouterr().out
    assert "Model summary (DigitsMLP)" in out and "with the averaged weights" in out
    assert (
        len(result["grad_norms"])
        == len(result["grad_norms_clipped"])
        == result["trainer"].completed_update_steps
    )
    assert max(result["grad_norms_clipped"]) <= 1.0 + 1e-5
    traces = list((tmp_path / "profile").glob("rank0.*.pt.trace.json"))
    assert len(traces) == 1 and "traceEvents" in json.loads(traces[0].read_text())


def test_tuning_tools(tmp_path, capsys):
    pytest.importorskip("pytorch_accelerated.tuning", reason="needs trainer-examples[tuning]")
    from pytorch_accelerated.examples import tuning_tools

    result = tuning_tools.main(
        [
            "--num-epochs",
            "1",
            "--max-steps",
            "3",
            "--lr-finder-steps",
            "30",
            "--plot",
            str(tmp_path / "lr.png"),
        ]
    )
    out = capsys.readouterr().out
    assert "suggested lr" in out and "find_batch_size: not supported on CPU" in out
    assert (tmp_path / "lr.png").is_file()
    assert result["trainer"].optimizer.param_groups[0]["lr"] == result["lr_finder"].suggestion


def test_optuna_search(capsys):
    pytest.importorskip("optuna", reason="needs trainer-examples[tuning]")
    pytest.importorskip("pytorch_accelerated.tuning", reason="needs trainer-examples[tuning]")
    from pytorch_accelerated.examples import optuna_search

    study = optuna_search.main(["--num-trials", "4", "--num-epochs", "2", "--max-steps", "10"])["study"]
    assert len(study.trials) == 4
    assert "4 trials" in capsys.readouterr().out
