"""The data position of a training run: a resumed epoch starts at its saved batch without loading the
batches before it, and the random numbers drawn while loading do not depend on when, or in which process,
a batch is loaded.

The batch sampler skips to the position (the epoch's random state restored first: the same order, nothing
fetched), where the generators are put back as saved before the next batch loads, so that one process loading
in its main process draws from the run's generators as plain PyTorch does; a batch loaded where that cannot
hold (in a dataloader worker, or ahead of its step through accelerate's loader) is fetched with the CPU
generators seeded from the epoch's seed and its indices (:class:`SeededFetches`); an iterable dataset resumes
from its own ``state_dict``; where none of that is exact the epoch is replayed, with one warning naming why.
The package README's "Exact resume" says why each choice, and what accelerate's ``skip_first_batches`` and
torchdata's ``StatefulDataLoader`` do instead.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
    default_collate,
    get_worker_info,
)
from torch.utils.data.distributed import DistributedSampler

from .safe_files import CheckpointError
from ._warnings import warn_user

_KNOWN_SAMPLERS = (SequentialSampler, RandomSampler, SubsetRandomSampler, WeightedRandomSampler, DistributedSampler)
_RANDOM_GENERATOR_TYPES = (np.random.Generator, np.random.RandomState, random.Random, torch.Generator)
_EXHAUSTED = object()


class TrainData:
    """The training dataloader, set up once per run so that a resumed epoch starts where the saved one was.

    ``resuming.Resume`` calls :meth:`start_epoch` at each epoch's start, :meth:`batches` for its batches,
    :meth:`state_dict` when it saves and :meth:`load_state_dict` when it resumes.

    Args:
        dataloader: the prepared training dataloader.
        num_processes: the run's number of processes.
    """

    def __init__(self, dataloader: DataLoader, num_processes: int = 1):
        self.dataloader = dataloader
        loader = getattr(dataloader, "base_dataloader", dataloader)  # accelerate's prepared loaders wrap a torch one
        self._loader = loader
        self._stateful_dataset = _stateful_iterable(loader, num_processes)
        self.replay_reason = None if self._stateful_dataset is not None else _why_it_must_replay(loader, num_processes)
        self._skipper: _SkippingBatchSampler | None = None
        self._fetches: SeededFetches | None = None
        if isinstance(loader.batch_sampler, _SkippingBatchSampler):  # set up by an earlier train() with this loader
            self._skipper = loader.batch_sampler
        elif self.replay_reason is None and self._stateful_dataset is None:
            self._skipper = _SkippingBatchSampler(loader.batch_sampler)
            # torch refuses to set these once a DataLoader is built, for a sampler or dataset that would
            # not match its batch_size and length; these yield the same index lists and samples
            object.__setattr__(loader, "batch_sampler", self._skipper)
        if self._skipper is not None:
            self._fetches = _seeded_fetches_of(loader)
        if self._fetches is not None:
            # one process loading in its main process draws from the run's generators, saved with a state and put
            # back at its position (batches); workers cannot, nor accelerate's loader (several processes), which
            # reads a batch ahead of its step: one loaded before a state was saved would be loaded after it on resume
            self._seed_fetches(loader.num_workers > 0 or num_processes > 1 or dataloader is not loader)
        self._warned = False
        # a stream's position at its start: put back after a resumed epoch, as datasets that keep a loaded
        # state for every later iteration (HF datasets does, for its epoch) would otherwise start there again
        self._start_state = self._stateful_dataset.state_dict() if self._stateful_dataset is not None else None
        self._resumed_epochs_left = 0

    @property
    def seeds_fetches(self) -> bool:
        """Whether each epoch's fetches are seeded from the random state the epoch started from: in
        dataloader workers, or ahead of their step through accelerate's loader (else they draw from
        the run's generators, as plain PyTorch's do)."""
        return self._fetches is not None and self._loader.dataset is self._fetches

    def _seed_fetches(self, seeded: bool) -> None:
        """Fetch through :class:`SeededFetches` (collated there), or as the loader was given: plain PyTorch."""
        fetches = self._fetches
        # torch refuses to set a built DataLoader's dataset: this one yields the same samples
        object.__setattr__(self._loader, "dataset", fetches if seeded else fetches.dataset)
        self._loader.collate_fn = _collated if seeded else fetches.collate_fn

    def start_epoch(self, epoch_start_rng: dict[str, Any] | None) -> None:
        """Give this epoch's fetches their seed: a digest of the random state the epoch started
        from (restored first on resume, so the same seed), which every epoch changes."""
        if self._resumed_epochs_left:
            self._resumed_epochs_left -= 1
            if self._resumed_epochs_left == 0:  # the epoch after the resumed one reads the stream from its start
                self._stateful_dataset.load_state_dict(self._start_state)
        if self.seeds_fetches:
            self._fetches.epoch_seed = epoch_seed(epoch_start_rng)

    def batches(self, skip: int = 0, at_position: Callable[[], None] | None = None) -> Iterator:
        """The epoch's batches after the first ``skip``. A skipped epoch's first batch is loaded
        here, so that whatever the start of an iteration draws (the permutation, the workers'
        base seed) is drawn from the epoch's restored random state, as in the saved run; where the
        batch sampler skips, ``at_position`` is called once the skipped index lists are drawn,
        before the first batch after them is loaded (there the random state is put back as saved)."""
        if skip == 0 or self._stateful_dataset is not None:
            return iter(self.dataloader)
        if self._skipper is None:
            return self._replayed(skip)
        self._skipper.skip, self._skipper.at_position = skip, at_position
        batches = iter(self.dataloader)
        try:
            first = next(batches, _EXHAUSTED)  # the loader has asked for its index lists by now
        finally:
            self._skipper.skip, self._skipper.at_position = 0, None
        if first is _EXHAUSTED:
            if skip > len(self._skipper):  # saved after the epoch's last update, before its end: nothing is left
                raise _ran_out(len(self._skipper), skip)
            return batches
        return itertools.chain([first], batches)

    def _replayed(self, skip: int) -> Iterator:
        batches = iter(self.dataloader)
        for skipped in range(skip):
            if next(batches, _EXHAUSTED) is _EXHAUSTED:
                raise _ran_out(skipped, skip)
        return batches

    def state_dict(self) -> dict[str, Any] | None:
        """The iterable dataset's own position, where it keeps one; whether the fetches are seeded,
        where they may be; else None."""
        if self._stateful_dataset is not None:
            return self._stateful_dataset.state_dict()
        return None if self._fetches is None else {"seeded_fetches": self.seeds_fetches}

    def load_state_dict(self, state: dict[str, Any] | None, mid_epoch: bool) -> None:
        """On resume: put the iterable dataset back where it was, fetch as the saved run did, or
        warn once that this epoch is replayed (and why) where the position cannot be skipped to exactly."""
        if self._stateful_dataset is not None and state is not None:
            if mid_epoch:  # a state saved between epochs: the next epoch reads the data from its start
                self._stateful_dataset.load_state_dict(state)
                self._resumed_epochs_left = 2  # this epoch, then the next one's start
            return
        if self._fetches is not None:
            self._fetch_as_saved(state)
        persistent = getattr(self.dataloader, "persistent_workers", False) and self.dataloader.num_workers > 0
        if self.replay_reason is not None and (mid_epoch or persistent) and not self._warned:
            self._warned = True  # once per train(): a resume is one event
            warn_user(self._inexact_message(persistent))

    def _fetch_as_saved(self, state: dict[str, Any] | None) -> None:
        """Seed the fetches where the saved run did (states of earlier versions hold no word: they seeded all), so that
        a resume with fewer dataloader workers stays exact; warn where they can no longer draw as saved."""
        saved_seeded = True if state is None else state.get("seeded_fetches", True)
        if saved_seeded and not self.seeds_fetches:
            self._seed_fetches(True)  # in a fork in the main process: the saved run's generators were never drawn from
        elif not saved_seeded and self.seeds_fetches and not self._warned:
            self._warned = True
            workers = self._loader.num_workers
            where = f"in {workers} dataloader workers" if workers else "through accelerate's prepared dataloader"
            warn_user(
                "The saved run loaded its batches in its main process, drawing their random numbers from the run's "
                f"generators; this one loads them {where}, which cannot, so random augmentations will differ from "
                "the interrupted run's. Resume with num_workers=0 for an exact resume."
            )

    def _inexact_message(self, persistent: bool) -> str:
        if persistent:
            return (
                "The training dataloader has persistent_workers=True: its workers keep their random state from "
                "epoch to epoch, which a resumed run cannot rebuild, so its data order and augmentations will "
                "differ from the interrupted run's. Use persistent_workers=False for exact resumes."
            )
        return (
            f"Resuming inside an epoch by loading again the batches the saved run had seen, because "
            f"{self.replay_reason}. This costs the loading of those batches, and random numbers drawn while "
            "loading may differ from the interrupted run's. See trainer-core's README, 'Exact resume'."
        )


class SeededFetches(Dataset):
    """A map-style dataset whose batches are fetched and collated with Python's, NumPy's and
    torch's CPU generators seeded from ``epoch_seed`` and the batch's indices (in the main process
    in a fork of the generators, put back afterwards), so that their random numbers do not depend on
    where they are loaded; the loader's ``collate_fn`` then passes them through. Other attributes are
    the wrapped dataset's. (One process loading in its main process fetches without it, as plain PyTorch.)"""

    def __init__(self, dataset, collate_fn):
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def __getitems__(self, indices):
        seed = batch_seed(self.epoch_seed, indices)
        if get_worker_info() is not None:  # a worker's generators are its own: no need to put them back
            _seed_cpu_generators(seed)
            return _Collated(self._fetch(indices))
        saved = (torch.default_generator.get_state(), random.getstate(), np.random.get_state())
        try:
            _seed_cpu_generators(seed)
            return _Collated(self._fetch(indices))
        finally:
            torch.default_generator.set_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])

    def _fetch(self, indices):
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(indices) if getitems is not None else [self.dataset[index] for index in indices]
        return self.collate_fn(samples)

    def __getattr__(self, name: str):
        if name in ("dataset", "__setstate__", "__getstate__"):  # unpickling in a worker asks before dataset is set
            raise AttributeError(name)
        return getattr(self.dataset, name)


class _Collated:
    """A batch collated inside the seeded fetch, passed through the loader's collate_fn untouched."""

    __slots__ = ("batch",)

    def __init__(self, batch):
        self.batch = batch


def _collated(data):
    return data.batch


class _SkippingBatchSampler:
    """The loader's batch sampler, whose iterations drop their first ``skip`` index lists (drawn,
    never fetched) while ``skip`` is set, then call ``at_position`` (if set) before giving the next.
    Everything else (``batch_size``, ``sampler``, ``set_epoch``, ...) is the wrapped one's."""

    def __init__(self, batch_sampler):
        self._batch_sampler = batch_sampler
        self.skip = 0
        self.at_position: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def __iter__(self) -> Iterator:
        if self.skip == 0:
            return iter(self._batch_sampler)
        # lazy, as the wrapped sampler is: nothing is drawn before the first batch is asked for (torch's
        # worker loader calls iter() twice and runs only the second)
        return self._from_position(itertools.islice(self._batch_sampler, self.skip, None), self.at_position)

    @staticmethod
    def _from_position(index_lists: Iterator, at_position: Callable[[], None] | None) -> Iterator:
        first = next(index_lists, _EXHAUSTED)
        if first is _EXHAUSTED:
            return
        if at_position is not None:
            at_position()
        yield first
        yield from index_lists

    def __getattr__(self, name: str):
        if name == "_batch_sampler":
            raise AttributeError(name)
        return getattr(self._batch_sampler, name)


def epoch_seed(rng_state: dict[str, Any]) -> int:
    """A 63-bit digest of the torch generators in a captured random state (the global one and the
    dataloader's): the seed of an epoch's fetches."""
    digest = hashlib.blake2b(digest_size=8)
    for state in (rng_state["torch"], *rng_state["dataloader"]):
        digest.update(state.numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1


def batch_seed(epoch_seed_value: int, indices) -> int:
    """The seed of one batch's fetch: the epoch's seed and the batch's indices (which identify it
    whichever process or worker loads it, also after accelerate re-slices batches per process)."""
    digest = hashlib.blake2b(f"{epoch_seed_value}:{list(indices)!r}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def _seed_cpu_generators(seed: int) -> None:
    torch.default_generator.manual_seed(seed)  # not torch.manual_seed: that reseeds the CUDA generators too
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _seeded_fetches_of(loader: DataLoader) -> SeededFetches | None:
    """The loader's fetches, able to be seeded: those of an earlier train() with this loader, new ones
    where its dataset or collate_fn may draw random numbers, else None."""
    if isinstance(loader.dataset, SeededFetches):
        return loader.dataset
    if _may_draw_random_numbers(loader.dataset, loader.collate_fn):
        return SeededFetches(loader.dataset, loader.collate_fn)
    return None


def _may_draw_random_numbers(dataset, collate_fn) -> bool:
    declared = getattr(dataset, "draws_random_numbers", None)
    if declared is not None:
        return bool(declared)
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return not (type(dataset) is TensorDataset and collate_fn is default_collate)


def _why_it_must_replay(loader: DataLoader, num_processes: int) -> str | None:
    """Why a resumed epoch of ``loader`` cannot be skipped to exactly (None: it can)."""
    if isinstance(loader.dataset, IterableDataset):
        if not _has_state_dict(loader.dataset):
            return f"the iterable dataset {type(loader.dataset).__name__} has no state_dict()/load_state_dict() to resume from"
        where = "on several processes" if num_processes > 1 else "with num_workers > 0"
        return f"the iterable dataset's state_dict() is read in the main process, which does not iterate it {where}"
    if loader.persistent_workers and loader.num_workers > 0:
        return "the training dataloader has persistent_workers=True (its workers keep their random state from epoch to epoch)"
    batch_sampler = loader.batch_sampler
    if isinstance(batch_sampler, _SkippingBatchSampler):
        batch_sampler = batch_sampler._batch_sampler
    if batch_sampler is None:
        return "the training dataloader has batch_size=None (it fetches one index at a time)"
    inner = getattr(batch_sampler, "batch_sampler", batch_sampler) if num_processes > 1 else batch_sampler  # inside BatchSamplerShard
    if type(inner) is not BatchSampler:
        return f"the training dataloader's batch_sampler is a {type(inner).__name__}, which may draw random numbers as it goes"
    if not isinstance(inner.sampler, _KNOWN_SAMPLERS) and type(inner.sampler).__name__ != "SeedableRandomSampler":
        return f"the training dataloader's sampler is a {type(inner.sampler).__name__}, which may draw random numbers as it goes"
    hidden = _hidden_generator(loader.dataset)
    if hidden is not None:
        return f"the training dataset keeps a random generator of its own ({hidden}), whose state a saved run does not hold"
    return None


def _hidden_generator(dataset, depth: int = 0) -> str | None:
    """The name of a random generator the dataset (or a dataset it wraps) holds as an attribute."""
    for name, value in vars(dataset).items() if hasattr(dataset, "__dict__") else ():
        if isinstance(value, _RANDOM_GENERATOR_TYPES):
            return f"{type(dataset).__name__}.{name}, a {type(value).__module__}.{type(value).__name__}"
        if isinstance(value, Dataset) and depth < 3:
            found = _hidden_generator(value, depth + 1)
            if found is not None:
                return found
    return None


def _has_state_dict(dataset) -> bool:
    return callable(getattr(dataset, "state_dict", None)) and callable(getattr(dataset, "load_state_dict", None))


def _stateful_iterable(loader: DataLoader, num_processes: int):
    """The iterable dataset that resumes from its own state_dict, where the main process iterates it."""
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) and _has_state_dict(dataset) and num_processes == 1 and loader.num_workers == 0:
        return dataset
    return None


def _ran_out(skipped: int, skip: int) -> CheckpointError:
    return CheckpointError(
        f"The training dataloader ran out after {skipped} batches where the saved run had seen {skip}: "
        "resume with the same dataset and batch size."
    )
