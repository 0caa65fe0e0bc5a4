"""Small building blocks for the core tests (the public test kit lives in pytorch_accelerated.trainer.testing)."""

import torch

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model


def make_trainer(callbacks=(), lr=0.05, trainer_class=Trainer, model=None, optimizer_class=torch.optim.SGD, **kwargs):
    model = model if model is not None else make_tiny_model()
    return trainer_class(
        model=model,
        loss_func=torch.nn.CrossEntropyLoss(),
        optimizer=optimizer_class(model.parameters(), lr=lr),
        callbacks=callbacks,
        **kwargs,
    )


def parameters_of(model):
    return [p.detach().clone() for p in model.parameters()]


class CallCounter(TrainerCallback):
    """Counts every event it receives by name, and keeps the keyword arguments of the last call."""

    def __init__(self):
        self.counts = {}
        self.last_kwargs = {}

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def record(trainer, **kwargs):
                self.counts[name] = self.counts.get(name, 0) + 1
                self.last_kwargs[name] = kwargs
            return record
        return super().__getattribute__(name)


def is_running(pid: int) -> bool:
    """Whether process ``pid`` is alive: not a zombie its new parent (init, after a kill) has not reaped."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


__all__ = [
    "make_trainer", "parameters_of", "CallCounter", "is_running", "make_tiny_dataset", "make_tiny_model",
]  # fmt: skip
