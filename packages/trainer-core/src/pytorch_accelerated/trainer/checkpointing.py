"""Safe checkpoint files: only plain data is written, loading never unpickles arbitrary objects."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

_PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype, torch.device, torch.Size)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read: the message names the file and the fix."""


def check_plain_data(value: Any, where: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` unless ``value`` is made only of tensors, numbers,
    strings, ``None`` and lists, tuples and dicts of these: what weights-only loading accepts."""
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, (list, tuple, set)):
        for index, item in enumerate(value):
            check_plain_data(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            check_plain_data(key, f"{where} key {key!r}")
            check_plain_data(item, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"{where} holds a {type(value).__qualname__}, which cannot be loaded back safely. "
        "Store tensors, numbers, strings, None, or lists/tuples/dicts of these "
        "(e.g. convert it with .state_dict() or to a plain dict first)."
    )


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` with ``torch.save`` to a temporary file beside ``path``, then rename it over
    ``path``: a file at ``path`` is always complete, and an older one survives a failed write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(file_descriptor, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def safe_torch_load(path: str | os.PathLike, map_location="cpu") -> Any:
    """Load a file written by :func:`atomic_torch_save` without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {str(path)!r}: check the path.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r}: {error}. The file is truncated, corrupted, or holds "
            "objects other than tensors and plain data; it was not loaded."
        ) from error
