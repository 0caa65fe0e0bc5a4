"""pytorch_accelerated.schedulers: learning-rate schedulers stepped once per optimizer update.

Pass one to ``Trainer.train`` with its ``create_scheduler_fn`` classmethod, which sizes the schedule
from the run (per process, ``max_num_train_steps`` included)::

    trainer.train(..., create_scheduler_fn=CosineLrScheduler.create_scheduler_fn(num_warmup_epochs=1))

Subclass :class:`StatefulSchedulerBase` to schedule any param-group field.
"""

from .cosine_scheduler import CosineLrScheduler
from .scheduler_base import StatefulSchedulerBase
from .wsd_scheduler import WSDLrScheduler

__all__ = ["StatefulSchedulerBase", "CosineLrScheduler", "WSDLrScheduler"]
