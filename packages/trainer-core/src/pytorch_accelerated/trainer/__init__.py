"""pytorch_accelerated.trainer: the training loop, its hooks and callback protocol.

Everything in ``__all__`` is the public interface that plug-in packages build on; anything
else (private modules, names starting with an underscore) may change without notice.
"""

from .callbacks import EVENT_SYNONYMS, TRAINER_EVENTS, CallbackHandler, StopTrainingError, TrainerCallback
from .safe_files import CheckpointError, atomic_torch_save, check_plain_data, safe_torch_load
from .default_callbacks import (
    DEFAULT_CALLBACKS,
    MoveModulesToDeviceCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    format_metric_value,
)
from .position import RunPosition
from .run_config import TrainerPlaceholderValues, TrainerRunConfig
from .run_history import InMemoryRunHistory, MetricRecord, RunHistory
from .running_loss import RunningLoss
from .seeding import seed_everything
from .agreement import raised_on_every_process
from .trainer import Trainer
from .state_format import find_latest_training_state, list_training_states, remove_training_state
from . import testing  # noqa: E402  (the test kit for callback authors)

__version__ = "0.5.0"

__all__ = [
    "Trainer",
    "TrainerCallback",
    "CallbackHandler",
    "StopTrainingError",
    "TRAINER_EVENTS",
    "EVENT_SYNONYMS",
    "TrainerPlaceholderValues",
    "TrainerRunConfig",
    "RunHistory",
    "InMemoryRunHistory",
    "MetricRecord",
    "RunPosition",
    "RunningLoss",
    "CheckpointError",
    "atomic_torch_save",
    "safe_torch_load",
    "check_plain_data",
    "find_latest_training_state",
    "list_training_states",
    "remove_training_state",
    "DEFAULT_CALLBACKS",
    "MoveModulesToDeviceCallback",
    "TerminateOnNaNCallback",
    "PrintMetricsCallback",
    "ProgressBarCallback",
    "format_metric_value",
    "seed_everything",
    "raised_on_every_process",
    "testing",
]


# pytorch-accelerated 0.1.61's ``pytorch_accelerated.trainer`` re-exported these names of its other modules.
# They are not this package's interface (not in __all__): each is read, when first asked for, from where
# it lives now; those of trainer-callbacks only if it is installed (the core never needs them).
_KEPT_ELSEWHERE = {
    "LossTracker": ("pytorch_accelerated.tracking", "trainer-core"),
    "remove_padding": ("pytorch_accelerated.utils", "trainer-core"),
    "worker_init_fn": ("pytorch_accelerated.utils", "trainer-core"),
    "LimitBatchesCallback": ("pytorch_accelerated.callbacks", "trainer-callbacks"),
    "LogMetricsCallback": ("pytorch_accelerated.callbacks", "trainer-callbacks"),
    "PrintProgressCallback": ("pytorch_accelerated.callbacks", "trainer-callbacks"),
}

# Names of pytorch-accelerated 0.1.61's ``pytorch_accelerated.trainer`` that are not kept: reading one
# raises an ImportError that says what to write instead (MIGRATING.md lists every 0.1.61 name).
_NOT_KEPT = {
    "TrainerWithTimmScheduler": (
        "subclass Trainer and override scheduler_step() to call "
        "self.scheduler.step_update(num_updates=self.completed_update_steps), and train_epoch_end() to call "
        "self.scheduler.step(self.run_history.current_epoch)"
    ),
    "replace_trainer_placeholder_values": (
        "call TrainerPlaceholderValues.fill(create_scheduler_fn, trainer.run_config)"
    ),
    "LIMIT_BATCHES_ENV_VAR": (
        "the PT_ACC_LIMIT_BATCHES variable is not read: pass "
        "LimitBatchesCallback(num_batches) (pytorch_accelerated.callbacks) in the Trainer's callbacks"
    ),
}


def __getattr__(name: str):
    if name in _KEPT_ELSEWHERE:
        return _kept_elsewhere(name)
    if name in _NOT_KEPT:
        raise ImportError(
            f"pytorch_accelerated.trainer.{name} (pytorch-accelerated 0.1.61) is not kept: {_NOT_KEPT[name]}."
            " See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _kept_elsewhere(name: str):
    from importlib import import_module

    module_name, distribution = _KEPT_ELSEWHERE[name]
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise ImportError(
            f"pytorch_accelerated.trainer.{name} (pytorch-accelerated 0.1.61) lives in {module_name} now, "
            f"which is installed by {distribution}: pip install {distribution}, then import it from "
            f"{module_name}.",
            name=name,
        ) from None
    return getattr(module, name)
