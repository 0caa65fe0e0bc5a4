"""ModelSummaryCallback inside real runs: rows, printing once, compiled models, the run history."""

import torch

from pytorch_accelerated.callbacks import ModelSummaryCallback, ModuleSummary, summarize_model
from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model, run_tiny_training

TINY_ROWS = [
    ModuleSummary("0", "Linear", 80, 80, 80 * 4 / 1e6),
    ModuleSummary("1", "ReLU", 0, 0, 0.0),
    ModuleSummary("2", "Linear", 51, 51, 51 * 4 / 1e6),
]


def test_the_summary_is_printed_once_and_its_totals_recorded(capsys):
    callback = ModelSummaryCallback()
    result = run_tiny_training(callbacks=[callback], num_epochs=1)
    out = capsys.readouterr().out
    assert out.count("Model summary (Sequential)") == 1
    assert "total" in out and "131" in out
    assert callback.summary == TINY_ROWS
    assert result.metrics["model_parameters"] == [131]
    assert result.metrics["model_trainable_parameters"] == [131]
    assert result.metrics["model_frozen_parameters"] == [0]

    # a second run of the same model prints nothing; after freezing a layer it prints again
    trainer = result.trainer
    trainer.train(make_tiny_dataset(16), num_epochs=1)
    assert "Model summary" not in capsys.readouterr().out
    for parameter in trainer.get_model()[0].parameters():
        parameter.requires_grad_(False)
    trainer.train(make_tiny_dataset(16), num_epochs=1)
    out = capsys.readouterr().out
    assert out.count("Model summary") == 1
    assert callback.summary[0].frozen_parameters == 80 and callback.totals()["trainable_parameters"] == 51


def test_printing_can_be_turned_off(capsys):
    result = run_tiny_training(callbacks=[ModelSummaryCallback(print_summary=False)], num_epochs=1)
    assert "Model summary" not in capsys.readouterr().out
    assert result.metrics["model_parameters"] == [131]


def test_buffers_count_in_the_size_and_frozen_parameters_as_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)
    rows = summarize_model(model)
    assert rows[0] == ModuleSummary("0", "Linear", 40, 8, 40 * 4 / 1e6)
    # BatchNorm: 16 parameters, running mean and var (8 + 8 floats) and num_batches_tracked (one int64)
    assert rows[1] == ModuleSummary("1", "BatchNorm1d", 16, 16, (16 + 16) * 4 / 1e6 + 8 / 1e6)


def test_a_compiled_model_is_summarized_as_the_model_itself(capsys):
    model = make_tiny_model()
    callback = ModelSummaryCallback()
    trainer = Trainer(
        model=torch.compile(model, backend="eager"),
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[callback],
    )
    trainer.train(make_tiny_dataset(16), num_epochs=1)
    assert callback.summary == TINY_ROWS
    assert "_orig_mod" not in capsys.readouterr().out


def test_the_totals_are_in_the_run_config_that_mlflow_logs_as_parameters(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from pytorch_accelerated.callbacks import MLflowLoggerCallback

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    store = tmp_path / "mlruns"
    logger = MLflowLoggerCallback(experiment_name="tests", tracking_uri=store)
    result = run_tiny_training(callbacks=[ModelSummaryCallback(print_summary=False), logger], num_epochs=1)
    assert result.trainer.run_config.extra["model_parameters"] == 131
    assert result.trainer.run_config.to_dict()["model_trainable_parameters"] == 131
    params = MlflowClient(store.resolve().as_uri()).get_run(logger.run_id).data.params
    assert params["model_parameters"] == "131" and params["model_frozen_parameters"] == "0"
    assert params["num_epochs"] == "1"
