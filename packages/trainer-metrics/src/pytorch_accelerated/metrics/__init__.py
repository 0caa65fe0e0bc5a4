"""pytorch_accelerated.metrics: torchmetrics metrics in the pytorch_accelerated Trainer's loop.

Use :class:`MetricsCallback`, or update metrics in a ``Trainer`` subclass and record them with
:func:`record_metrics`. Either way, values are exact over the whole dataset on any number of
processes and are recorded in the run history as ``eval_<name>`` / ``train_<name>``.
"""

from .callback import MetricsCallback
from .inputs import default_metric_inputs
from .recording import record_metrics

__version__ = "0.3.0"

__all__ = ["MetricsCallback", "default_metric_inputs", "record_metrics"]
