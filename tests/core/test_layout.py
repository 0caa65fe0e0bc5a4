"""The loop stays readable: the Trainer class holds the loop, the hooks and the helpers users call;
every other concern lives in a module of its own, called from a few named points."""

from __future__ import annotations

import inspect

from pytorch_accelerated.trainer import Trainer
from pytorch_accelerated.trainer import resuming

TRAINER_CLASS_LINE_LIMIT = 650  # issue 13: it had grown to 1,111 lines; put a new concern in its own module


def test_the_trainer_class_stays_under_its_line_limit():
    lines, _ = inspect.getsourcelines(Trainer)
    assert len(lines) < TRAINER_CLASS_LINE_LIMIT, (
        f"The Trainer class has {len(lines)} lines (limit {TRAINER_CLASS_LINE_LIMIT}): move the new concern into "
        "a module of its own and call it from the loop at a named point (see docs/architecture.md)."
    )


def test_the_training_state_machinery_is_not_in_the_trainer_class():
    """Capturing, checking and applying states is resuming.TrainingStates'; the Trainer delegates."""
    names = set(vars(Trainer))
    assert not names & {
        "_position", "_shared_training_state", "_process_training_state", "_apply_training_state",
        "_check_training_state_fits", "_find_training_state", "_finish_resuming", "_callback_states",
    }  # fmt: skip
    assert "TrainingStates(self)" in inspect.getsource(Trainer.__init__)
    assert "self._states.save(" in inspect.getsource(Trainer.save_training_state)
    assert callable(resuming.TrainingStates.train_batches)  # a resumed epoch's skip: resumable_data's
