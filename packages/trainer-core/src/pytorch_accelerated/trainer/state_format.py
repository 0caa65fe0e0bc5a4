"""The training-state format: how a state lies on disk, one folder holding everything an interrupted run needs
to continue
exactly, written atomically and read back without unpickling arbitrary objects.

A folder holds ``trainer.pt`` (what every process shares: weights, optimizer, scheduler, scaler,
run history, position, shared callback states), one ``process_<i>.pt`` per process (its random
generators, its running loss, its own run history (per-step values are each process's own), its
own callback states) and ``training_state.json``, the manifest,
written last: the file names, sizes and digests, the number of processes and the
position, as JSON. A folder whose replacement was killed between its two renames is put back
under its name on resume and on the next write; a state whose files no longer match their
digests is refused by name, and a folder of states falls back to the newest intact one. A format-2
manifest without its digests is damaged; format-1 ones (trainer-core 0.2) may have none, and load
unchecked with a warning. A state of a newer format is refused by name (:class:`NewerFormatError`),
never set aside or passed over: an older state resumed in its place would be written over it.

Each file's digest is computed from its bytes as they are written (never read back): XXH3-128
(``"xxh3_128"``) since format version 3, SHA-256 (``"sha256"``) before; both are checked on load.

The manifest also names where each large component is stored and how (``"components"``, since
format version 2): today the model's and the optimizer's state dicts are entries of
``trainer.pt`` (``{"format": "torch.save", "file": "trainer.pt", "key": "model"}``); a sharded
model's (FSDP) are written by every process into a ``torch.distributed.checkpoint`` folder
(``{"format": "torch.distributed.checkpoint", "folder": "dcp", "key": "model"}``, its files listed
with their digests like the others; :mod:`sharded_state`), without a new format version: a reader
refuses by name a component stored in a format it does not know, before reading any file. States
of format version 1 (no ``"components"``: both entries of ``trainer.pt``) still load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

import torch

from .safe_files import (
    FILE_DIGEST,
    CheckpointError,
    file_digest,
    is_out_of_space,
    out_of_space_error,
    safe_torch_load,
    stored_bytes,
    write_with_digest,
)
from ._warnings import warn_user

MANIFEST_NAME = "training_state.json"
SHARED_FILE_NAME = "trainer.pt"
_FORMAT = "pytorch_accelerated.training_state"
_FORMAT_VERSION = 3  # 3: file digests XXH3-128, computed while writing (SHA-256 before)
_READABLE_FORMAT_VERSIONS = (1, 2, 3)
#: Where the large components are stored: entries of trainer.pt, each written with torch.save.
#: Version 1 states stored them so without saying it.
_COMPONENTS = {
    name: {"format": "torch.save", "file": "trainer.pt", "key": name} for name in ("model", "optimizer")
}
#: A sharded model's components: each process's shards in a folder of torch.distributed.checkpoint.
DCP_FORMAT = "torch.distributed.checkpoint"
_READABLE_COMPONENT_FORMATS = ("torch.save", DCP_FORMAT)
_SAVE_POINT_ORDER = {"run_start": 0, "update": 1, "epoch_end": 2, "run_end": 3}
_MANIFEST_DIGEST_KEY = "manifest_sha256"
_MANIFEST_FIELDS = {"saved_at": str, "num_processes": int, "position": dict, "files": dict}
_REMOVED_SUFFIX = ".removed"  # a state being deleted: hidden from the listing first


class NewerFormatError(CheckpointError):
    """A training state written in a format newer than this trainer-core reads: refused by name,
    never set aside as damaged nor passed over for an older state."""


def process_file_name(process_index: int) -> str:
    return f"process_{process_index}.pt"


# ---------------------------------------------------------------------------------- writing


def write_training_state(
    save_dir: str | os.PathLike,
    shared: dict[str, Any],
    per_process: list[dict[str, Any]],
    position: dict[str, Any],
    stored_apart: tuple[dict[str, dict], dict[str, tuple[int, str]]] | None = None,
) -> Path:
    """Write a training state folder (main process only), atomically: the files go to a hidden
    folder beside ``save_dir``, which is renamed to ``save_dir`` once complete and synced, so a
    folder under that name is always complete, and one that was there survives a failed write.
    ``stored_apart``: the components written into the hidden folder already (:func:`start_writing`)
    and their files' sizes and digests, by name (a sharded model's, written by every process)."""
    save_dir = Path(save_dir)
    temporary = start_writing(save_dir) if stored_apart is None else writing_folder(save_dir)
    components, apart_files = stored_apart or ({}, {})
    try:
        files = {**_write_parts(temporary, shared, per_process), **apart_files}
        manifest = _manifest(files, len(per_process), position, {**_COMPONENTS, **components})
        _write_json(manifest, temporary / MANIFEST_NAME)
        for folder in {(temporary / name).parent for name in apart_files}:
            _fsync_folder(folder)
        _fsync_folder(temporary)
        _install_folder(temporary, save_dir)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if is_out_of_space(error):
            needed = stored_bytes([shared, per_process])
            raise out_of_space_error(
                f"the training state {str(save_dir)!r}", save_dir.parent, needed
            ) from error
        raise
    return save_dir


def writing_folder(save_dir: str | os.PathLike) -> Path:
    """The hidden folder the training state ``save_dir`` is written into before it is renamed."""
    save_dir = Path(save_dir)
    return save_dir.with_name(f".{save_dir.name}.incomplete")


def start_writing(save_dir: str | os.PathLike) -> Path:
    """Make the hidden folder of the training state ``save_dir`` (main process only), once what
    earlier writes killed midway left beside it is cleaned up; returns it."""
    save_dir = Path(save_dir)
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_up_interrupted_writes(save_dir.parent)
    temporary = writing_folder(save_dir)
    temporary.mkdir()
    return temporary


def _write_parts(folder: Path, shared: dict, per_process: list[dict]) -> dict[str, tuple[int, str]]:
    """Write the state's files into ``folder``, each synced: their sizes and digests, by name."""
    parts = {SHARED_FILE_NAME: shared}
    parts.update((process_file_name(index), state) for index, state in enumerate(per_process))
    return {
        name: write_with_digest(folder / name, functools.partial(torch.save, part))
        for name, part in parts.items()
    }


def _manifest(
    files: dict[str, tuple[int, str]],
    num_processes: int,
    position: dict[str, Any],
    components: dict[str, dict],
) -> dict[str, Any]:
    manifest = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "num_processes": num_processes,
        "position": position,
        "components": components,
        "files": {name: size for name, (size, _) in sorted(files.items())},
        FILE_DIGEST: {name: digest for name, (_, digest) in sorted(files.items())},
    }
    manifest[_MANIFEST_DIGEST_KEY] = _manifest_digest(manifest)
    return manifest


def _write_json(value, path: Path) -> None:
    with open(path, "x", encoding="utf-8") as file:
        json.dump(value, file, indent=2)
        file.flush()
        os.fsync(file.fileno())


def _clean_up_interrupted_writes(folder: Path) -> None:
    """Put back what a write killed between its renames left in ``folder`` (see
    :func:`recover_interrupted_replacements`), then remove what other killed writes and removals left."""
    recover_interrupted_replacements(folder)
    for pattern in (".*.incomplete", ".*.replaced", f".*{_REMOVED_SUFFIX}"):
        for leftover in folder.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def remove_training_state(state_dir: str | os.PathLike) -> None:
    """Delete the training state folder ``state_dir`` (pruning old states): it is first renamed out of
    the listing, atomically, so that a process killed while deleting it leaves no half-deleted folder
    under a state's name (never listed, or set aside as damaged, and never pruned); the next state
    written beside it removes what is left. A folder that is no longer there is left alone.

    Args:
        state_dir: the state's folder, as :func:`list_training_states` lists it.
    """
    state_dir = Path(state_dir)
    removed = state_dir.with_name(f".{state_dir.name}{_REMOVED_SUFFIX}")
    shutil.rmtree(removed, ignore_errors=True)  # left by a killed removal of a state of the same name
    try:
        os.replace(state_dir, removed)
    except FileNotFoundError:
        return
    shutil.rmtree(removed, ignore_errors=True)


def recover_interrupted_replacements(folder: str | os.PathLike) -> None:
    """Give back its name to each state in ``folder`` whose replacement was killed between the two
    renames (``X`` moved to ``.X.replaced``, ``.X.incomplete`` not yet renamed to ``X``): the new
    state if it is complete, else the old one. Safe to run on several processes at once; call it
    while no state is being written there."""
    folder = Path(folder)
    for replaced in folder.glob(".*.replaced"):
        final = folder / replaced.name[1 : -len(".replaced")]
        if final.exists():
            continue
        new = final.with_name(f".{final.name}.incomplete")
        for candidate in (new, replaced):
            if _is_complete(candidate):
                try:
                    os.replace(candidate, final)
                except OSError:  # another process put one back first
                    pass
                break


def _is_complete(state_dir: Path) -> bool:
    try:
        read_manifest(state_dir)
    except NewerFormatError:
        return True  # complete, in a format this trainer-core does not read
    except (CheckpointError, OSError):  # OSError: another process renamed it meanwhile
        return False
    return True


def _manifest_digest(manifest: dict[str, Any]) -> str:
    """The SHA-256 of what the manifest says (its canonical JSON, less this digest): one changed
    byte in a value (a step count, a file's size or digest) no longer passes unseen."""
    content = json.loads(
        json.dumps({key: value for key, value in manifest.items() if key != _MANIFEST_DIGEST_KEY})
    )
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _install_folder(temporary: Path, final: Path) -> None:
    """Rename ``temporary`` to ``final``; an existing ``final`` is replaced only once the new one is in
    place."""
    if final.exists():
        replaced = final.with_name(f".{final.name}.replaced")
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
        os.replace(temporary, final)
        shutil.rmtree(replaced)
    else:
        os.replace(temporary, final)
    _fsync_folder(final.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; Windows cannot open a folder for this)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---------------------------------------------------------------------------------- reading


def read_manifest(state_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a training state folder, once it is shown complete: every file it lists
    is there with its full size, with the SHA-256 its format always carries. Raises
    :class:`CheckpointError` naming what is wrong (:class:`NewerFormatError` for a state that a
    newer trainer-core wrote, which is never taken for a damaged one)."""
    state_dir = Path(state_dir)
    manifest_path = state_dir / MANIFEST_NAME
    if state_dir.is_file():
        raise CheckpointError(
            f"{str(state_dir)!r} is a file; a training state is a folder (Trainer.save_training_state writes"
            " one). Pass the folder."
        )
    if not state_dir.is_dir():
        raise CheckpointError(f"No training state at {str(state_dir)!r}: check the path.")
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{str(state_dir)!r} is not a complete training state: it has no {MANIFEST_NAME} "
            "(Trainer.save_training_state writes it last). Resume from another one."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"Cannot read {str(manifest_path)!r}: {error}. Resume from another training state."
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{str(manifest_path)!r} is not a training state manifest.")
    _check_format_version(state_dir, manifest)  # first: a newer format may check its content otherwise
    _check_manifest_digest(manifest_path, manifest)
    if not all(isinstance(manifest.get(key), kind) for key, kind in _MANIFEST_FIELDS.items()):
        raise CheckpointError(
            f"{str(manifest_path)!r} is damaged: it lacks some of {sorted(_MANIFEST_FIELDS)}."
        )
    _check_file_digests_listed(manifest_path, manifest)
    for name, size in manifest["files"].items():
        path = state_dir / name
        if not path.is_file():
            raise CheckpointError(
                f"The training state {str(state_dir)!r} is missing its part {name!r}; resume from another"
                " one."
            )
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{str(path)!r} is truncated or was changed: {path.stat().st_size} bytes where {size} were "
                "written. Resume from another training state."
            )
    return manifest


def _check_format_version(state_dir: Path, manifest: dict[str, Any]) -> None:
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > _FORMAT_VERSION:
        raise NewerFormatError(
            f"{str(state_dir)!r} was written by a newer trainer-core (training-state format {version}; this"
            f" one reads formats {', '.join(map(str, _READABLE_FORMAT_VERSIONS))}): upgrade trainer-core to"
            " resume from it. It is left as it is, and no older state is used in its place."
        )
    if version not in _READABLE_FORMAT_VERSIONS:
        raise CheckpointError(
            f"{str(state_dir / MANIFEST_NAME)!r} is damaged: its format_version is {version!r} (this"
            f" trainer-core reads formats {', '.join(map(str, _READABLE_FORMAT_VERSIONS))}). Resume from"
            " another training state."
        )


def _check_manifest_digest(manifest_path: Path, manifest: dict[str, Any]) -> None:
    """Manifests of format 2 and later always carry the SHA-256 of their own content; format 1 ones never
    did."""
    recorded_digest = manifest.get(_MANIFEST_DIGEST_KEY)
    if recorded_digest is None and manifest["format_version"] >= 2:
        raise CheckpointError(
            f"{str(manifest_path)!r} has no {_MANIFEST_DIGEST_KEY!r}, which training-state format "
            f"{manifest['format_version']} always writes: it was edited or damaged, and its files cannot be "
            "trusted. Resume from another training state."
        )
    if recorded_digest is not None and recorded_digest != _manifest_digest(manifest):
        raise CheckpointError(
            f"{str(manifest_path)!r} is damaged: its content no longer matches the SHA-256 it was written"
            " with (a changed byte). Resume from another training state."
        )


def _check_file_digests_listed(manifest_path: Path, manifest: dict[str, Any]) -> None:
    """A digest for every file the manifest lists; only format 1 states of trainer-core 0.2 have none at
    all."""
    algorithm, digests = _file_digests(manifest)
    if not digests and manifest["format_version"] == 1:
        return  # loaded unchecked, with a warning (load_training_state)
    missing = sorted(set(manifest["files"]) - set(digests))
    if missing:
        raise CheckpointError(
            f"{str(manifest_path)!r} has no {algorithm} digest for {missing}, where training-state format"
            f" {manifest['format_version']} records one for every file: it was edited or damaged, and those"
            " files cannot be checked. Resume from another training state."
        )


def check_digests(
    state_dir: str | os.PathLike, manifest: dict[str, Any], names: Iterable[str] | None = None
) -> None:
    """Raise :class:`CheckpointError` naming the first of the files ``names`` (all by default)
    whose digest differs from the manifest's (:func:`read_manifest` has shown that it records one
    for each; only format 1 states of trainer-core 0.2 have none, and pass unchecked)."""
    state_dir = Path(state_dir)
    algorithm, digests = _file_digests(manifest)
    for name in manifest["files"] if names is None else names:
        path = state_dir / name
        if name in digests and _cached_digest(path, algorithm) != digests[name]:
            raise CheckpointError(
                f"{str(path)!r} is corrupted: its content no longer matches the digest ({algorithm}) recorded"
                f" in {MANIFEST_NAME} when it was saved (a flipped bit, an edit, or a bad disk). Resume from"
                " another training state."
            )


def _file_digests(manifest: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The algorithm of the manifest's file digests, and the digests by file name (none in the earliest
    states)."""
    for algorithm in (FILE_DIGEST, "sha256"):
        if isinstance(manifest.get(algorithm), dict):
            return algorithm, manifest[algorithm]
    return FILE_DIGEST, {}


_digests_read: dict[tuple, str] = {}


def _cached_digest(path: Path, algorithm: str) -> str:
    """``path``'s digest, read once per process for each version of the file (choosing a state
    checks it, and loading it does not read it a third time)."""
    status = path.stat()
    key = (str(path.resolve()), status.st_ino, status.st_size, status.st_mtime_ns, algorithm)
    if key not in _digests_read:
        _digests_read[key] = file_digest(path, algorithm)
    return _digests_read[key]


def load_training_state(state_dir: str | os.PathLike, process_index: int) -> tuple[dict, dict, dict]:
    """The manifest, the shared state and saved process ``process_index``'s state of a training state
    folder, once their files are shown intact (their sizes and digests as written); a process the saved run
    did not have reads saved process 0's (``process_change`` says what it takes of it)."""
    state_dir = Path(state_dir)
    manifest = read_manifest(state_dir)
    if process_index >= manifest["num_processes"]:
        process_index = 0
    if not _file_digests(manifest)[1]:
        warn_user(
            f"{str(state_dir)!r} was written by trainer-core 0.2, without SHA-256 digests: its files are"
            " loaded unchecked (a damaged byte would go unnoticed). States this trainer-core saves are"
            " checked."
        )
    components = components_of(state_dir, manifest)
    saved = {name: storage for name, storage in components.items() if storage["format"] == "torch.save"}
    files_saved = sorted({storage["file"] for storage in saved.values()} - {SHARED_FILE_NAME})
    # DCP's files are read by whichever processes hold their shards now: all are checked
    folders = [storage for storage in components.values() if "folder" in storage]
    dcp_files = [name for storage in folders for name in _files_in(manifest, storage)]
    own = process_file_name(process_index)
    check_digests(state_dir, manifest, [SHARED_FILE_NAME, own, *files_saved, *dcp_files])
    shared = safe_torch_load(state_dir / SHARED_FILE_NAME)
    files = {SHARED_FILE_NAME: shared, **{name: safe_torch_load(state_dir / name) for name in files_saved}}
    for name, storage in saved.items():
        if storage["key"] not in files[storage["file"]]:
            raise CheckpointError(
                f"{str(state_dir / storage['file'])!r} has no {storage['key']!r}, where {MANIFEST_NAME} says"
                f" the {name} state is: the state is damaged. Resume from another training state."
            )
        shared[name] = files[storage["file"]][storage["key"]]
    own = safe_torch_load(state_dir / process_file_name(process_index))
    return manifest, shared, own


def load_process_states(
    state_dir: str | os.PathLike, manifest: dict[str, Any], indices: list[int]
) -> list[dict]:
    """The states of saved processes ``indices`` (``manifest`` read before), once their files are intact."""
    state_dir = Path(state_dir)
    names = [process_file_name(index) for index in indices]
    check_digests(state_dir, manifest, names)
    return [safe_torch_load(state_dir / name) for name in names]


def components_of(state_dir: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Where and how the manifest says each large component (model, optimizer) is stored, once
    shown readable: a storage format this trainer-core reads, in a file the manifest lists (a
    ``torch.distributed.checkpoint`` folder whose ``.metadata`` it lists)."""
    components = manifest.get("components") if manifest["format_version"] >= 2 else _COMPONENTS
    where = repr(str(state_dir))
    if not isinstance(components, dict) or set(components) != set(_COMPONENTS):
        raise CheckpointError(
            f"{where} is damaged: its {MANIFEST_NAME} does not say where {sorted(_COMPONENTS)} are stored."
        )
    for name, storage in components.items():
        kind = storage.get("format") if isinstance(storage, dict) else None
        if kind not in _READABLE_COMPONENT_FORMATS:
            raise CheckpointError(
                f"{where} stores its {name} state in the format {kind!r}, which this trainer-core cannot read"
                f" (it reads {', '.join(_READABLE_COMPONENT_FORMATS)}): it was written by a newer"
                " trainer-core. Resume with the trainer-core that wrote it."
            )
        listed = storage.get("file") if kind == "torch.save" else f"{storage.get('folder')}/.metadata"
        if not isinstance(storage.get("key"), str) or listed not in manifest["files"]:
            raise CheckpointError(
                f"{where} is damaged: its {MANIFEST_NAME} stores the {name} state in a file it does not list."
            )
    return components


def _files_in(manifest: dict[str, Any], storage: dict[str, str]) -> list[str]:
    """The files the manifest lists in the folder a component is stored in (with DCP)."""
    return sorted(name for name in manifest["files"] if name.startswith(f"{storage['folder']}/"))


def training_state_progress(manifest: dict[str, Any]) -> tuple:
    """How far the run had got when the state was saved, as a sortable key: later states sort higher."""
    position = manifest["position"]
    return (
        position["completed_update_steps"],
        position["epochs_completed"],
        position["epoch_batches"],
        position["stopped"],
        _SAVE_POINT_ORDER.get(position["point"], -1),
        manifest["saved_at"],
    )


def list_training_states(folder: str | os.PathLike) -> list[Path]:
    """The complete training states directly inside ``folder``, oldest progress first. Folders
    whose names start with a dot (writes in progress) and incomplete or damaged ones are left out;
    a state written by a newer trainer-core raises :class:`NewerFormatError` (it cannot be ordered,
    and may be the newest)."""
    found = []
    for candidate in _state_folders(folder):
        try:
            found.append((training_state_progress(read_manifest(candidate)), candidate))
        except NewerFormatError:
            raise
        except (CheckpointError, KeyError, TypeError):
            continue
    return [path for _, path in sorted(found)]


def _state_folders(folder: str | os.PathLike) -> list[Path]:
    """The folders directly inside ``folder`` that hold a manifest, but for hidden ones (writes in
    progress)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = sorted(folder.iterdir())
    return [path for path in candidates if not path.name.startswith(".") and (path / MANIFEST_NAME).is_file()]


def find_latest_training_state(folder: str | os.PathLike) -> Path | None:
    """The training state inside ``folder`` that got furthest among the intact ones, or None when
    there is none. A state whose replacement was killed midway is put back first; a newer state
    whose files no longer match their digests, and any state whose manifest is damaged, is passed
    over, with a warning naming it, and renamed ``.<name>.damaged`` (kept, no longer listed).
    Raises :class:`CheckpointError` when every state there is damaged, and
    :class:`NewerFormatError`, before anything is renamed, when a newer trainer-core wrote one."""
    recover_interrupted_replacements(folder)
    damaged = []
    # a damaged manifest: no progress to order by
    for state, error in _states_with_unreadable_manifests(folder):
        damaged.append(error)
        _set_aside(state)
    for state in reversed(list_training_states(folder)):
        try:
            check_digests(state, read_manifest(state))
        except (CheckpointError, OSError) as error:  # OSError: another process set it aside meanwhile
            damaged.append(str(error))
            _set_aside(state)
            continue
        if damaged:
            warn_user(
                f"{len(damaged)} training state(s) in {str(folder)!r} are damaged and passed over "
                f"({' '.join(damaged)}); using {str(state)!r}, the newest intact one. The damaged ones are "
                "renamed .<name>.damaged, kept for inspection."
            )
        return state
    if damaged:
        raise CheckpointError(f"No intact training state in {str(folder)!r}: {' '.join(damaged)}")
    return None


def _states_with_unreadable_manifests(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """The states in ``folder`` (a manifest there) that :func:`list_training_states` leaves out
    because the manifest or a part it lists is damaged, each with the error that says how. Raises
    :class:`NewerFormatError` for one a newer trainer-core wrote."""
    found = []
    for candidate in _state_folders(folder):
        try:
            training_state_progress(read_manifest(candidate))
        except NewerFormatError:
            raise
        except CheckpointError as error:
            found.append((candidate, str(error)))
        except (KeyError, TypeError) as error:
            found.append((candidate, f"{str(candidate / MANIFEST_NAME)!r} is damaged: {error!r}."))
    return found


def _set_aside(state: Path) -> None:
    """Rename a damaged state out of the listing (a run resumed before it does not mix with it)."""
    number, aside = 1, state.with_name(f".{state.name}.damaged")
    while aside.exists():
        number += 1
        aside = state.with_name(f".{state.name}.damaged-{number}")
    try:
        os.replace(state, aside)
    # another process set it aside first, or the folder is read-only: it is passed over anyway
    except OSError:
        pass


def resolve_training_state(path: str | os.PathLike) -> Path:
    """The state ``resume_from=path`` means: ``path`` itself (put back first if its replacement was
    killed midway), or for a folder of states the newest intact one in it."""
    path = Path(path)
    recover_interrupted_replacements(path.parent)
    if (path / MANIFEST_NAME).exists():
        return path
    return find_latest_training_state(path) or path  # an error names what is wrong when it is loaded


def newest_of(paths: Iterable[Path]) -> Path | None:
    """The training state among ``paths`` that got furthest."""
    paths = list(paths)
    if not paths:
        return None
    return max(paths, key=lambda path: training_state_progress(read_manifest(path)))
