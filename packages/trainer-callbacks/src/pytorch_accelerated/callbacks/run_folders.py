"""Where a run writes its files: a fresh ``version_<n>`` folder by default, so that no run ever
replaces another's logs or checkpoints, and re-running a script with the same paths just works.

The one rule, used by every callback that takes a path (the CSV and JSON Lines loggers,
``SaveBestModelCallback``, ``ModelEmaCallback``) and by a tracker's ``logging_dir``:

- ``if_exists="new_version"`` (the default): ``folder/name`` is written as
  ``folder/version_<n>/name``, and a whole folder (a tracker's, :class:`RunFolder`) as
  ``folder/version_<n>``, ``n`` one more than the highest ``version_<n>`` folder there (0 at first),
  as Lightning numbers its loggers' folders. The folder is created when it is chosen, and creating
  it is the claim: two runs started at once never share one.
- ``"error"``, ``"append"``, ``"overwrite"``: exactly the path given; an existing non-empty file
  is refused, added to or replaced (a checkpoint cannot be appended to).

A callback chooses once, when its first run starts (the main process chooses; the others are
told, with one collective at set-up), and keeps the choice for its later ``train()`` and
``evaluate()`` calls. The choice (``version_<n>``, relative to the path given) is part of the
callback's training state, so a resumed run, even in a new process or with its folder moved,
writes where the interrupted one wrote. Callbacks of one Trainer that version the same folder
share one version number for it, so a run's files stay together.
"""

from __future__ import annotations

import os
import re
import weakref
from pathlib import Path
from typing import Literal

import torch

from pytorch_accelerated.trainer import raised_on_every_process

from ._files import check_can_write

IfExists = Literal["new_version", "error", "append", "overwrite"]
IF_EXISTS_CHOICES = ("new_version", "error", "append", "overwrite")
CHECKPOINT_IF_EXISTS_CHOICES = ("new_version", "error", "overwrite")  # a checkpoint cannot be appended to

_VERSION = re.compile(r"version_(\d+)")
_AS_GIVEN = "."  # the state's run subfolder when the path given is written as it is

# The version each Trainer's callbacks chose for a folder: {trainer: {folder: n}}.
_CHOSEN_VERSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_if_exists(if_exists: str, owner: str, choices: tuple[str, ...] = IF_EXISTS_CHOICES) -> None:
    """A clear error, when the callback is created, for an ``if_exists`` it does not know."""
    if if_exists not in choices:
        raise ValueError(
            f"{owner}: if_exists must be one of {', '.join(map(repr, choices))}; got {if_exists!r}."
        )


def version_folder(folder: Path, version: int) -> Path:
    return folder / f"version_{version}"


def next_version(folder: Path) -> int:
    """One more than the highest ``folder/version_<n>`` folder; 0 when there is none. A version,
    once its folder exists, is never used again (a run killed before writing anything included)."""
    taken = [-1]
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _VERSION.fullmatch(entry.name)
            if match and entry.is_dir():
                taken.append(int(match.group(1)))
    return max(taken) + 1


def claim_version(folder: Path, start: int = 0) -> int:
    """Create ``folder/version_<n>`` for the first ``n >= start`` whose folder does not exist yet,
    and return ``n``. Creating the folder is the claim: of runs that choose at the same moment, each
    gets its own (``os.mkdir`` fails for all but one of them)."""
    folder.mkdir(parents=True, exist_ok=True)
    version = max(start, next_version(folder))
    while True:
        try:
            os.mkdir(version_folder(folder, version))
            return version
        except FileExistsError:
            version += 1


def _holds_data(path: Path) -> bool:
    if path.is_dir():
        return any(_holds_data(entry) for entry in path.iterdir())
    return path.stat().st_size > 0 if path.is_file() else path.exists()


class RunPath:
    """The file one callback writes: the path it was given, resolved by the rule above.

    Create it in the callback's ``__init__`` (an unknown ``if_exists`` is refused there), call
    :meth:`start_run` on every process in ``on_training_run_start``, write to :attr:`path`, and
    merge :meth:`state_dict` / :meth:`load_state_dict` into the callback's own.

    Args:
        path: the path given; with ``if_exists="new_version"`` its folder gets the ``version_<n>`` folders.
        if_exists: the rule for an existing file (see the module's docstring).
        owner: the callback's name, for the errors.
        choices: the ``if_exists`` values the callback accepts.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        if_exists: IfExists = "new_version",
        owner: str | None = None,
        choices: tuple[str, ...] = IF_EXISTS_CHOICES,
    ):
        self.owner = owner or type(self).__name__
        check_if_exists(if_exists, self.owner, choices)
        self.requested = Path(path)
        self.if_exists = if_exists
        self.choices = choices
        self.chosen: Path | None = None
        self._subfolder: str | None = None  # version_<n>, or _AS_GIVEN; None until chosen
        self._agreed = False  # whether every process knows the choice (not so after a main-only evaluate())

    @property
    def path(self) -> Path:
        return self.chosen if self.chosen is not None else self.requested

    @property
    def is_versioned(self) -> bool:
        return self.if_exists == "new_version"

    def start_run(self, trainer) -> Path:
        """At a training run's start, on every process: choose (unless the run resumes: its state
        says where it wrote), and check the main process can write there, before the first step;
        with ``if_exists="error"``, refuse a file another run left at the path given."""
        if trainer.resumed_from is None:
            first_run = not self._agreed  # the same on every process (an evaluate() may have chosen on one)
            written_before = self.chosen is not None
            self.choose(trainer)
            if first_run and self.if_exists == "error":
                refused = trainer.is_world_process_zero and not written_before and self.refusal() is not None
                if trainer.any_process(refused):
                    refusal = self.refusal() or f"{self.owner} refused {self.path} on process 0"
                    raise raised_on_every_process(FileExistsError(refusal))
        check_can_write(trainer, self.path, self.owner)
        return self.path

    def choose(self, trainer, agree: bool = True) -> Path:
        """Choose the file (once per callback); with ``agree``, every process must call this at
        the same point, and all get the main process's choice (made before by the main process
        alone, for an ``evaluate()`` outside training, or now). Claims a fresh version's folder."""
        must_agree = agree and trainer.num_processes > 1 and not self._agreed
        if self.chosen is None or must_agree:
            if self.is_versioned:
                match = _VERSION.fullmatch(self._subfolder or "")  # chosen by the main process alone before
                known = int(match.group(1)) if match else None
                version = _agreed_version(trainer, self._versioned_folder, self._name, agree, known)
                self._set_subfolder(f"version_{version}")
            else:
                self._set_subfolder(_AS_GIVEN)
            self._agreed = self._agreed or agree
        return self.chosen

    def refusal(self) -> str | None:
        """Why ``if_exists="error"`` refuses the path given (another run's non-empty file there), or None."""
        path = self.requested
        if self.if_exists != "error" or not (path.is_file() and path.stat().st_size > 0):
            return None
        others = ", ".join(f"if_exists={choice!r}" for choice in self.choices if choice != "error")
        return (
            f"{path} already exists, and {self.owner} will not replace another run's file with "
            f"if_exists='error': pass one of {others} (new_version: a fresh version_<n> folder beside it), "
            "or choose another path."
        )

    def state_dict(self) -> dict:
        # relative to the path given, so that a run folder moved elsewhere resumes in its new place
        return {"run_subfolder": self._subfolder}

    def load_state_dict(self, state_dict: dict) -> None:
        if "run_subfolder" in state_dict:
            subfolder = state_dict["run_subfolder"]
            self._subfolder, self.chosen = None, None
            if subfolder is not None:
                self._set_subfolder(subfolder)
        else:  # trainer-callbacks 0.4.0 saved the absolute path (a state before run folders: the path given)
            chosen = state_dict.get("run_path", state_dict.get("run_folder", str(self.requested)))
            self.chosen = Path(chosen) if chosen is not None else None
            self._subfolder = None if chosen is None else self._subfolder_of(self.chosen)
        self._agreed = self.chosen is not None  # every process loads the same state

    # ------------------------------------------------------------------ a file, or a whole folder (RunFolder)

    @property
    def _versioned_folder(self) -> Path:
        """The folder that gets the ``version_<n>`` folders."""
        return self.requested.parent

    @property
    def _name(self) -> str | None:
        return self.requested.name

    def _set_subfolder(self, subfolder: str) -> None:
        self._subfolder = subfolder
        self.chosen = self._versioned_folder / subfolder / self.requested.name

    def _subfolder_of(self, chosen: Path) -> str:
        return chosen.parent.name if _VERSION.fullmatch(chosen.parent.name) else _AS_GIVEN


class RunFolder(RunPath):
    """The folder one callback writes a whole run into (a tracker's ``logging_dir``), by the rule
    above: ``folder/version_<n>`` with ``if_exists="new_version"`` (the default), else ``folder``
    itself. Used as :class:`RunPath` is; nothing is checked or refused at the run's start."""

    def __init__(
        self,
        folder: str | os.PathLike,
        if_exists: Literal["new_version", "append"] = "new_version",
        owner: str | None = None,
    ):
        super().__init__(folder, if_exists, owner, choices=("new_version", "append"))

    def start_run(self, trainer) -> Path:
        """Choose once (unless the run resumes: its state says where); every process gets the main one's
        folder."""
        if self.chosen is None and trainer.resumed_from is None:
            self.choose(trainer)
        return self.path

    @property
    def _versioned_folder(self) -> Path:
        return self.requested

    @property
    def _name(self) -> str | None:
        return None

    def _set_subfolder(self, subfolder: str) -> None:
        self._subfolder = subfolder
        self.chosen = self.requested / subfolder

    def _subfolder_of(self, chosen: Path) -> str:
        return chosen.name if _VERSION.fullmatch(chosen.name) else _AS_GIVEN


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
    together), while it still has room for ``name``; otherwise a newly claimed one."""
    shared = _CHOSEN_VERSIONS.get(trainer, {}).get(folder.resolve())
    if shared is not None and (name is None or not _holds_data(version_folder(folder, shared) / name)):
        return shared
    try:
        return claim_version(folder)
    except OSError:  # a folder this process cannot write: start_run's check says so on every process
        return next_version(folder)
