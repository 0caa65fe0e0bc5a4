"""Checking, when a run starts, that a callback will be able to write its file at the end."""

from __future__ import annotations

import tempfile
from pathlib import Path


def check_can_write(trainer, path: Path, owner: str) -> None:
    """Raise on every process, before the first step, if the main process cannot create files in
    ``path``'s folder (made if missing), rather than after hours of training (one agreement, at set-up)."""
    problem = None
    if trainer.is_world_process_zero:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.write-check"):
                pass
        except OSError as error:
            problem = (
                f"{owner} cannot write {path}: {error.strerror} ({error.filename or path.parent}). "
                "Choose a save_path in a folder this process can write to."
            )
    if trainer.any_process(problem is not None):
        raise PermissionError(problem or f"{owner} cannot write {path} on the main process: its error is in its output.")
