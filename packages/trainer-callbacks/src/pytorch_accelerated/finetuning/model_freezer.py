"""ModelFreezer: freeze and unfreeze a model's layer groups for fine-tuning."""

from __future__ import annotations

import operator
import warnings

import torch
from torch import nn

from ._eval_mode import keep_in_eval_mode, release_eval_mode
from .layer_groups import BN_MODULES, LayerGroup, split_into_layer_groups


class ModelFreezer:
    """Freezes and unfreezes ranges of a model's layer groups, for fine-tuning a pretrained model.

    The layer groups are the model's direct children in order, with plain containers opened up and
    modules without parameters joined to the group before them (see
    :mod:`pytorch_accelerated.finetuning.layer_groups` for the exact rule). Index ranges are
    inclusive and may run in either direction; negative indices count from the end.

    Batch-norm layers are left trainable (and in training mode) unless ``freeze_batch_norms=True``.
    Creating a freezer changes nothing in the model.
    """

    def __init__(self, model: nn.Module, freeze_batch_norms: bool = False):
        self.model = model
        self.freeze_bn = freeze_batch_norms
        self._layer_groups = split_into_layer_groups(model)
        if not self._layer_groups:
            raise ValueError(
                f"{type(model).__name__} has no child module with parameters, so it has no layer groups to"
                " freeze."
            )
        self._warn_about_ungrouped_parameters()

    @property
    def num_groups(self) -> int:
        """The number of layer groups."""
        return len(self._layer_groups)

    def get_layer_groups(self) -> list[LayerGroup]:
        """The model's layer groups, in model order."""
        return list(self._layer_groups)

    def get_trainable_parameters(self) -> list[nn.Parameter]:
        """The model's parameters that currently require gradients: pass these to the optimizer."""
        return [param for param in self.model.parameters() if param.requires_grad]

    def freeze(self, from_index: int = 0, to_index: int = -2, set_modules_as_eval: bool = False) -> None:
        """Freeze the layer groups ``from_index`` to ``to_index`` (inclusive; by default all but the last).

        With ``set_modules_as_eval=True`` the frozen modules are also put in eval mode, and stay there
        when the model is switched to training mode (by the Trainer at every epoch) until they are
        unfrozen. Batch-norm layers count as frozen modules only with ``freeze_batch_norms=True``.
        """
        for group in self._select(from_index, to_index):
            for param in self._switched_params(group, self.freeze_bn):
                param.requires_grad_(False)
            if set_modules_as_eval:
                for module in self._switched_modules(group, self.freeze_bn):
                    keep_in_eval_mode(module)

    def unfreeze(
        self,
        from_index: int = -1,
        to_index: int = 0,
        refreeze_batch_norms: bool = True,
        *,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> list[dict]:
        """Unfreeze the layer groups ``from_index`` to ``to_index`` (inclusive; by default all, walking
        from the last group back to the first) and let their modules follow ``model.train()`` again.

        With ``freeze_batch_norms=True`` and ``refreeze_batch_norms=True``, the batch-norm layers of
        these groups are frozen rather than unfrozen.

        Returns one ``{"params": [...]}`` dict per group, in walking order, holding the parameters
        this call unfroze, minus those already in ``optimizer`` when one is given; groups with none
        are left out. Each dict is ready for ``optimizer.add_param_group``, with an ``"lr"`` of its own
        if you add one.
        """
        include_batch_norms = self.freeze_bn and not refreeze_batch_norms
        in_optimizer = _parameter_ids(optimizer)
        param_groups = []
        for group in self._select(from_index, to_index):
            unfrozen = self._unfreeze_group(group, include_batch_norms)
            if self.freeze_bn and refreeze_batch_norms:
                for param in group.batch_norm_params:
                    param.requires_grad_(False)
            new_params = [param for param in unfrozen if id(param) not in in_optimizer]
            if new_params:
                param_groups.append({"params": new_params})
        return param_groups

    def _unfreeze_group(self, group: LayerGroup, include_batch_norms: bool) -> list[nn.Parameter]:
        unfrozen = [
            param for param in self._switched_params(group, include_batch_norms) if not param.requires_grad
        ]
        for param in unfrozen:
            param.requires_grad_(True)
        for module in self._switched_modules(group, include_batch_norms):
            release_eval_mode(module, self.model.training)
        return unfrozen

    def _select(self, from_index: int, to_index: int) -> list[LayerGroup]:
        start = self._resolve(from_index, "from_index")
        stop = self._resolve(to_index, "to_index")
        step = 1 if stop >= start else -1
        return [self._layer_groups[index] for index in range(start, stop + step, step)]

    def _resolve(self, index: int, name: str) -> int:
        try:
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {index!r}.") from None
        count = self.num_groups
        if not -count <= index < count:
            raise IndexError(
                f"{name}={index} is out of range: the model has {count} layer"
                f" group{'s' if count != 1 else ''}, so indices go from {-count} to {count - 1}."
            )
        return index % count

    @staticmethod
    def _switched_params(group: LayerGroup, include_batch_norms: bool) -> list[nn.Parameter]:
        if include_batch_norms:
            return list(group.params)
        batch_norm = {id(param) for param in group.batch_norm_params}
        return [param for param in group.params if id(param) not in batch_norm]

    @staticmethod
    def _switched_modules(group: LayerGroup, include_batch_norms: bool) -> list[nn.Module]:
        return [
            module
            for module in group.submodules()
            if include_batch_norms or not isinstance(module, BN_MODULES)
        ]

    def _warn_about_ungrouped_parameters(self) -> None:
        grouped = {id(param) for group in self._layer_groups for param in group.params}
        loose = [name for name, param in self.model.named_parameters() if id(param) not in grouped]
        if loose:
            warnings.warn(
                f"Parameters {loose} are registered on the model itself rather than in a child module: "
                "they belong to no layer group, so ModelFreezer never freezes them.",
                stacklevel=3,
            )


def _parameter_ids(optimizer: torch.optim.Optimizer | None) -> set[int]:
    if optimizer is None:
        return set()
    return {id(param) for group in optimizer.param_groups for param in group["params"]}
