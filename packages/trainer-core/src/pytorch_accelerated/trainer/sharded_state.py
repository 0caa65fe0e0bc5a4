"""A sharded model's (FSDP2) part of a training state: every process writes its own shards of the
model and the optimizer with ``torch.distributed.checkpoint`` (DCP) into the state's hidden folder,
without gathering them to one process; each file's digest is computed as it is written and
gathered into the manifest, which the main process writes last (:mod:`state_format`). Loading
reshards: such a state loads into this run's model and optimizer, sharded or not, on any number
of processes (DCP maps the saved shards onto this run's layout).

The manifest names the component ``{"format": "torch.distributed.checkpoint", "folder": "dcp",
"key": "model"}``; a trainer-core that does not read DCP refuses the state by name
(:func:`state_format.components_of`).
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from pathlib import Path
from typing import Iterator

import torch
from accelerate.utils import DistributedType, gather_object

from .checkpointing import check_model_fits
from .safe_files import CheckpointError, digesting_writes
from .state_format import DCP_FORMAT

DCP_FOLDER = "dcp"
_METADATA_NAME = ".metadata"


def is_sharded(accelerator) -> bool:
    """Whether this run's model is sharded by FSDP, whose training states store it with DCP."""
    return accelerator.distributed_type == DistributedType.FSDP


def stored_sharded(components: dict[str, dict]) -> list[str]:
    """The names of the components (of a manifest's ``"components"``) stored with DCP."""
    return [name for name, storage in components.items() if storage.get("format") == DCP_FORMAT]


# ---------------------------------------------------------------------------------- saving


def save_shards(
    accelerator, model, optimizer, state_folder: Path
) -> tuple[dict[str, dict], dict[str, tuple[int, str]]]:
    """Write this process's shards of ``model`` and ``optimizer`` into ``state_folder/dcp`` (call it
    on every process). Returns, on every process, the components as the manifest names them and every
    process's files with their sizes and digests. An optimizer without state yet (before its first
    update) is left to ``trainer.pt`` (torch's own, tiny): torch.distributed would take a step to
    create it."""
    from torch.distributed.checkpoint import FileSystemWriter, save
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    torch_optimizer = _torch_optimizer(optimizer)
    state = {"model": get_model_state_dict(model)}
    if torch_optimizer.state:
        state["optimizer"] = get_optimizer_state_dict(model, torch_optimizer)
    writer = FileSystemWriter(state_folder / DCP_FOLDER)  # files synced (sync_files=True)
    writer.fs = _DigestingFileSystem()
    with _without_process_group_warning():
        save(state, storage_writer=writer, no_dist=not torch.distributed.is_initialized())
    own = {f"{DCP_FOLDER}/{name}": written for name, written in writer.fs.written.items()}
    everyone = [own] if accelerator.num_processes == 1 else gather_object([own])
    files = {name: written for part in everyone for name, written in part.items()}
    components = {name: {"format": DCP_FORMAT, "folder": DCP_FOLDER, "key": name} for name in state}
    return components, files


class _DigestingFileSystem:
    """DCP's local file system, each file written through a digest of its bytes (never read back):
    ``written`` maps each file's name in the folder to its size and :data:`safe_files.FILE_DIGEST`."""

    def __init__(self):
        from torch.distributed.checkpoint.filesystem import FileSystem

        self._files = FileSystem()
        self.written: dict[str, tuple[int, str]] = {}

    def __getattr__(self, name: str):
        return getattr(self._files, name)

    @contextlib.contextmanager
    def create_stream(self, path, mode: str) -> Iterator:
        if "w" not in mode:
            with self._files.create_stream(path, mode) as stream:
                yield stream
            return
        with open(path, mode) as file:
            digesting = digesting_writes(file)
            yield digesting  # which DCP closes
        self.written[Path(path).name] = (Path(path).stat().st_size, digesting.digest.hexdigest())

    def rename(self, path, new_path) -> None:
        self._files.rename(path, new_path)  # DCP writes .metadata.tmp, then renames it
        self.written[Path(new_path).name] = self.written.pop(Path(path).name)


# ---------------------------------------------------------------------------------- loading


def check_fits(
    unwrapped_model, optimizer, state_dir: Path, components: dict[str, dict], optimizer_class: str
) -> None:
    """Raise :class:`CheckpointError` naming the difference unless the components stored with DCP in
    ``state_dir`` hold this model's weights (names, whole shapes) and this optimizer's class's state."""
    here = type(_torch_optimizer(optimizer)).__name__
    if "optimizer" in stored_sharded(components) and optimizer_class != here:
        raise CheckpointError(
            f"{str(state_dir)!r} holds the state of a {optimizer_class} optimizer; this trainer's is a "
            f"{here}. Resume with the optimizer the run was saved with."
        )
    storage = components["model"]
    metadata = _read_metadata(state_dir / storage["folder"])
    prefix = f"{storage['key']}."
    saved = {
        name[len(prefix) :]: torch.empty(entry.size, device="meta")
        for name, entry in metadata.state_dict_metadata.items()
        if name.startswith(prefix) and hasattr(entry, "size")
    }
    check_model_fits(unwrapped_model, saved, state_dir)


def load_shards(model, optimizer, state_dir: Path, components: dict[str, dict]) -> None:
    """Load the components stored with DCP in ``state_dir`` into this run's ``model`` and ``optimizer``
    (call it on every process): resharded onto this run's processes, sharded or not."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    names = stored_sharded(components)
    torch_optimizer = _torch_optimizer(optimizer)
    state = {"model": get_model_state_dict(model)} if "model" in names else {}
    if "optimizer" in names:
        state["optimizer"] = get_optimizer_state_dict(model, torch_optimizer)  # this run's layout
    folder = state_dir / components[names[0]]["folder"]
    with _without_process_group_warning():
        no_dist = not torch.distributed.is_initialized()
        load(state, storage_reader=_safe_reader(folder), planner=_safe_planner(), no_dist=no_dist)
    if "model" in state:
        set_model_state_dict(model, state["model"])
    if "optimizer" in state:
        set_optimizer_state_dict(model, torch_optimizer, state["optimizer"])


@contextlib.contextmanager
def _without_process_group_warning() -> Iterator[None]:
    """DCP warns on one process without a process group, where it saves or loads alone, as asked here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled, unavailable or uninitialized")
        yield


def _torch_optimizer(optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds torch's


# DCP's reader unpickles ``.metadata`` with pickle.load, and its planner loads non-tensor entries with
# torch.load(weights_only=False): both are replaced here, so loading a state never runs arbitrary code.
_METADATA_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "TensorStorageMetadata",
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "TensorProperties",
        "MetadataIndex",
        "StorageMeta",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
}


class _AllowListUnpickler(pickle.Unpickler):
    """Unpickles only what a DCP ``.metadata`` of model and optimizer states refers to (torch 2.13)."""

    def find_class(self, module: str, name: str):
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) in _METADATA_GLOBALS or dtype:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a DCP .metadata refers to {module}.{name}, which is not allowed")


def _read_metadata(folder: Path):
    try:
        with open(folder / _METADATA_NAME, "rb") as file:
            return _AllowListUnpickler(file).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError) as error:
        raise CheckpointError(
            f"Cannot read {str(folder / _METADATA_NAME)!r}: {error}. Resume from another training state."
        ) from error


def _safe_reader(folder: Path):
    """DCP's reader of ``folder``, its ``.metadata`` unpickled with an allow-list."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            metadata = _read_metadata(Path(self.path))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(folder)


def _safe_planner():
    """DCP's load planner, its non-tensor entries (the optimizer's hyperparameters) loaded weights-only."""
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return SafePlanner()
