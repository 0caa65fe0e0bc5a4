"""pytorch_accelerated.tuning: tools that tune a run before (or around) training.

- :func:`find_lr`: the learning-rate range test, on a copy of the trainer's training state.
- :func:`find_batch_size`: the largest per-device batch that fits in CUDA memory.
- :class:`OptunaPruningCallback`: reports a metric to an Optuna trial and prunes it (needs optuna).

Built on the core's public interface only (``pytorch_accelerated.trainer``).
"""

from .batch_size_finder import find_batch_size
from .lr_finder import LRFinderResult, find_lr, steepest_descent
from .optuna_pruning import OptunaPruningCallback

__version__ = "0.1.0"

__all__ = [
    "find_lr",
    "LRFinderResult",
    "steepest_descent",
    "find_batch_size",
    "OptunaPruningCallback",
]
