"""Trainer methods that pytorch-accelerated 0.1.61 let subclasses override and that this Trainer
no longer calls: a subclass overriding one would be silently ignored, so it is an error instead."""

from __future__ import annotations

import functools

#: name -> what to override instead
REMOVED_HOOKS: dict[str, str] = {
    "get_default_train_dl_kwargs": (
        "override create_train_dataloader(batch_size, dataloader_kwargs), or pass "
        "train(..., train_dataloader_kwargs={...})"
    ),
    "get_default_eval_dl_kwargs": (
        "override create_eval_dataloader(batch_size, dataloader_kwargs), or pass "
        "train(..., eval_dataloader_kwargs={...})"
    ),
    "_create_accelerator": "override create_accelerator(), or pass Trainer(..., accelerator_kwargs={...})",
    "_clip_gradients": "override clip_gradients()",
    "_create_callback_handler": (
        "pass the callbacks to Trainer(callbacks=...) or call trainer.callback_handler.add_callback(...)"
    ),
    "_prepare_model_optimizer_and_dataloaders": (
        "override create_train_dataloader / create_eval_dataloader "
        "(the Trainer prepares what they return), or create_accelerator()"
    ),
    "_run_evaluation": "override evaluation_run_start() / evaluation_run_end(), or the eval-epoch hooks",
}


@functools.cache
def check_no_removed_hooks(trainer_class: type) -> None:
    """Raise a TypeError naming the replacement of every 0.1.61 hook ``trainer_class`` overrides
    (checked once per class)."""
    overridden = [name for name in REMOVED_HOOKS if any(name in vars(cls) for cls in trainer_class.__mro__)]
    if overridden:
        fixes = "; ".join(f"{name}: {REMOVED_HOOKS[name]}" for name in overridden)
        raise TypeError(
            f"{trainer_class.__qualname__} overrides {', '.join(overridden)}, which this Trainer never calls "
            f"(pytorch-accelerated 0.1.61 did). Instead: {fixes}. See MIGRATING.md."
        )
