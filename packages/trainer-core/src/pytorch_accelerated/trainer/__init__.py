"""pytorch_accelerated.trainer: the training loop, its hooks and callback protocol.

Everything in ``__all__`` is the public interface that plug-in packages build on; anything
else (private modules, names starting with an underscore) may change without notice.
"""

from .callbacks import EVENT_SYNONYMS, TRAINER_EVENTS, CallbackHandler, StopTrainingError, TrainerCallback
from .checkpointing import CheckpointError, atomic_torch_save, check_plain_data, safe_torch_load
from .default_callbacks import (
    DEFAULT_CALLBACKS,
    MoveModulesToDeviceCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    format_metric_value,
)
from .run_config import TrainerPlaceholderValues, TrainerRunConfig
from .run_history import InMemoryRunHistory, RunHistory
from .seeding import seed_everything
from .trainer import Trainer
from .training_state import find_latest_training_state, list_training_states
from . import testing  # noqa: E402  (the test kit for callback authors)

__version__ = "0.2.0"

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
