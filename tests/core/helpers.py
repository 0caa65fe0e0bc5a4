"""Building blocks shared by the tests (the public test kit is pytorch_accelerated.trainer.testing).

Scenario scripts launched as processes import it as ``helpers`` (beside the script), test modules as
``.helpers`` or ``tests.core.helpers``.
"""

from datetime import timedelta

import torch
from accelerate.utils import InitProcessGroupKwargs

from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

SGD_MOMENTUM = {"momentum": 0.9}  # optimizer_kwargs of the tests whose optimizer keeps a state


def make_trainer(
    callbacks=(),
    lr=0.05,
    trainer_class=Trainer,
    model=None,
    optimizer_class=torch.optim.SGD,
    optimizer_kwargs=None,
    loss_func=None,
    **trainer_kwargs,
):
    """A Trainer of ``model`` (a tiny classifier by default) trained by ``optimizer_class`` at ``lr``.

    Args:
        callbacks: the Trainer's callbacks (none by default, not the default callbacks).
        lr: the optimizer's learning rate.
        trainer_class: the Trainer or a subclass.
        model: the model; a new ``make_tiny_model()`` when None.
        optimizer_class: the optimizer's class.
        optimizer_kwargs: further optimizer arguments (``{"momentum": 0.9}``).
        loss_func: the loss; cross-entropy when None.
        trainer_kwargs: further Trainer arguments (``accelerator_kwargs``).
    """
    model = model if model is not None else make_tiny_model()
    return trainer_class(
        model=model,
        loss_func=loss_func if loss_func is not None else torch.nn.CrossEntropyLoss(),
        optimizer=optimizer_class(model.parameters(), lr=lr, **(optimizer_kwargs or {})),
        callbacks=callbacks,
        **trainer_kwargs,
    )


def accelerator_device_available() -> bool:
    if hasattr(torch, "accelerator"):
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


def make_gloo_trainer(
    callbacks=(),
    lr=0.1,
    model=None,
    timeout_s=60,
    mixed_precision=None,
    force_cpu=True,
    accelerator_kwargs=None,
    **make_trainer_kwargs,
):
    """``make_trainer`` for launched processes, on gloo: a collective fails after ``timeout_s``, never hangs.

    Args:
        callbacks: the Trainer's callbacks.
        lr: the optimizer's learning rate.
        model: the model; a new ``make_tiny_model()`` when None.
        timeout_s: the process group's timeout.
        mixed_precision: passed to accelerate where given (else accelerate reads it from the launch).
        force_cpu: False passes no ``cpu`` argument where the machine has no accelerator, so that the
            Trainer must find out by itself that it runs on several CPU processes.
        accelerator_kwargs: further accelerate arguments (``fsdp_plugin``).
        make_trainer_kwargs: further ``make_trainer`` arguments.
    """
    timeout = timedelta(seconds=timeout_s)
    kwargs = {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo", timeout=timeout)]}
    if force_cpu or accelerator_device_available():
        kwargs["cpu"] = True
    if mixed_precision is not None:
        kwargs["mixed_precision"] = mixed_precision
    kwargs.update(accelerator_kwargs or {})
    return make_trainer(callbacks, lr=lr, model=model, accelerator_kwargs=kwargs, **make_trainer_kwargs)


def parameters_of(model):
    return [p.detach().clone() for p in model.parameters()]


class LrRecorder(TrainerCallback):
    """The lr each optimizer update used, and the lr set after it (param group 0)."""

    def __init__(self):
        self.used: list[float] = []
        self.after: list[float] = []

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        self.used.append(optimizer.param_groups[0]["lr"])

    def on_optimizer_step_end(self, trainer, optimizer, **kwargs):
        self.after.append(optimizer.param_groups[0]["lr"])


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
    "make_trainer",
    "make_gloo_trainer",
    "SGD_MOMENTUM",
    "accelerator_device_available",
    "parameters_of",
    "LrRecorder",
    "CallCounter",
    "is_running",
    "make_tiny_dataset",
    "make_tiny_model",
]
