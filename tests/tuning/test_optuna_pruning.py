"""OptunaPruningCallback in real studies: several trials in one process, pruning that ends the run
cleanly and marks the trial pruned."""

import pytest
import torch

optuna = pytest.importorskip("optuna")

from pytorch_accelerated.trainer import Trainer  # noqa: E402
from pytorch_accelerated.trainer.testing import EventRecorder, make_tiny_dataset, make_tiny_model  # noqa: E402
from pytorch_accelerated.tuning import OptunaPruningCallback  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def objective_with(recorders):
    def objective(trial):
        lr = trial.suggest_float("lr", 1e-3, 0.5, log=True)
        model = make_tiny_model()
        recorder = EventRecorder()
        recorders.append(recorder)
        trainer = Trainer(
            model,
            torch.nn.CrossEntropyLoss(),
            torch.optim.SGD(model.parameters(), lr=lr),
            callbacks=[recorder, OptunaPruningCallback(trial)],
        )
        trainer.train(make_tiny_dataset(64), num_epochs=3, eval_dataset=make_tiny_dataset(32, seed=1))
        return trainer.run_history.get_latest_metric("eval_loss_epoch")

    return objective


def test_several_trials_in_one_process_each_with_its_own_trainer():
    recorders = []
    study = optuna.create_study(
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner()
    )
    study.optimize(objective_with(recorders), n_trials=3)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == [1, 2, 3]
        assert trial.value == trial.intermediate_values[3]  # the last epoch's eval_loss_epoch
    assert len({trial.value for trial in study.trials}) == 3


def test_a_pruned_trial_ends_its_run_cleanly_and_is_recorded_as_pruned():
    recorders = []
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # any loss prunes
    study.optimize(objective_with(recorders), n_trials=2)
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert list(study.trials[0].intermediate_values) == [1]
    events = recorders[0].events
    assert events.count("on_train_epoch_end") == 1  # stopped after the first epoch
    assert events[-3:] == ["on_stop_training_error", "on_save_point", "on_training_run_end"]


def test_it_must_be_the_last_callback():
    study = optuna.create_study()
    trial = study.ask()
    model = make_tiny_model()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[OptunaPruningCallback(trial), EventRecorder()],
    )
    with pytest.raises(ValueError, match="last callback"):
        trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset=make_tiny_dataset(8, seed=1))
