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
