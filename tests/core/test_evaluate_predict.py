"""evaluate() and predict() on a single process (the multi-process cases are in test_distributed)."""

import pytest
import torch
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import EventRecorder, make_tiny_dataset

from .helpers import make_trainer


def _reference_loss(model, dataset):
    inputs, targets = dataset.tensors
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(inputs), targets).item()


def test_evaluate_weights_the_loss_by_samples_over_an_uneven_last_batch():
    """Evaluate records the sample-weighted loss over an uneven last batch."""
    recorder = EventRecorder()
    trainer = make_trainer(callbacks=[recorder])
    dataset = make_tiny_dataset(37)
    metrics = trainer.evaluate(dataset, per_device_batch_size=5)
    assert metrics == {"eval_loss": pytest.approx(_reference_loss(trainer.get_model(), dataset), rel=1e-6)}
    assert recorder.events[1:3] == ["on_evaluation_run_start", "on_eval_epoch_start"]
    assert recorder.events[-2:] == ["on_eval_epoch_end", "on_evaluation_run_end"]
    assert recorder.events.count("on_eval_step_end") == 8


def test_evaluate_returns_every_metric_recorded_during_it():
    class Accuracy(TrainerCallback):
        def on_eval_epoch_start(self, trainer, **kwargs):
            self.correct = self.total = 0

        def on_eval_step_end(self, trainer, batch, batch_output, **kwargs):
            self.correct += (batch_output["model_outputs"].argmax(1) == batch[1]).sum().item()
            self.total += batch_output["batch_size"]

        def on_eval_epoch_end(self, trainer, **kwargs):
            trainer.run_history.update_metric("eval_accuracy", self.correct / self.total)

    trainer = make_trainer(callbacks=[Accuracy()])
    metrics = trainer.evaluate(make_tiny_dataset(20))
    assert set(metrics) == {"eval_loss", "eval_accuracy"}
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0


def test_evaluate_uses_the_last_eval_dataset_and_needs_one():
    trainer = make_trainer()
    with pytest.raises(ValueError, match="evaluate\\(\\) needs a dataset"):
        trainer.evaluate()
    trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset=make_tiny_dataset(12, seed=3))
    assert trainer.evaluate()["eval_loss"] == pytest.approx(
        trainer.run_history.get_latest_metric("eval_loss_epoch"), rel=1e-6
    )


def test_evaluation_does_not_touch_weights_or_build_graphs():
    class GradCheck(TrainerCallback):
        def on_eval_step_end(self, trainer, batch, batch_output, **kwargs):
            assert not batch_output["loss"].requires_grad

    trainer = make_trainer(callbacks=[GradCheck()])
    before = [p.clone() for p in trainer.model.parameters()]
    trainer.evaluate(make_tiny_dataset(16))
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_predict_returns_every_sample_once_in_order():
    trainer = make_trainer()
    dataset = make_tiny_dataset(23)
    predictions = trainer.predict(dataset, per_device_batch_size=4)
    with torch.no_grad():
        expected = trainer.get_model()(dataset.tensors[0])
    torch.testing.assert_close(predictions, expected)


def test_predict_concatenates_dict_and_tuple_outputs():
    class TwoHeads(Trainer):
        def calculate_batch_predictions(self, batch):
            logits = self.model(batch[0])
            return {"logits": logits, "pair": (logits.argmax(1), batch[1])}

    trainer = make_trainer(trainer_class=TwoHeads)
    dataset = make_tiny_dataset(10)
    predictions = trainer.predict(dataset, per_device_batch_size=3)
    assert predictions["logits"].shape == (10, 3)
    assert torch.equal(predictions["pair"][1], dataset.tensors[1])


def test_predict_refuses_shuffling():
    with pytest.raises(ValueError, match="dataset order"):
        make_trainer().predict(make_tiny_dataset(4), dataloader_kwargs={"shuffle": True})


def test_predict_on_unlabelled_inputs():
    trainer = make_trainer()
    inputs = torch.randn(7, 4)
    predictions = trainer.predict(TensorDataset(inputs), per_device_batch_size=2)
    assert predictions.shape == (7, 3)


def test_predict_and_evaluate_restore_the_models_mode():
    trainer = make_trainer()
    trainer.model.train()
    trainer.predict(make_tiny_dataset(4))
    trainer.evaluate(make_tiny_dataset(4))
    assert trainer.model.training


def test_several_eval_sets_are_each_evaluated_and_named():
    trainer = make_trainer()
    sets = {"val": make_tiny_dataset(16, seed=1), "ood": make_tiny_dataset(8, seed=2)}
    trainer.train(make_tiny_dataset(32), num_epochs=2, eval_dataset=sets, per_device_batch_size=8)
    history = trainer.run_history
    assert {"val_eval_loss_epoch", "ood_eval_loss_epoch"} <= set(history.get_metric_names())
    assert "eval_loss_epoch" not in history.get_metric_names()
    for name, dataset in sets.items():
        records = history.get_metric_records(f"{name}_eval_loss_epoch")
        assert [record.evaluation for record in records] == [name, name], "each set names its evaluation"
        assert records[-1].value == pytest.approx(_reference_loss(trainer.get_model(), dataset), rel=1e-5)
    assert set(trainer.evaluate()) == {"val_eval_loss", "ood_eval_loss"}  # no dataset: every set of the run
    assert trainer.run_config.eval_dataloader_len == 2 + 1


def test_a_list_of_eval_sets_is_refused_with_the_dict_to_pass_instead():
    trainer = make_trainer()
    with pytest.raises(TypeError, match=r"eval_dataset=\{'val': val_set, 'ood': ood_set\}"):
        trainer.train(
            make_tiny_dataset(16), num_epochs=1, eval_dataset=[make_tiny_dataset(4), make_tiny_dataset(4)]
        )
    with pytest.raises(ValueError, match="not a usable name"):
        trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset={"my set": make_tiny_dataset(4)})
    samples = [(torch.zeros(4), torch.tensor(0))] * 4  # a list of samples is a dataset, not a list of sets
    trainer.train(make_tiny_dataset(16), num_epochs=1, eval_dataset=samples, per_device_batch_size=4)


def test_predict_leaves_per_batch_scalars_out_of_per_sample_outputs():
    class TransformersLike(Trainer):
        def calculate_batch_predictions(self, batch):
            logits = self.model(batch[0])
            return {"loss": logits.mean(), "logits": logits}

    class TupleOutputs(Trainer):
        def calculate_batch_predictions(self, batch):
            logits = self.model(batch[0])
            return logits.mean(), logits

    dataset = make_tiny_dataset(10)
    predictions = make_trainer(trainer_class=TransformersLike).predict(dataset, per_device_batch_size=4)
    assert set(predictions) == {"logits"} and predictions["logits"].shape == (10, 3)
    loss, logits = make_trainer(trainer_class=TupleOutputs).predict(dataset, per_device_batch_size=4)
    assert loss is None and logits.shape == (10, 3)


def test_predict_refuses_one_scalar_per_batch():
    class OneScalar(Trainer):
        def calculate_batch_predictions(self, batch):
            return self.model(batch[0]).mean()

    with pytest.raises(TypeError, match="one scalar for a batch of 4 samples"):
        make_trainer(trainer_class=OneScalar).predict(make_tiny_dataset(8), per_device_batch_size=4)
