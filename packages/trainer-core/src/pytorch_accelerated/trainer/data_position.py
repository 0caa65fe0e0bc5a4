"""The data position of a training run: a resumed epoch starts at its saved batch without loading the
batches before it, and the random numbers drawn while loading do not depend on when, or in which process,
a batch is loaded.

The batch sampler skips to the position (the epoch's random state restored first: the same order, nothing
fetched), where the generators are put back as saved before the next batch loads, so that one process loading
in its main process draws from the run's generators as plain PyTorch does; a batch loaded where that cannot
hold (in a dataloader worker, or ahead of its step through accelerate's loader) is fetched with the CPU
generators seeded from the epoch's seed and its indices (:class:`SeededFetches`); an iterable dataset resumes
from its own ``state_dict``; where none of that is exact the epoch is replayed, with one warning naming why
and whether the replay was exact (the loading drew where the saved run's did, or drew nothing while loading
ahead), or "This resume is not exact because ...". A state saved inside an epoch over other data (its length,
its sampler) is refused. The package README's "Exact resume" says why each choice, and what accelerate's
``skip_first_batches`` and torchdata's ``StatefulDataLoader`` do instead.
"""

from __future__ import annotations

import hashlib
import itertools
import json
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

_KNOWN_SAMPLERS = (
    SequentialSampler,
    RandomSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
    DistributedSampler,
)
_RANDOM_GENERATOR_TYPES = (np.random.Generator, np.random.RandomState, random.Random, torch.Generator)
_EXHAUSTED = object()


class TrainData:
    """The training dataloader, set up once per run so that a resumed epoch starts where the saved one was.

    ``resuming.Resume`` calls :meth:`start_epoch` at each epoch's start, :meth:`batches` for its batches,
    :meth:`state_dict` and :meth:`data_order` when it saves, :meth:`check_fits` then :meth:`load_state_dict`
    when it resumes, and :meth:`warn_replayed` once a replay that loaded ahead is agreed on.

    Args:
        dataloader: the prepared training dataloader.
        num_processes: the run's number of processes.
    """

    def __init__(self, dataloader: DataLoader, num_processes: int = 1):
        self.dataloader = dataloader
        # accelerate's prepared loaders wrap a torch one
        loader = getattr(dataloader, "base_dataloader", dataloader)
        self._loader = loader
        self._stateful_dataset = _stateful_iterable(loader, num_processes)
        self.replay_reason = (
            None if self._stateful_dataset is not None else _why_it_must_replay(loader, num_processes)
        )
        self._skipper: _SkippingBatchSampler | None = None
        self._fetches: SeededFetches | None = None
        # set up by an earlier train() with this loader
        if isinstance(loader.batch_sampler, _SkippingBatchSampler):
            self._skipper = loader.batch_sampler
        elif self.replay_reason is None and self._stateful_dataset is None:
            self._skipper = _SkippingBatchSampler(loader.batch_sampler)
            # torch refuses to set these once a DataLoader is built, for a sampler or dataset that would
            # not match its batch_size and length; these yield the same index lists and samples
            object.__setattr__(loader, "batch_sampler", self._skipper)
        # where batches are loaded ahead of the step, a replay's loading draws at other points than the saved
        # run's, and a batch loaded before a state was saved would be loaded after it on resume (accelerate's
        # loader reads one ahead, workers several)
        self._loads_ahead = num_processes > 1 or loader.num_workers > 0 or dataloader is not loader
        if self._skipper is not None:
            self._fetches = _seeded_fetches_of(loader)
        if self._fetches is not None:
            # loaded in time, the fetches draw from the run's generators (saved with a state and put back at
            # its position: batches), as plain PyTorch's do; loaded ahead, each is seeded from its indices
            self._seed_fetches(self._loads_ahead)
        self._order = _data_order(loader)
        self._own_generator = _hidden_generator(loader.dataset)  # (its name, it) or None
        self._saved_own_generator: str | None = None
        self._not_exact_because = _why_no_resume_is_exact(loader) if self.replay_reason is not None else None
        self._replay_pending = False
        self._replay_length = 0
        # : After a replay that loads ahead: whether this process's generators drew while it loaded (else
        # None).
        self.replay_drew: bool | None = None
        self._warned = False
        # a stream's position at its start: put back after a resumed epoch, as datasets that keep a loaded
        # state for every later iteration (HF datasets does, for its epoch) would otherwise start there again
        self._start_state = (
            self._stateful_dataset.state_dict() if self._stateful_dataset is not None else None
        )
        self._resumed_epochs_left = 0

    @property
    def seeds_fetches(self) -> bool:
        """Whether each epoch's fetches are seeded from the random state the epoch started from: in
        dataloader workers, or ahead of their step through accelerate's loader (else they draw from
        the run's generators, as plain PyTorch's do)."""
        return self._fetches is not None and self._loader.dataset is self._fetches

    def _seed_fetches(self, seeded: bool) -> None:
        """Fetch through :class:`SeededFetches` (collated there), or as the loader was given (plain
        PyTorch)."""
        fetches = self._fetches
        # torch refuses to set a built DataLoader's dataset: this one yields the same samples
        object.__setattr__(self._loader, "dataset", fetches if seeded else fetches.dataset)
        self._loader.collate_fn = _collated if seeded else fetches.collate_fn

    def start_epoch(self, epoch_start_rng: dict[str, Any] | None) -> None:
        """Give this epoch's fetches their seed: a digest of the random state the epoch started
        from (restored first on resume, so the same seed), which every epoch changes."""
        if self._resumed_epochs_left:
            self._resumed_epochs_left -= 1
            # the epoch after the resumed one reads the stream from its start
            if self._resumed_epochs_left == 0:
                self._stateful_dataset.load_state_dict(self._start_state)
        if self.seeds_fetches:
            self._fetches.epoch_seed = epoch_seed(epoch_start_rng)

    def batches(self, skip: int = 0, at_position: Callable[[], None] | None = None) -> Iterator:
        """The epoch's batches after the first ``skip``. A skipped epoch's first batch is loaded
        here, so that whatever the start of an iteration draws (the permutation, the workers'
        base seed) is drawn from the epoch's restored random state, as in the saved run; where the
        batch sampler skips, ``at_position`` is called once the skipped index lists are drawn,
        before the first batch after them is loaded (there the random state is put back as saved)."""
        if skip == 0 or (self._stateful_dataset is not None and not self._replay_pending):
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
            # saved after the epoch's last update, before its end: nothing is left
            if skip > len(self._skipper):
                raise _ran_out(len(self._skipper), skip)
            return batches
        return itertools.chain([first], batches)

    def _replayed(self, skip: int) -> Iterator:
        """The epoch loaded again from its start, its first ``skip`` batches dropped; a resume's replay
        says once whether it was exact. Where batches are loaded ahead of the step, one more is loaded
        here, and whether this process's generators drew meanwhile tells (:attr:`replay_drew`)."""
        batches = iter(self.dataloader)
        resuming, self._replay_pending = self._replay_pending, False
        watch = resuming and self._loads_ahead
        self._replay_length = skip
        if resuming and not watch and self._own_generator is None:  # said before the wait: nothing to check
            self._warn(self._replay_message())
        before = None
        for skipped in range(skip):
            if next(batches, _EXHAUSTED) is _EXHAUSTED:
                raise _ran_out(skipped, skip)
            if skipped == 0 and watch:
                # after the first batch: the iteration's own start draws are in it
                before = _cpu_generator_states()
        if resuming and self._own_generator_moved():  # before loading more: the saved run had loaded as many
            self._warn(f"This resume is not exact because {_own_generator_message(self._own_generator[0])}")
        if not watch:
            if resuming:  # the loading drew where the saved run's did: the replay is exact
                self._warn(self._replay_message())
            return batches
        first = next(batches, _EXHAUSTED)
        self.replay_drew = _cpu_generator_states() != before
        return batches if first is _EXHAUSTED else itertools.chain([first], batches)

    def data_order(self) -> dict[str, Any]:
        """What an epoch's order depends on beyond the random state and the batch settings (plain
        data, saved with each state): the dataset's length, the sampler's kind, a stream's shuffle
        seed, and where the dataset's own random generator was."""
        own = None if self._own_generator is None else _generator_digest(self._own_generator[1])
        return {**self._order, "own_generator": own}

    def check_fits(self, saved_order: dict[str, Any] | None, mid_epoch: bool, where: str) -> None:
        """Raise :class:`CheckpointError` for a state saved inside an epoch over other training data
        (the epoch's order would differ), before anything of it is applied."""
        saved_order = saved_order or {}  # a state of trainer-core 0.4 does not say
        differences = [
            f"{label} {saved_order[name]} there, {self._order[name]} here"
            for name, label in (("dataset_len", "dataset length"), ("sampler", "sampler"))
            if name in saved_order and saved_order[name] != self._order[name]
        ]
        if mid_epoch and differences:
            raise CheckpointError(
                f"{where} was saved in the middle of an epoch over other training data"
                f" ({'; '.join(differences)}): the resumed epoch would go on in another order. Resume with"
                " the training data it was saved with, or from a state saved at the end of an epoch."
            )
        if saved_order.get("shuffle_seed", self._order["shuffle_seed"]) != self._order["shuffle_seed"]:
            self._not_exact_because = (
                "the stream's shuffle buffer is seeded otherwise than in the saved run (HF datasets draws a"
                " seed at random when .shuffle() is given none), so its order differs from the interrupted"
                " run's. Pass .shuffle(seed=..., buffer_size=...) for exact resumes."
            )
        self._saved_own_generator = saved_order.get("own_generator")

    def state_dict(self) -> dict[str, Any] | None:
        """The iterable dataset's own position, where it keeps one; whether the fetches are seeded,
        where they may be; else None."""
        if self._stateful_dataset is not None:
            return self._stateful_dataset.state_dict()
        return None if self._fetches is None else {"seeded_fetches": self.seeds_fetches}

    def load_state_dict(self, state: dict[str, Any] | None, mid_epoch: bool) -> None:
        """On resume: put the iterable dataset back where it was, or fetch as the saved run did. Say once,
        before the first step, where the resume is not exact and why; an epoch replayed says so as it is
        (:meth:`batches`)."""
        if self._stateful_dataset is not None and state is not None:
            if mid_epoch:  # a state saved between epochs: the next epoch reads the data from its start
                self._stateful_dataset.load_state_dict(state)
                self._resumed_epochs_left = 2  # this epoch, then the next one's start
            return
        if self._fetches is not None:
            self._fetch_as_saved(state)
        if self._not_exact_because is None and not mid_epoch and self._own_generator_moved():
            self._not_exact_because = _own_generator_message(self._own_generator[0])
        if self._not_exact_because is not None:  # at an epoch's end too: the next epochs draw otherwise
            self._warn(f"This resume is not exact because {self._not_exact_because}")
        self._replay_pending = self.replay_reason is not None and mid_epoch  # the same on every process

    def _fetch_as_saved(self, state: dict[str, Any] | None) -> None:
        """Seed the fetches where the saved run did (states of earlier versions say nothing: they seeded
        all), so that a resume with fewer dataloader workers stays exact; say where they cannot draw as saved.
        """
        saved_seeded = True if state is None else state.get("seeded_fetches", True)
        if saved_seeded and not self.seeds_fetches:
            self._seed_fetches(True)  # in a fork in the main process: the saved run's were never drawn from
        elif not saved_seeded and self.seeds_fetches:
            workers = self._loader.num_workers
            where = f"in {workers} dataloader workers" if workers else "through accelerate's dataloader"
            self._warn(
                "This resume is not exact because the saved run loaded its batches in its main process, "
                "drawing their random numbers from the run's generators, and this one loads them "
                f"{where}, which cannot: random augmentations will differ from the interrupted run's. "
                "Resume with num_workers=0."
            )

    def resume_without_stream_state(self) -> None:
        """Before :meth:`load_state_dict`: the state was saved where the stream's own position was not read
        (on several processes), so a resumed epoch of a stream that has one is read again from its start."""
        if self._stateful_dataset is not None and self.replay_reason is None:
            self.replay_reason = (
                "the training state was saved on several processes, where the main process does not read the "
                "stream's own state_dict()"
            )

    def warn_replayed(self, drew: bool) -> None:
        """Say whether a replay that loaded ahead was exact: ``drew``, whether the generators of any
        process drew random numbers while it loaded (:attr:`replay_drew`)."""
        self.replay_drew = None
        if not drew:
            self._warn(self._replay_message())
            return
        workers = self.dataloader.num_workers > 0
        ahead = (
            "dataloader workers ask the sampler for index lists" if workers else "accelerate loads a batch"
        )
        fix = (
            "Use one of torch's samplers for exact resumes: the resume replays their draws."
            if workers
            else (
                "Load in dataloader workers for exact resumes (train_dataloader_kwargs={'num_workers': 1};"
                " more for a dataset that splits itself between workers): a worker's random numbers are"
                " seeded as the epoch starts."
            )
        )
        self._warn(
            "This resume is not exact because the training data drew random numbers in the main process"
            " while the batches the saved run had seen were loaded again (the epoch is replayed because"
            f" {self.replay_reason}), and as {ahead} ahead of the step, those draws fell between other draws"
            f" than in the interrupted run. {fix}"
        )

    def _own_generator_moved(self) -> bool:
        """Whether the dataset's own random generator is not where the saved run's was (unknown: moved)."""
        if self._own_generator is None:
            return False
        return self._saved_own_generator != _generator_digest(self._own_generator[1])

    def _replay_message(self) -> str:
        return (
            "Resuming inside an epoch by loading again the batches the saved run had seen"
            f" ({self._replay_length}), because {self.replay_reason}. The resume is exact; loading those"
            " batches is its cost. See trainer-core's README, 'Exact resume'."
        )

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True  # once per train(): a resume is one event
            warn_user(message)


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
        # unpickling in a worker asks before dataset is set
        if name in (
            "dataset",
            "__setstate__",
            "__getstate__",
        ):
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
            return (
                f"the iterable dataset {type(loader.dataset).__name__} has no state_dict()/load_state_dict()"
                " to resume from"
            )
        if _shuffle_buffers(loader.dataset):
            return (
                "the stream's state_dict() does not hold the content of its shuffle buffer (HF datasets'"
                " .shuffle())"
            )
        where = "on several processes" if num_processes > 1 else "with num_workers > 0"
        return (
            "the iterable dataset's state_dict() is read in the main process, which does not iterate it"
            f" {where}"
        )
    if loader.persistent_workers and loader.num_workers > 0:
        return (
            "the training dataloader has persistent_workers=True (its workers keep their random state from"
            " epoch to epoch)"
        )
    batch_sampler = loader.batch_sampler
    if isinstance(batch_sampler, _SkippingBatchSampler):
        batch_sampler = batch_sampler._batch_sampler
    if batch_sampler is None:
        return "the training dataloader has batch_size=None (it fetches one index at a time)"
    # inside BatchSamplerShard
    inner = getattr(batch_sampler, "batch_sampler", batch_sampler) if num_processes > 1 else batch_sampler
    if type(inner) is not BatchSampler:
        return (
            f"the training dataloader's batch_sampler is a {type(inner).__name__}, which may draw random"
            " numbers as it goes"
        )
    if (
        not isinstance(inner.sampler, _KNOWN_SAMPLERS)
        and type(inner.sampler).__name__ != "SeedableRandomSampler"
    ):
        return (
            f"the training dataloader's sampler is a {type(inner.sampler).__name__}, which may draw random"
            " numbers as it goes"
        )
    hidden = _hidden_generator(loader.dataset)
    if hidden is not None:
        return (
            f"the training dataset keeps a random generator of its own ({hidden[0]}), which a saved run does"
            " not hold"
        )
    return None


def _why_no_resume_is_exact(loader: DataLoader) -> str | None:
    """Why no resume of ``loader`` can be exact, whatever the position (None: it may be)."""
    if loader.persistent_workers and loader.num_workers > 0:
        return (
            "the training dataloader has persistent_workers=True: its workers keep their random state from"
            " epoch to epoch and their seed is drawn once in its lifetime, which a resumed run cannot"
            " rebuild, so its data order and augmentations differ from the interrupted run's. Use"
            " persistent_workers=False (the default) for exact resumes."
        )
    return None


def _own_generator_message(name: str) -> str:
    return (
        f"the training dataset draws from a random generator of its own ({name}), which is not where it was"
        " in the saved run: a training state does not hold it. Draw from torch's, NumPy's or Python's global"
        " generators instead (each batch is loaded with them seeded) for exact resumes."
    )


def _hidden_generator(dataset, depth: int = 0) -> tuple[str, Any] | None:
    """A random generator the dataset (or a dataset it wraps) holds as an attribute: its name, and it."""
    for name, value in vars(dataset).items() if hasattr(dataset, "__dict__") else ():
        if isinstance(value, _RANDOM_GENERATOR_TYPES):
            return (
                f"{type(dataset).__name__}.{name}, a {type(value).__module__}.{type(value).__name__}",
                value,
            )
        if isinstance(value, Dataset) and depth < 3:
            found = _hidden_generator(value, depth + 1)
            if found is not None:
                return found
    return None


def _has_state_dict(dataset) -> bool:
    return callable(getattr(dataset, "state_dict", None)) and callable(
        getattr(dataset, "load_state_dict", None)
    )


def _stateful_iterable(loader: DataLoader, num_processes: int):
    """The iterable dataset that resumes from its own state_dict, where the main process iterates it."""
    dataset = loader.dataset
    if (
        isinstance(dataset, IterableDataset)
        and _has_state_dict(dataset)
        and num_processes == 1
        and loader.num_workers == 0
        and not _shuffle_buffers(dataset)
    ):
        return dataset
    return None


def _shuffle_buffers(dataset) -> list:
    """The shuffle buffers of an HF ``datasets`` stream (``.shuffle(buffer_size=...)``), whose content
    its state_dict() does not hold (its docs say so): found in the chain of its examples iterables."""
    if not type(dataset).__module__.startswith("datasets."):
        return []
    found, pending, seen = [], [getattr(dataset, "_ex_iterable", None)], set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == "BufferShuffledExamplesIterable":
            found.append(node)
        pending.append(getattr(node, "ex_iterable", None))
        pending.extend(getattr(node, "ex_iterables", None) or ())
    return found


def _data_order(loader: DataLoader) -> dict[str, Any]:
    """See :meth:`TrainData.data_order`."""
    try:
        dataset_len = len(loader.dataset)
    except TypeError:
        dataset_len = None  # a stream
    sampler = _sampler_name(loader)
    return {"dataset_len": dataset_len, "sampler": sampler, "shuffle_seed": _shuffle_seed(loader.dataset)}


def _shuffle_seed(dataset) -> str | None:
    """A digest of a stream's shuffle buffers' generators (HF keeps each as seeded, copied for each epoch)."""
    buffers = _shuffle_buffers(dataset)
    if not buffers:
        return None
    states = [getattr(getattr(buffer, "generator", None), "bit_generator", None) for buffer in buffers]
    described = json.dumps([getattr(state, "state", None) for state in states], sort_keys=True, default=str)
    return hashlib.blake2b(described.encode(), digest_size=8).hexdigest()


def _sampler_name(loader: DataLoader) -> str:
    batch_sampler = loader.batch_sampler
    if isinstance(batch_sampler, _SkippingBatchSampler):
        batch_sampler = batch_sampler._batch_sampler
    if batch_sampler is None:
        return type(loader.sampler).__name__
    # inside accelerate's BatchSamplerShard
    batch_sampler = getattr(batch_sampler, "batch_sampler", batch_sampler)
    return type(getattr(batch_sampler, "sampler", batch_sampler)).__name__


def _generator_digest(generator) -> str:
    """A digest of a random generator's state: Python's, NumPy's or torch's."""
    if isinstance(generator, torch.Generator):
        state = generator.get_state().numpy().tobytes()
    elif isinstance(generator, np.random.Generator):
        state = json.dumps(generator.bit_generator.state, sort_keys=True, default=str).encode()
    elif isinstance(generator, np.random.RandomState):
        kind, keys, *rest = generator.get_state()
        state = keys.tobytes() + repr(rest).encode()
    else:
        state = repr(generator.getstate()).encode()
    return hashlib.blake2b(state, digest_size=8).hexdigest()


def _cpu_generator_states() -> tuple:
    """Python's, NumPy's and torch's CPU generator states, to tell whether anything drew from them."""
    numpy_state = np.random.get_state()
    return (
        random.getstate(),
        numpy_state[1].tobytes(),
        *numpy_state[2:],
        torch.get_rng_state().numpy().tobytes(),
    )


def _ran_out(skipped: int, skip: int) -> CheckpointError:
    return CheckpointError(
        f"The training dataloader ran out after {skipped} batches where the saved run had seen {skip}: "
        "resume with the same dataset and batch size."
    )
