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
from .trainer import Trainer
from .state_format import find_latest_training_state, list_training_states
from . import testing  # noqa: E402  (the test kit for callback authors)

__version__ = "0.4.0"

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
    "DEFAULT_CALLBACKS",
    "MoveModulesToDeviceCallback",
    "TerminateOnNaNCallback",
    "PrintMetricsCallback",
    "ProgressBarCallback",
    "format_metric_value",
    "seed_everything",
    "testing",
]


# Names of pytorch-accelerated 0.1.61's ``pytorch_accelerated.trainer`` that are not kept: reading one
# raises an ImportError that says what to write instead (MIGRATING.md lists every 0.1.61 name).
_NOT_KEPT = {
    "TrainerWithTimmScheduler": "subclass Trainer and override scheduler_step() to call "
    "self.scheduler.step_update(num_updates=self.completed_update_steps), and train_epoch_end() to call "
    "self.scheduler.step(self.run_history.current_epoch)",
    "replace_trainer_placeholder_values": "call TrainerPlaceholderValues.fill(create_scheduler_fn, trainer.run_config)",
}


def __getattr__(name: str):
    if name in _NOT_KEPT:
        raise ImportError(
            f"pytorch_accelerated.trainer.{name} (pytorch-accelerated 0.1.61) is not kept: {_NOT_KEPT[name]}. "
            "See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
