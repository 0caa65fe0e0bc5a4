"""Safe checkpoint files: only plain data is written, atomically; loading never unpickles arbitrary
objects; a full disk is an error that names the file, the space needed and the space free; a file
can be written with a digest of its bytes computed as they are written, and checked against it."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
import xxhash

_PLAIN_SCALARS = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    torch.Tensor,
    torch.dtype,
    torch.device,
    torch.Size,
)


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
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if is_out_of_space(error):
            raise out_of_space_error(f"{str(path)!r}", path.parent, stored_bytes(obj)) from error
        raise
    return path


#: The digest files are written with: XXH3-128 finds damage (a flipped bit, a truncation, a bad disk) at
#: memory speed, ~10x SHA-256 (which would cost more than torch.save itself); it does not resist forgery.
FILE_DIGEST = "xxh3_128"
_DIGESTS: dict[str, Callable] = {"xxh3_128": xxhash.xxh3_128, "sha256": hashlib.sha256}  # sha256: older files


def write_with_digest(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> tuple[int, str]:
    """Create the file ``path``, let ``write`` fill it, and sync it to the disk. Returns its size and
    its :data:`FILE_DIGEST`, computed from the bytes as they are written: the file is never read back."""
    with open(path, "xb") as file:
        digesting = digesting_writes(file)
        write(digesting)
        file.flush()
        os.fsync(file.fileno())
        return file.tell(), digesting.digest.hexdigest()


class _DigestingFile:
    """A binary file that passes every byte written through it to a digest (``torch.save`` writes
    to any object with ``write`` and ``flush``)."""

    def __init__(self, file: BinaryIO, digest):
        self.file, self.digest = file, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()


def digesting_writes(file: BinaryIO) -> _DigestingFile:
    """``file``, each byte written through it passed to a :data:`FILE_DIGEST` (``.digest.hexdigest()``)."""
    return _DigestingFile(file, _DIGESTS[FILE_DIGEST]())


def file_digest(path: str | os.PathLike, algorithm: str = FILE_DIGEST) -> str:
    """The hex digest of the file ``path`` with ``algorithm`` (``"xxh3_128"`` or ``"sha256"``)."""
    digest = _DIGESTS[algorithm]()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def is_out_of_space(error: BaseException) -> bool:
    """Whether ``error`` or one it was raised from is a full disk (torch.save reports one as
    ``RuntimeError: ... unexpected pos``, raised while handling the OSError)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def out_of_space_error(what: str, folder: Path, needed: int) -> CheckpointError:
    """The error for a write of ``what`` into ``folder`` that found no space left."""
    free = shutil.disk_usage(folder).free
    return CheckpointError(
        f"No space left on device writing {what}: it needs about {_size(needed)}, and {_size(free)} are free "
        f"in {str(folder)!r}. Free some space or save elsewhere; the files there before are unchanged."
    )


def stored_bytes(value: Any) -> int:
    """About how many bytes ``torch.save(value)`` writes: the bytes of its tensors' storages."""
    storages: dict[tuple, int] = {}

    def visit(item) -> None:
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            storages[(storage.data_ptr(), item.device)] = storage.nbytes()
        elif isinstance(item, dict):
            for child in item.values():
                visit(child)
        elif isinstance(item, (list, tuple, set)):
            for child in item:
                visit(child)

    visit(value)
    return sum(storages.values())


def _size(num_bytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    raise AssertionError("unreachable")


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


def map_tensors(value, function: Callable):
    """``value`` with ``function`` applied to every tensor in it (through dicts, lists and tuples)."""
    if isinstance(value, torch.Tensor):
        return function(value)
    if isinstance(value, Mapping):
        return {key: map_tensors(item, function) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(item, function) for item in value)
    return value


def to_cpu(value):
    return map_tensors(value, lambda tensor: tensor.detach().cpu())
