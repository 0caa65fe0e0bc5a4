"""Callbacks shared by the callbacks' tests (the core's shared helpers are in tests/core/helpers.py).

Scenario scripts launched as processes import it as ``helpers`` (beside the script), test modules as
``.helpers``.
"""

from pytorch_accelerated.trainer import StopTrainingError, TrainerCallback


class Crash(Exception):
    """Stands in for a kill: the process's work after it is lost, its files stay."""


class CrashAtUpdate(TrainerCallback):
    """Raises ``error`` (a ``Crash`` by default) once update ``update`` is done.

    Args:
        update: the update (counted from 1) after which the run fails.
        error: the exception to raise; ``Crash("crash at update N")`` when None.
    """

    def __init__(self, update: int, error: BaseException | None = None):
        self.update, self.error = update, error

    def on_optimizer_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps == self.update:
            raise self.error if self.error is not None else Crash(f"crash at update {self.update}")


class StopAtEpochEnd(TrainerCallback):
    """Stops the run at the end of ``epoch``, before the callbacks listed after it see the event.

    Args:
        epoch: the epoch (counted from 1) to stop at; None stops at the first epoch's end.
    """

    def __init__(self, epoch: int | None = None):
        self.epoch = epoch

    def on_training_run_epoch_end(self, trainer, **kwargs):
        if self.epoch is None or trainer.run_history.current_epoch == self.epoch:
            raise StopTrainingError("stop for the test")
