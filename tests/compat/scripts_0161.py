"""Four training scripts as a pytorch-accelerated 0.1.61 user writes them, following its documented
API and the shape of its ``examples/core`` (written here from its documentation, not copied):
the MNIST quickstart, metrics computed in a callback, metrics computed in a Trainer subclass, and a
custom callback event. Only the data differs: each ``main`` takes the dataset that those scripts
load with ``torchvision.datasets.MNIST(..., transform=ToTensor())`` (images of shape (1, 28, 28),
ten classes), so that the tests can pass a small synthetic one.
"""

from torch import nn, optim
from torch.utils.data import random_split
from torchmetrics import Accuracy, MetricCollection, Precision, Recall

from pytorch_accelerated import Trainer
from pytorch_accelerated.callbacks import (
    LogMetricsCallback,
    PrintProgressCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    TrainerCallback,
)
from pytorch_accelerated.trainer import DEFAULT_CALLBACKS


class MNISTModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Linear(in_features=784, out_features=128),
            nn.ReLU(),
            nn.Linear(in_features=128, out_features=64),
            nn.ReLU(),
            nn.Linear(in_features=64, out_features=10),
        )

    def forward(self, x):
        return self.main(x.view(x.shape[0], -1))


def _three_way_split(dataset):
    num_eval = len(dataset) // 12
    return random_split(dataset, [len(dataset) - 2 * num_eval, num_eval, num_eval])


# ---------------------------------------------------------------- the quickstart


def train_mnist(dataset, num_epochs=2, batch_size=32):
    train_dataset, validation_dataset, test_dataset = _three_way_split(dataset)
    model = MNISTModel()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()

    trainer = Trainer(model, loss_func=loss_func, optimizer=optimizer)
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        num_epochs=num_epochs,
        per_device_batch_size=batch_size,
    )
    trainer.evaluate(dataset=test_dataset, per_device_batch_size=64)
    return trainer


# ---------------------------------------------------------------- metrics in a callback


class ClassificationMetricsCallback(TrainerCallback):
    def __init__(self, num_classes):
        self.metrics = MetricCollection(
            {
                "accuracy": Accuracy(task="multiclass", num_classes=num_classes),
                "precision": Precision(task="multiclass", num_classes=num_classes, average="macro"),
                "recall": Recall(task="multiclass", num_classes=num_classes, average="macro"),
            }
        )

    def _move_to_device(self, trainer):
        self.metrics.to(trainer.device)

    def on_training_run_start(self, trainer, **kwargs):
        self._move_to_device(trainer)

    def on_evaluation_run_start(self, trainer, **kwargs):
        self._move_to_device(trainer)

    def on_eval_step_end(self, trainer, batch, batch_output, **kwargs):
        preds = batch_output["model_outputs"].argmax(dim=-1)
        self.metrics.update(preds, batch[1])

    def on_eval_epoch_end(self, trainer, **kwargs):
        metrics = self.metrics.compute()
        trainer.run_history.update_metric("accuracy", metrics["accuracy"].cpu())
        trainer.run_history.update_metric("precision", metrics["precision"].cpu())
        trainer.run_history.update_metric("recall", metrics["recall"].cpu())
        self.metrics.reset()


def train_with_metrics_in_callback(dataset, num_epochs=2, batch_size=32):
    num_classes = 10
    train_dataset, validation_dataset, test_dataset = _three_way_split(dataset)
    model = MNISTModel()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()

    trainer = Trainer(
        model,
        loss_func=loss_func,
        optimizer=optimizer,
        callbacks=(ClassificationMetricsCallback(num_classes=num_classes), *DEFAULT_CALLBACKS),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        num_epochs=num_epochs,
        per_device_batch_size=batch_size,
    )
    trainer.evaluate(dataset=test_dataset, per_device_batch_size=64)
    return trainer


# ---------------------------------------------------------------- metrics in a Trainer subclass


class TrainerWithMetrics(Trainer):
    def __init__(self, num_classes, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # an nn.Module attribute: the default MoveModulesToDeviceCallback moves it to the device
        self.metrics = MetricCollection(
            {
                "accuracy": Accuracy(task="multiclass", num_classes=num_classes),
                "precision": Precision(task="multiclass", num_classes=num_classes, average="macro"),
                "recall": Recall(task="multiclass", num_classes=num_classes, average="macro"),
            }
        )

    def calculate_eval_batch_loss(self, batch):
        batch_output = super().calculate_eval_batch_loss(batch)
        preds = batch_output["model_outputs"].argmax(dim=-1)
        self.metrics.update(preds, batch[1])
        return batch_output

    def eval_epoch_end(self):
        metrics = self.metrics.compute()
        self.run_history.update_metric("accuracy", metrics["accuracy"].cpu())
        self.run_history.update_metric("precision", metrics["precision"].cpu())
        self.run_history.update_metric("recall", metrics["recall"].cpu())
        self.metrics.reset()


def train_with_metrics_in_loop(dataset, num_epochs=2, batch_size=32):
    train_dataset, validation_dataset, test_dataset = _three_way_split(dataset)
    model = MNISTModel()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()

    trainer = TrainerWithMetrics(model=model, loss_func=loss_func, optimizer=optimizer, num_classes=10)
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        num_epochs=num_epochs,
        per_device_batch_size=batch_size,
    )
    trainer.evaluate(dataset=test_dataset, per_device_batch_size=64)
    return trainer


# ---------------------------------------------------------------- a custom callback event


class VerifyBatchCallback(TrainerCallback):
    def __init__(self):
        self.num_verified = 0

    def verify_train_batch(self, trainer, xb, yb):
        assert xb.shape[0] == trainer.run_config.train_per_device_batch_size
        assert xb.shape[1] == 1
        assert xb.shape[2] == 28
        assert xb.shape[3] == 28
        assert yb.shape[0] == trainer.run_config.train_per_device_batch_size
        self.num_verified += 1


class TrainerWithCustomCallbackEvent(Trainer):
    def calculate_train_batch_loss(self, batch) -> dict:
        xb, yb = batch
        self.callback_handler.call_event("verify_train_batch", trainer=self, xb=xb, yb=yb)
        return super().calculate_train_batch_loss(batch)


def custom_callback_event(dataset, num_epochs=2, batch_size=32):
    train_dataset, validation_dataset = random_split(
        dataset, [len(dataset) - len(dataset) // 12, len(dataset) // 12]
    )
    model = MNISTModel()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_func = nn.CrossEntropyLoss()

    trainer = TrainerWithCustomCallbackEvent(
        model,
        loss_func=loss_func,
        optimizer=optimizer,
        callbacks=(
            VerifyBatchCallback,
            TerminateOnNaNCallback,
            PrintProgressCallback,
            ProgressBarCallback,
            LogMetricsCallback,
        ),
    )
    trainer.train(
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        train_dataloader_kwargs={"drop_last": True},
        num_epochs=num_epochs,
        per_device_batch_size=batch_size,
    )
    return trainer
