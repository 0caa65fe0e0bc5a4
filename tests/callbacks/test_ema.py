"""ModelEmaCallback inside real training runs."""

import pytest
import torch

from pytorch_accelerated.callbacks import ModelEmaCallback, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_model, run_tiny_training


class WeightHistory(TrainerCallback):
    """The model's weights after every optimizer update."""

    def __init__(self):
        self.history = []

    def on_optimizer_step_end(self, trainer, **kwargs):
        self.history.append({k: v.detach().clone() for k, v in trainer.get_model().state_dict().items()})


def _expected_ema(initial, history, decay_for):
    ema = {k: v.clone() for k, v in initial.items()}
    for n, weights in enumerate(history):
        decay = decay_for(n)
        for name in ema:
            ema[name] = decay * ema[name] + (1 - decay) * weights[name]
    return ema


@pytest.mark.parametrize("use_warmup", [False, True])
def test_the_average_follows_the_formula_after_every_update(tmp_path, use_warmup):
    initial = make_tiny_model().state_dict()
    weights = WeightHistory()
    ema = ModelEmaCallback(
        decay=0.9, use_warmup=use_warmup, save_path=tmp_path / "ema.pt", evaluate_during_training=False
    )
    run_tiny_training(callbacks=[weights, ema], num_epochs=2, gradient_accumulation_steps=2)
    decay_for = (lambda n: min(0.9, (1 + n) / (10 + n))) if use_warmup else (lambda n: 0.9)
    expected = _expected_ema(initial, weights.history, decay_for)
    assert ema.num_updates == len(weights.history) == 8
    for name, value in expected.items():
        torch.testing.assert_close(ema.ema_state[name], value, rtol=1e-5, atol=1e-6)


def test_ema_is_evaluated_with_its_prefix_and_saved(tmp_path):
    path = tmp_path / "ema.pt"
    ema = ModelEmaCallback(decay=0.5, save_path=path)
    result = run_tiny_training(callbacks=[ema], num_epochs=3)
    assert len(result.metrics["ema_eval_loss"]) == 3
    assert len(result.metrics["eval_loss_epoch"]) == 3
    assert "eval_loss" not in result.metrics
    trainer = result.trainer
    # the model kept its own weights after the EMA evaluation and save
    own_weights = {k: v.clone() for k, v in trainer.get_model().state_dict().items()}
    assert ema.save_path == tmp_path / "version_0" / "ema.pt"  # the run's own folder: see test_run_folders.py
    trainer.load_checkpoint(ema.save_path, load_optimizer=False)
    for name, value in trainer.get_model().state_dict().items():
        torch.testing.assert_close(value, ema.ema_state[name])
    assert any(not torch.equal(own_weights[k], ema.ema_state[k]) for k in own_weights)


def test_ema_evaluates_each_named_eval_set_once_under_its_name(tmp_path):
    from pytorch_accelerated.trainer import Trainer
    from pytorch_accelerated.trainer.testing import make_tiny_dataset

    model = make_tiny_model()
    ema = ModelEmaCallback(decay=0.5, save_path=None)
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[ema]
    )
    eval_sets = {"val": make_tiny_dataset(16, seed=1), "ood": make_tiny_dataset(16, seed=2)}
    history = trainer.train(
        make_tiny_dataset(32), num_epochs=2, eval_dataset=eval_sets, per_device_batch_size=8
    )
    ema_names = sorted(name for name in history.get_metric_names() if "ema_" in name)
    assert ema_names == [
        "ood_ema_eval_loss",
        "val_ema_eval_loss",
    ], "each set's EMA evaluation once, after that set's"
    assert len(history.get_metric_values("val_ema_eval_loss")) == 2


def test_ema_eval_loss_matches_evaluating_the_ema_weights_directly(tmp_path):
    ema = ModelEmaCallback(decay=0.8, save_path=None)
    result = run_tiny_training(callbacks=[ema], num_epochs=2)
    trainer = result.trainer
    with ema.ema_weights_in(trainer):
        direct = trainer.evaluate()["eval_loss"]
    assert result.metrics["ema_eval_loss"][-1] == pytest.approx(direct, rel=1e-6)


def test_ema_skips_updates_that_the_optimizer_skipped(tmp_path):
    class SkipEverySecond(TrainerCallback):
        def on_optimizer_step_end(self, trainer, **kwargs):
            trainer.optimizer_step_was_skipped = trainer.completed_update_steps % 2 == 0

    ema = ModelEmaCallback(decay=0.9, save_path=None, evaluate_during_training=False)
    run_tiny_training(callbacks=[SkipEverySecond(), ema], num_epochs=1)
    assert ema.num_updates == 4


def test_ema_state_round_trip_continues_the_average(tmp_path):
    ema = ModelEmaCallback(decay=0.9, save_path=None, evaluate_during_training=False)
    run_tiny_training(callbacks=[ema], num_epochs=1)
    restored = ModelEmaCallback(decay=0.9, save_path=None, evaluate_during_training=False)
    restored.load_state_dict(ema.state_dict())
    assert restored.num_updates == ema.num_updates
    run_tiny_training(callbacks=[restored], num_epochs=1)
    assert restored.num_updates == 2 * ema.num_updates


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay"):
        ModelEmaCallback(decay=1.0)
