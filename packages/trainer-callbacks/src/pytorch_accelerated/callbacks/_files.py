"""Checking, when a run starts, that a callback will be able to write its file at the end."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pytorch_accelerated.trainer import raised_on_every_process


def check_can_write(trainer, path: Path, owner: str, refuse_existing: bool = False) -> None:
    """Raise on every process, before the first step, if the main process cannot create files in
    ``path``'s folder (made if missing), rather than after hours of training (one agreement, at set-up);
    with ``refuse_existing``, also if ``path`` is a non-empty file already (another run's)."""
    problem, error_type = None, PermissionError
    if trainer.is_world_process_zero:
        if refuse_existing and path.is_file() and path.stat().st_size > 0:
            problem, error_type = (
                (
                    f"{path} already exists, and {owner} will not replace another run's file with"
                    " if_exists='error': use the default if_exists='new_version' (a fresh version_<n> folder"
                    " beside it), if_exists='overwrite' to replace it, or choose another save_path."
                ),
                FileExistsError,
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path.parent, prefix=f".{path.name}.write-check"):
                pass
        except OSError as error:
            problem, error_type = (
                (
                    f"{owner} cannot write {path}: {error.strerror} ({error.filename or path.parent}). "
                    "Choose a save_path in a folder this process can write to."
                ),
                PermissionError,
            )
    if trainer.any_process(problem is not None):
        message = problem or f"{owner} cannot write {path} on the main process: its error is in its output."
        raise raised_on_every_process(error_type(message))
