"""Where a run writes its files: a fresh ``version_<n>`` folder by default, so that no run ever
replaces another's logs or checkpoints, and re-running a script with the same paths just works.

The one rule, used by every callback that takes a path (the CSV and JSON Lines loggers,
``SaveBestModelCallback``, ``ModelEmaCallback``) and by a tracker's ``logging_dir``:

- ``if_exists="new_version"`` (the default): ``folder/name`` is written as
  ``folder/version_<n>/name``, and a whole folder (a tracker's, :func:`choose_run_folder`) as
  ``folder/version_<n>``, ``n`` one more than the highest ``version_<n>`` that holds anything of
  an earlier run (0 at first), as Lightning's loggers number their ``version_<n>`` folders.
- ``"error"``, ``"append"``, ``"overwrite"``: exactly the path given; an existing non-empty file
  is refused, added to or replaced (a checkpoint cannot be appended to).

A callback chooses once, when its first run starts (the main process chooses; the others are
told, with one collective at set-up), and keeps the choice for its later ``train()`` and
``evaluate()`` calls. The choice is part of the callback's training state, so a resumed run,
even in a new process, writes where the interrupted one wrote. Callbacks of one Trainer that
version the same folder share one version number for it, so a run's files stay together.
"""

from __future__ import annotations

import os
import re
import weakref
from pathlib import Path
from typing import Literal

import torch

from ._files import check_can_write

IfExists = Literal["new_version", "error", "append", "overwrite"]
IF_EXISTS_CHOICES = ("new_version", "error", "append", "overwrite")

_VERSION = re.compile(r"version_(\d+)")

# The version each Trainer's callbacks chose for a folder: {trainer: {folder: n}}.
_CHOSEN_VERSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_if_exists(if_exists: str, owner: str, choices: tuple[str, ...] = IF_EXISTS_CHOICES) -> None:
    """A clear error, when the callback is created, for an ``if_exists`` it does not know."""
    if if_exists not in choices:
        raise ValueError(f"{owner}: if_exists must be one of {', '.join(map(repr, choices))}; got {if_exists!r}.")


def version_folder(folder: Path, version: int) -> Path:
    return folder / f"version_{version}"


def next_version(folder: Path) -> int:
    """One more than the highest ``folder/version_<n>`` that holds anything; 0 when there is none.
    Empty files hold nothing of a run (a run killed before its first record leaves one), so a
    version holding only those is used again; a version is never reused once it holds data."""
    taken = [-1]
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _VERSION.fullmatch(entry.name)
            if match and entry.is_dir() and _holds_data(entry):
                taken.append(int(match.group(1)))
    return max(taken) + 1


def _holds_data(path: Path) -> bool:
    if path.is_dir():
        return any(_holds_data(entry) for entry in path.iterdir())
    return not path.is_file() or path.stat().st_size > 0


class RunPath:
    """The file one callback writes: the path it was given, resolved by the rule above.

    ``path`` is where this callback writes (the path given until it has chosen); ``choose`` is
    called on every process when a training run starts, ``state_dict``/``load_state_dict`` carry
    the choice into a resumed run.
    """

    def __init__(self, path: str | os.PathLike, if_exists: IfExists = "new_version"):
        self.requested = Path(path)
        self.if_exists = if_exists
        self.chosen: Path | None = None
        self._version: int | None = None
        self._agreed = False  # whether every process knows the choice (not so after a main-only evaluate())

    @property
    def path(self) -> Path:
        return self.chosen if self.chosen is not None else self.requested

    @property
    def is_versioned(self) -> bool:
        return self.if_exists == "new_version"

    def choose(self, trainer, agree: bool = True) -> Path:
        """Choose the file (once per callback); with ``agree``, every process must call this at
        the same point, and all get the main process's choice (made before by the main process
        alone, for an ``evaluate()`` outside training, or now). Creates nothing."""
        must_agree = agree and trainer.num_processes > 1 and not self._agreed
        if self.chosen is None or must_agree:
            if self.is_versioned:
                folder = self.requested.parent
                self._version = _agreed_version(trainer, folder, self.requested.name, agree, known=self._version)
                self.chosen = version_folder(folder, self._version) / self.requested.name
            else:
                self.chosen = self.requested
            self._agreed = self._agreed or agree
        return self.chosen

    def start_run(self, trainer, owner: str) -> None:
        """At a training run's start, on every process: choose (unless the run resumes: its state
        says where it wrote), and check the main process can write there, before the first step;
        with ``if_exists="error"``, refuse a file another run left at the path given."""
        first_choice = self.chosen is None and trainer.resumed_from is None
        if first_choice:
            self.choose(trainer)
        check_can_write(trainer, self.path, owner, refuse_existing=first_choice and self.if_exists == "error")

    def state_dict(self) -> dict:
        return {"run_path": str(self.chosen) if self.chosen is not None else None}

    def load_state_dict(self, state_dict: dict) -> None:
        # a state saved before run folders existed wrote to the path it was given
        chosen = state_dict.get("run_path", str(self.requested))
        self.chosen = Path(chosen) if chosen is not None else None
        self._agreed = self.chosen is not None  # every process loads the same state


class RunFolder:
    """The folder one callback writes a whole run into (a tracker's ``logging_dir``), by the rule
    above: ``folder/version_<n>`` with ``if_exists="new_version"`` (the default), else ``folder``
    itself. Call :meth:`start_run` on every process when a training run starts, and carry
    :meth:`state_dict` in the callback's state so that a resumed run writes where it wrote."""

    def __init__(self, folder: str | os.PathLike, if_exists: Literal["new_version", "append"] = "new_version"):
        check_if_exists(if_exists, type(self).__name__, ("new_version", "append"))
        self.requested = Path(folder)
        self.if_exists = if_exists
        self.chosen: Path | None = None

    @property
    def path(self) -> Path:
        return self.chosen if self.chosen is not None else self.requested

    def start_run(self, trainer) -> Path:
        """Choose once (unless the run resumes: its state says where); every process gets the main one's folder."""
        if self.chosen is None and trainer.resumed_from is None:
            self.chosen = choose_run_folder(trainer, self.requested) if self.if_exists == "new_version" else self.requested
        return self.path

    def state_dict(self) -> dict:
        return {"run_folder": str(self.chosen) if self.chosen is not None else None}

    def load_state_dict(self, state_dict: dict) -> None:
        chosen = state_dict.get("run_folder", str(self.requested))
        self.chosen = Path(chosen) if chosen is not None else None


def choose_run_folder(trainer, folder: str | os.PathLike, agree: bool = True) -> Path:
    """The fresh ``folder/version_<n>`` a run writes a whole folder into (a tracker's
    ``logging_dir``), shared with the other callbacks of ``trainer`` that version ``folder``.
    With ``agree``, call it on every process at the same point (at a run's start)."""
    folder = Path(folder)
    return version_folder(folder, _agreed_version(trainer, folder, None, agree))


def _agreed_version(trainer, folder: Path, name: str | None, agree: bool, known: int | None = None) -> int:
    version = 0
    if trainer.is_world_process_zero:
        version = known if known is not None else _main_process_version(trainer, folder, name)
    if agree and trainer.num_processes > 1:
        # once per callback at set-up: the others learn the main process's number (they add 0)
        version = int(trainer.reduce(torch.tensor(version, device=trainer.device), "sum").item())
    _CHOSEN_VERSIONS.setdefault(trainer, {})[folder.resolve()] = version
    return version


def _main_process_version(trainer, folder: Path, name: str | None) -> int:
    """The version this trainer's callbacks chose for ``folder`` already (its run's files stay
    together), while it still has room for ``name``; otherwise the next free one."""
    shared = _CHOSEN_VERSIONS.get(trainer, {}).get(folder.resolve())
    if shared is not None and (name is None or not _holds_data(version_folder(folder, shared) / name)):
        return shared
    return next_version(folder)
