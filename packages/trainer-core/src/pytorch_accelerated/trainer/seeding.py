"""Opt-in seeding: importing this library never seeds anything."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) random generators.

    With ``deterministic=True``, also ask torch for deterministic algorithms (slower, and an
    error for operations that have none). Call it before building the model and the Trainer;
    each process may pass a different seed if it wants different augmentations.
    """
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    return seed
