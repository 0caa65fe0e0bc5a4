"""pytorch_accelerated.callbacks: callbacks for the pytorch_accelerated Trainer.

The core's callback protocol and default callbacks are re-exported, so that
``from pytorch_accelerated.callbacks import TrainerCallback, EarlyStoppingCallback`` works.
Loggers with optional dependencies import them only when created.
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
from .loggers import (
    CSVLoggerCallback,
    JSONLinesLoggerCallback,
    MetricsLoggerCallback,
    MLflowLoggerCallback,
    TensorBoardLoggerCallback,
)
from .monitors import LearningRateMonitorCallback, ThroughputMonitorCallback
from .plotting import PlotMetricsCallback
from .profiler import ProfilerCallback
from .swa import StochasticWeightAveragingCallback
from .training_state import SaveTrainingStateCallback
from .training_control import (
    ConvertSyncBatchNormCallback,
    LimitBatchesCallback,
    LimitEvalStepsCallback,
    StepBasedEvaluationCallback,
)
from .watching import EarlyStoppingCallback, SaveBestModelCallback

__version__ = "0.2.0"

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
    "MetricsLoggerCallback",
    "CSVLoggerCallback",
    "JSONLinesLoggerCallback",
    "TensorBoardLoggerCallback",
    "MLflowLoggerCallback",
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
]
