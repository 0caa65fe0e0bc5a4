"""The random generators a training run draws from: their state captured, checked against a
dataloader, and put back (a training state holds them, so a resumed run draws the same numbers)."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch

from .safe_files import CheckpointError

# attributes through which a dataloader reaches its samplers' and its own random generators
_GENERATOR_PATHS = ("generator", "synchronized_generator", "sampler", "batch_sampler", "dataset")


def capture_rng_state(dataloader=None) -> dict[str, Any]:
    """The state of every random generator a run draws from: Python's, NumPy's, torch's (CPU and
    each CUDA device) and the generators reachable from ``dataloader`` (its samplers')."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "dataloader": [generator.get_state() for generator in _dataloader_generators(dataloader)],
    }
    iteration = getattr(dataloader, "iteration", None)  # accelerate's epoch counter, fed to set_epoch
    if isinstance(iteration, int):
        state["dataloader_iteration"] = iteration
    return state


def check_rng_state_fits(state: dict[str, Any], dataloader=None) -> None:
    """Raise :class:`CheckpointError` unless ``dataloader`` draws from as many generators as the saved
    run's."""
    found = len(_dataloader_generators(dataloader))
    if found != len(state["dataloader"]):
        raise CheckpointError(
            f"The training dataloader draws from {found} random generator(s), the saved run from "
            f"{len(state['dataloader'])}: build the dataloader (sampler, generator) as the saved run did."
        )


def count_dataloader_generators(dataloader) -> int:
    """How many random generators ``dataloader`` draws from (its samplers')."""
    return len(_dataloader_generators(dataloader))


def restore_rng_state(state: dict[str, Any], dataloader=None, loader_generators: bool = True) -> None:
    """Put every generator back in the state :func:`capture_rng_state` returned; with
    ``loader_generators=False``, all but ``dataloader``'s own (and its epoch counter)."""
    check_rng_state_fits(state, dataloader)
    generators = _dataloader_generators(dataloader)
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
    if "cuda_seed" in state and torch.cuda.is_available():  # a derived state (derived_rng_state)
        torch.cuda.manual_seed_all(state["cuda_seed"])
    if not loader_generators:
        return
    for generator, generator_state in zip(generators, state["dataloader"]):
        generator.set_state(generator_state)
    if "dataloader_iteration" in state:
        dataloader.iteration = state["dataloader_iteration"]


def derived_rng_state(state: dict[str, Any], process_index: int) -> dict[str, Any]:
    """The random state of a process that a saved run did not have: ``state`` (saved process 0's) with
    Python's, NumPy's, torch's and CUDA's generators seeded from a digest of it and ``process_index``, so
    that no two processes draw the same numbers; the dataloader's generators are left as they are."""
    digest = hashlib.blake2b(state["torch"].numpy().tobytes() + str(process_index).encode(), digest_size=8)
    seed = int.from_bytes(digest.digest(), "little") >> 1
    kind, keys, position, has_gauss, cached_gaussian = np.random.RandomState(seed % 2**32).get_state()
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "position": int(position),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }
    derived = {**state, "python": random.Random(seed).getstate(), "numpy": numpy_state}
    derived["torch"] = torch.Generator().manual_seed(seed).get_state()
    derived["cuda"], derived["cuda_seed"] = [], seed
    return derived


def _dataloader_generators(dataloader) -> list[torch.Generator]:
    """Every distinct ``torch.Generator`` reachable from ``dataloader``, in a fixed order."""
    found: dict[int, torch.Generator] = {}

    def visit(value, depth: int) -> None:
        if isinstance(value, torch.Generator):
            found.setdefault(id(value), value)
        elif value is not None and depth < 5:
            for name in _GENERATOR_PATHS:
                visit(getattr(value, name, None), depth + 1)

    visit(dataloader, 0)
    return list(found.values())
