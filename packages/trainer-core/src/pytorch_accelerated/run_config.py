"""``pytorch_accelerated.run_config`` as pytorch-accelerated 0.1.61 had it, so that its imports keep
working: :class:`TrainerRunConfig` lives in :mod:`pytorch_accelerated.trainer` (see MIGRATING.md)."""

from pytorch_accelerated.trainer import TrainerRunConfig

__all__ = ["TrainerRunConfig"]
