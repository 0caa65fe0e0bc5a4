"""Splitting a model into layer groups, the units that :class:`ModelFreezer` freezes and unfreezes.

The rule, applied to the model's direct children in order:

- a plain container (exactly ``nn.Sequential``, ``nn.ModuleList`` or ``nn.ModuleDict``, holding no
  parameters of its own) is opened up and its children take its place, recursively; subclasses of
  these are named blocks and stay whole;
- every other module starts a new group, holding the module and all its submodules;
- a module without parameters of its own starts no group: it joins the group before it (or, before
  the first group, the first group), so that indices count only units with weights;
- a parameter shared by several modules belongs to the first group that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

BN_MODULES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LazyBatchNorm1d,
    nn.LazyBatchNorm2d,
    nn.LazyBatchNorm3d,
    nn.SyncBatchNorm,
)

_PLAIN_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass(frozen=True, eq=False)
class LayerGroup:
    """One layer group: its ``layer_group_idx``, its top-level ``modules`` in model order, their
    ``params``, and ``batch_norm_params``, the subset of ``params`` held by batch-norm layers."""

    layer_group_idx: int
    modules: tuple[nn.Module, ...]
    params: tuple[nn.Parameter, ...]
    batch_norm_params: tuple[nn.Parameter, ...]

    @property
    def module(self) -> nn.Module:
        """The module that makes this a group: the first one holding parameters."""
        return next(module for module in self.modules if _has_parameters(module))

    @property
    def is_frozen(self) -> bool:
        """True when none of the group's parameters is trainable, batch-norm layers aside (a group of
        batch-norm layers only is judged by their parameters)."""
        batch_norm = {id(param) for param in self.batch_norm_params}
        weights = [param for param in self.params if id(param) not in batch_norm] or self.params
        return not any(param.requires_grad for param in weights)

    def submodules(self) -> Iterator[nn.Module]:
        """Every module in the group: its top-level modules and all their descendants, each once."""
        seen: set[int] = set()
        for top in self.modules:
            for module in top.modules():
                if id(module) not in seen:
                    seen.add(id(module))
                    yield module


def split_into_layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's layer groups, following the rule in this module's docstring."""
    chunks: list[tuple[list[nn.Module], list[nn.Parameter]]] = []
    leading: list[nn.Module] = []
    seen: set[int] = set()
    for module in _units(model):
        new_params = [param for param in module.parameters() if id(param) not in seen]
        seen.update(id(param) for param in new_params)
        if new_params:
            chunks.append(([*leading, module], new_params))
            leading = []
        elif chunks:
            chunks[-1][0].append(module)
        else:
            leading.append(module)
    return [_make_group(index, modules, params) for index, (modules, params) in enumerate(chunks)]


def _units(module: nn.Module) -> Iterator[nn.Module]:
    for child in module.children():
        if type(child) in _PLAIN_CONTAINERS and not _owns_parameters(child):
            yield from _units(child)
        else:
            yield child


def _make_group(index: int, modules: list[nn.Module], params: list[nn.Parameter]) -> LayerGroup:
    batch_norm = {
        id(param)
        for top in modules
        for module in top.modules()
        if isinstance(module, BN_MODULES)
        for param in module.parameters(recurse=False)
    }
    batch_norm_params = tuple(param for param in params if id(param) in batch_norm)
    return LayerGroup(index, tuple(modules), tuple(params), batch_norm_params)


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None
