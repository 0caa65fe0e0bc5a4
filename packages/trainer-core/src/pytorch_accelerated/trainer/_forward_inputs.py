"""Which keys of a dict batch reach the model: those its ``forward`` names, as the HF Trainer removes
the dataset columns a model does not take. Read from the signature once per model, not per step."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Callable

import torch
from ._warnings import warn_user

_BY_NAME = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class ForwardInputs:
    """Selects the keyword arguments of ``model(**inputs)`` from a dict batch.

    The keys are matched to ``forward``'s parameters by name; a ``forward`` that takes ``**kwargs``
    gets every key. Other keys are dropped, with one warning naming them (``labels`` silently when
    a ``loss_func`` consumes them). A required parameter the batch has no key for is an error.
    """

    def __init__(self):
        self._model: torch.nn.Module | None = None
        self._accepted: frozenset[str] | None = None  # None: every key
        self._warned: tuple[str, ...] = ()

    def select(
        self, model: torch.nn.Module, batch: Mapping, unwrap: Callable, loss_func_given: bool
    ) -> Mapping:
        if model is not self._model:
            self._accepted = self._accepted_keys(unwrap(model), batch, loss_func_given)
            self._model = model
        accepted = self._accepted
        if accepted is None:
            return batch
        return {key: value for key, value in batch.items() if key in accepted}

    def _accepted_keys(
        self, model: torch.nn.Module, batch: Mapping, loss_func_given: bool
    ) -> frozenset[str] | None:
        try:
            parameters = list(inspect.signature(model.forward).parameters.values())
        except (TypeError, ValueError):  # no signature to read (a C extension): pass everything
            return None
        if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
            return None
        names = frozenset(parameter.name for parameter in parameters if parameter.kind in _BY_NAME)
        missing = [
            parameter.name
            for parameter in parameters
            if parameter.default is inspect.Parameter.empty
            and parameter.kind is not inspect.Parameter.VAR_POSITIONAL
            and parameter.name not in batch
        ]
        if missing:
            raise TypeError(
                f"The batch is a dict with the keys {sorted(batch)}, which the trainer passes to the model by"
                f" name, but {type(model).__name__}.forward needs {missing}: name the batch's keys after"
                " forward's arguments, have the dataset or collate_fn return (inputs, targets) tuples, or"
                " override calculate_train_batch_loss / calculate_eval_batch_loss."
            )
        dropped = tuple(
            key for key in batch if key not in names and not (key == "labels" and loss_func_given)
        )
        if dropped and dropped != self._warned:
            self._warned = dropped
            warn_user(
                f"{type(model).__name__}.forward takes no argument named {list(dropped)}: these batch keys"
                " are not passed to the model. Remove them from the batch (or give forward **kwargs) to"
                " silence this."
            )
        return names
