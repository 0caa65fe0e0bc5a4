"""Several Trainers in one process with different ``mixed_precision`` (a notebook, a hyperparameter
search): accelerate keeps one process-wide state and refuses a second setting."""

from __future__ import annotations

import os
from typing import Any

from accelerate.state import AcceleratorState


def make_way_for(accelerator_kwargs: dict[str, Any]) -> None:
    """Forget accelerate's process-wide mixed-precision state if ``accelerator_kwargs`` asks for
    another setting, so that the next ``Accelerator`` can take it. The process state (devices, the
    distributed process group) is kept: a live process group is never torn down.

    Without a ``mixed_precision`` accelerate reads ``ACCELERATE_MIXED_PRECISION`` (default ``"no"``)
    only for a new state, and would silently keep an earlier Trainer's setting: that counts as a
    different setting too. ``_reset_state`` is private to accelerate but is what its own tests and
    transformers' ``TrainingArguments`` use for this; it has no public counterpart in 1.15.
    """
    state = AcceleratorState._shared_state
    if not state or "_mixed_precision" not in state:
        return
    requested = accelerator_kwargs.get("mixed_precision")
    requested = str(requested if requested is not None else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")).lower()
    if requested != state["_mixed_precision"]:
        AcceleratorState._reset_state(reset_partial_state=False)
