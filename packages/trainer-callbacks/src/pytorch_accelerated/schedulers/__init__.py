"""pytorch_accelerated.schedulers: learning-rate schedulers stepped once per optimizer update.

Pass one to ``Trainer.train`` with its ``create_scheduler_fn`` classmethod, which sizes the schedule
from the run (per process, ``max_num_train_steps`` included)::

    trainer.train(..., create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1))

Subclass :class:`StatefulSchedulerBase` to schedule any param-group field.
"""

from .cosine_scheduler import CosineLrScheduler
from .scheduler_base import SCHEDULER_BASE_NOT_KEPT, StatefulSchedulerBase
from .wsd_scheduler import WSDLrScheduler

__all__ = ["StatefulSchedulerBase", "CosineLrScheduler", "WSDLrScheduler"]

# pytorch-accelerated 0.1.61's name that is not kept: reading it raises an ImportError saying what to write.
_NOT_KEPT = {"SchedulerBase": SCHEDULER_BASE_NOT_KEPT}


def __getattr__(name: str):
    if name in _NOT_KEPT:
        raise ImportError(
            f"pytorch_accelerated.schedulers.{name} (pytorch-accelerated 0.1.61) is not kept:"
            f" {_NOT_KEPT[name]}. See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
