"""pytorch_accelerated.callbacks: callbacks for the pytorch_accelerated Trainer.

The core's callback protocol and default callbacks are re-exported, so that
``from pytorch_accelerated.callbacks import TrainerCallback, EarlyStoppingCallback`` works.
Loggers with optional dependencies import them only when created. The callbacks of
pytorch-accelerated 0.1.61 that were replaced (``LogMetricsCallback``, ``PrintProgressCallback``,
``get_default_callbacks``) are kept in :mod:`.legacy` with their meaning.
"""

from pytorch_accelerated.trainer import (
    DEFAULT_CALLBACKS,
    CallbackHandler,
    MoveModulesToDeviceCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
    StopTrainingError,
    TerminateOnNaNCallback,
    TrainerCallback,
)

from .ema import ModelEmaCallback
from .gradient_norms import BEFORE_GRADIENT_CLIPPING_EVENT, GradientClippingEventMixin, GradientNormCallback
from .metric_scheduler import MetricSchedulerCallback
from .model_summary import ModelSummaryCallback, ModuleSummary, format_model_summary, summarize_model
from .legacy import LogMetricsCallback, PrintProgressCallback, get_default_callbacks
from .exporting import save_model_safetensors
from .loggers import CSVLoggerCallback, JSONLinesLoggerCallback, MetricsLoggerCallback, note_weights_from
from .trackers import MLflowLoggerCallback, TensorBoardLoggerCallback, TrackerCallback
from .monitors import LearningRateMonitorCallback, ThroughputMonitorCallback
from .plotting import PlotMetricsCallback
from .profiler import ProfilerCallback
from .swa import StochasticWeightAveragingCallback
from .training_state import SaveTrainingStateCallback
from .training_control import (
    ConvertSyncBatchNormCallback,
    FastDevRun,
    LimitBatchesCallback,
    LimitEvalStepsCallback,
    OverfitBatches,
    StepBasedEvaluationCallback,
)
from .watching import EarlyStoppingCallback, SaveBestModelCallback

__version__ = "0.5.0"

__all__ = [
    "TrainerCallback",
    "CallbackHandler",
    "StopTrainingError",
    "DEFAULT_CALLBACKS",
    "MoveModulesToDeviceCallback",
    "TerminateOnNaNCallback",
    "PrintMetricsCallback",
    "ProgressBarCallback",
    "EarlyStoppingCallback",
    "SaveBestModelCallback",
    "SaveTrainingStateCallback",
    "ModelEmaCallback",
    "ConvertSyncBatchNormCallback",
    "StepBasedEvaluationCallback",
    "LimitBatchesCallback",
    "LimitEvalStepsCallback",
    "FastDevRun",
    "OverfitBatches",
    "save_model_safetensors",
    "MetricsLoggerCallback",
    "CSVLoggerCallback",
    "JSONLinesLoggerCallback",
    "TrackerCallback",
    "TensorBoardLoggerCallback",
    "MLflowLoggerCallback",
    "note_weights_from",
    "LearningRateMonitorCallback",
    "ThroughputMonitorCallback",
    "PlotMetricsCallback",
    "MetricSchedulerCallback",
    "GradientNormCallback",
    "GradientClippingEventMixin",
    "BEFORE_GRADIENT_CLIPPING_EVENT",
    "ModelSummaryCallback",
    "ModuleSummary",
    "summarize_model",
    "format_model_summary",
    "StochasticWeightAveragingCallback",
    "ProfilerCallback",
    # pytorch-accelerated 0.1.61's names, kept with their meaning (MIGRATING.md)
    "LogMetricsCallback",
    "PrintProgressCallback",
    "get_default_callbacks",
]

# pytorch-accelerated 0.1.61's names that are not kept: reading one raises an ImportError that says
# what to write instead.
_NOT_KEPT = {
    "CallbackMethodNotImplementedError": (
        "nothing replaces it: an event a callback does not define is "
        "skipped, and an error raised inside a callback propagates (never swallowed)"
    ),
    "ModelEma": (
        "keep an average of the weights with ModelEmaCallback(decay=...), or "
        "torch.optim.swa_utils.AveragedModel(model, "
        "multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay)) and its update_parameters(model)"
    ),
    "WSDCheckpointCallback": (
        "save at the WSD schedule's checkpoints with a callback whose on_optimizer_step_end calls"
        " trainer.save_checkpoint(path) when trainer.completed_update_steps is in"
        " trainer.scheduler.checkpoint_steps (WSDLrScheduler), or save resumable states with"
        " SaveTrainingStateCallback(save_dir, save_every_n_steps=...)"
    ),
}


# pytorch-accelerated 0.1.61's ``pytorch_accelerated.callbacks`` re-exported these helpers of its other
# modules; trainer-core keeps them there (not part of the interface plug-ins build on, so read lazily).
_KEPT_IN_CORE = {
    "DataLoaderSlice": "pytorch_accelerated.utils",
    "LossTracker": "pytorch_accelerated.tracking",
}


def __getattr__(name: str):
    if name in _KEPT_IN_CORE:
        from importlib import import_module

        return getattr(import_module(_KEPT_IN_CORE[name]), name)
    if name in _NOT_KEPT:
        raise ImportError(
            f"pytorch_accelerated.callbacks.{name} (pytorch-accelerated 0.1.61) is not kept:"
            f" {_NOT_KEPT[name]}. See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
