"""pytorch_accelerated.finetuning: freeze and unfreeze parts of a pretrained model for fine-tuning.

::

    freezer = ModelFreezer(model)
    freezer.freeze()                                   # all layer groups but the last
    optimizer = torch.optim.AdamW(freezer.get_trainable_parameters(), lr=1e-3)
    ...                                                # train the head
    for param_group in freezer.unfreeze(optimizer=optimizer):
        optimizer.add_param_group({**param_group, "lr": 1e-4})
"""

from .layer_groups import BN_MODULES, LayerGroup
from .model_freezer import ModelFreezer

__all__ = ["ModelFreezer", "LayerGroup", "BN_MODULES"]

# pytorch-accelerated 0.1.61's name that is not kept: reading it raises an ImportError saying what to write.
_NOT_KEPT = {
    "Layer": (
        "ModelFreezer works on layer groups only: use freezer.get_layer_groups() (each LayerGroup has"
        " layer_group_idx, modules, params, is_frozen) and iterate group.submodules() for the layers"
        " inside one"
    ),
}


def __getattr__(name: str):
    if name in _NOT_KEPT:
        raise ImportError(
            f"pytorch_accelerated.finetuning.{name} (pytorch-accelerated 0.1.61) is not kept:"
            f" {_NOT_KEPT[name]}. See MIGRATING.md.",
            name=name,
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
