"""A training state resumed on another number of processes than it was saved by (N -> M).

The data position is kept in global samples: accelerate gives process k of N every N-th per-process
batch of one global order (the sampler's, or the stream's), so update u reads that order's samples
``[u*G, (u+1)*G)`` with ``G = per_device_batch_size * N * gradient_accumulation_steps``, whatever N. A
resume on M processes with the same G and the same accumulation (the per-process batch absorbs the
change) reads exactly what the uninterrupted run would have read next; another accumulation reads the
same updates where every update of an epoch is full (no last, shorter update), else it is refused.

What belongs to a process cannot be mapped: process i takes saved process i's random generators, run
history and per-process callback states where the saved run had it; a process the saved run did not have
takes saved process 0's, its Python, NumPy and torch generators seeded from them and its index
(:func:`random_state.derived_rng_state`), and starts its per-process callback states fresh. The running
loss of the epoch is summed: process i takes the sums of saved processes i, i+M, i+2M...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ._warnings import warn_user
from .safe_files import CheckpointError

_DROPOUT_TYPES = (
    torch.nn.Dropout,
    torch.nn.Dropout1d,
    torch.nn.Dropout2d,
    torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
    torch.nn.FeatureAlphaDropout,
)


@dataclass(frozen=True)
class BatchSettings:
    """How many samples one update reads, and how they are split.

    Args:
        per_device_batch_size: each process's batch.
        num_processes: the processes.
        accumulation: batches per update (``gradient_accumulation_steps``).
    """

    per_device_batch_size: int
    num_processes: int
    accumulation: int

    @property
    def global_batch(self) -> int:
        """Samples per update, all processes together."""
        return self.per_device_batch_size * self.num_processes * self.accumulation

    def describe(self) -> str:
        return (
            f"{self.num_processes} process(es) x {self.per_device_batch_size} per device x "
            f"{self.accumulation} accumulated = {self.global_batch} samples per update"
        )


@dataclass(frozen=True)
class ProcessChange:
    """Which saved process's parts each process of this run takes.

    Args:
        saved: the number of processes the state was saved by.
        here: this run's number of processes.
    """

    saved: int
    here: int

    @property
    def changed(self) -> bool:
        return self.saved != self.here

    def own_index(self, process_index: int) -> int:
        """The saved process whose generators, run history and callback states ``process_index`` takes."""
        return process_index if process_index < self.saved else 0

    def has_own_state(self, process_index: int) -> bool:
        """Whether the saved run had this process (else: derived generators, fresh callback states)."""
        return process_index < self.saved

    def loss_indices(self, process_index: int) -> list[int]:
        """The saved processes whose running-loss sums process ``process_index`` adds up."""
        return list(range(process_index, self.saved, self.here))


def check_global_batch(
    saved: BatchSettings, here: BatchSettings, samples_per_epoch: int | None, where: str
) -> None:
    """Raise :class:`CheckpointError`, naming what to pass, unless ``here`` reads every update's samples as
    ``saved`` did: the same global batch, and the same accumulation unless each epoch is made of full updates
    (``samples_per_epoch``, None for a stream, a multiple of the global batch)."""
    if here.global_batch == saved.global_batch and _reads_the_same_updates(saved, here, samples_per_epoch):
        return
    options = exact_settings(saved, here.num_processes, samples_per_epoch)
    if options:
        fix = " or ".join(
            f"per_device_batch_size={batch}, gradient_accumulation_steps={accumulation}"
            for batch, accumulation in options
        )
        fix = f"On {here.num_processes} process(es) pass {fix}."
    else:
        fix = (
            f"{saved.global_batch} samples per update do not split exactly over {here.num_processes} "
            "process(es) (as whole per-device batches"
            f"{'' if samples_per_epoch is None else ' and full updates'}): resume on "
            f"{saved.num_processes} process(es), or on a number that divides {saved.global_batch}."
        )
    raise CheckpointError(
        f"{where} was saved with {saved.describe()}; this run has {here.describe()}. A resume on another "
        "number of processes keeps the samples per update, so that every update reads the samples the saved "
        f"run would have read. {fix}"
    )


def exact_settings(
    saved: BatchSettings, num_processes: int, samples_per_epoch: int | None
) -> list[tuple[int, int]]:
    """The (per_device_batch_size, gradient_accumulation_steps) on ``num_processes`` that read the saved run's
    updates: the saved accumulation first, then the fewest accumulated batches (at most two options)."""
    options = []
    for accumulation in dict.fromkeys([saved.accumulation, *range(1, saved.global_batch + 1)]):
        share = num_processes * accumulation
        if saved.global_batch % share:
            continue
        candidate = BatchSettings(saved.global_batch // share, num_processes, accumulation)
        if _reads_the_same_updates(saved, candidate, samples_per_epoch):
            options.append((candidate.per_device_batch_size, accumulation))
        if len(options) == 2:
            break
    return options


def _reads_the_same_updates(saved: BatchSettings, here: BatchSettings, samples_per_epoch: int | None) -> bool:
    # the same global micro-batches: the epoch's tail is padded alike
    if here.accumulation == saved.accumulation:
        return True
    # other micro-batches: the same updates only where no epoch ends with a shorter, padded one
    return samples_per_epoch is not None and samples_per_epoch % saved.global_batch == 0


def epoch_batches_here(epoch_batches: int, saved: BatchSettings, here: BatchSettings) -> int:
    """A saved position's batches into the epoch (at an update's end) in this run's per-process batches."""
    return epoch_batches // saved.accumulation * here.accumulation


def summed_loss_state(states: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The running-loss sums of several saved processes, added up (``None`` where none had any)."""
    states = [state for state in states if state is not None]
    if not states:
        return None
    items = [state.get("items") for state in states]
    return {
        "total": sum(state["total"] for state in states),
        "count": sum(state["count"] for state in states),
        "items": None if any(item is None for item in items) else sum(items),
    }


def warn_what_differs(
    change: ProcessChange, model: torch.nn.Module, batch_changed: bool, seeds_fetches: bool
) -> None:
    """Say, once before the first step, which random draws of the resumed run differ from the uninterrupted
    run's: the model's dropout (each process's own generators), and seeded loading when the batches change."""
    causes = []
    dropout = sorted(
        {
            type(module).__name__
            for module in model.modules()
            if isinstance(module, _DROPOUT_TYPES) and module.p > 0
        }
    )
    if dropout:
        causes.append(
            f"the model's {', '.join(dropout)} draws from each process's own generators, which cannot be "
            "split or merged: process i takes saved process i's, and a process the saved run did not have a "
            "derived one"
        )
    if seeds_fetches and batch_changed:
        causes.append(
            "the random numbers drawn while loading (augmentations) are seeded per per-device batch, and the "
            "per-device batches change with the number of processes"
        )
    if causes:
        warn_user(
            f"Resuming a state saved by {change.saved} process(es) on {change.here}: every update reads the "
            "same samples as the uninterrupted run, but its random draws differ, because "
            f"{'; and '.join(causes)}. "
            "The run is then statistically, not bitwise, equivalent. See trainer-core's README, "
            "'Changing the number of processes'."
        )


def warn_dropped_callback_states(
    change: ProcessChange, dropped: dict[str, list[dict]], kept: dict[str, dict]
) -> None:
    """Say which per-process callback states of the saved processes this run lacks (M < N) are left out
    (``dropped``; one equal to the state this process keeps, ``kept``, is not named)."""
    lost = sorted(key for key, states in dropped.items() if any(state != kept.get(key) for state in states))
    if lost:
        warn_user(
            f"Resuming inside an epoch saved by {change.saved} process(es) on {change.here}: the per-process "
            f"states of {', '.join(lost)} of saved processes {change.here}..{change.saved - 1} are left out "
            "(a callback's per-process state cannot be merged), so what they accumulated in this epoch is "
            "missing from its epoch values. Resume on as many processes, or from a state saved at an epoch's "
            "end, to keep them."
        )


def one_process_sampler(dataloader):
    """The shuffling sampler of a one-process run's plain DataLoader that draws a new seed from torch's
    global generator each epoch (``shuffle=True`` without a generator), or ``None``."""
    sampler = getattr(dataloader, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler) and sampler.generator is None:
        return sampler
    return None


class OneProcessOrder:
    """Each epoch's order as a one-process run draws it, on several processes: on one process a shuffling
    DataLoader without a generator seeds each epoch's permutation with a draw from torch's global generator
    (after the draw of its workers' base seed); accelerate gives the sampler a generator of its own on several
    processes, which this seeds alike before each epoch's iteration (one draw ahead, for the base seed)."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def seed_epoch(self) -> None:
        """Seed the sampler's generator as the one-process run's sampler would seed its epoch."""
        ahead = torch.Generator()
        ahead.set_state(torch.get_rng_state())
        torch.empty((), dtype=torch.int64).random_(generator=ahead)  # the iteration's base seed, drawn first
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=ahead).item())
        self.generator.manual_seed(seed)
        # the global generator moves by the seed's draw, as there
        torch.empty((), dtype=torch.int64).random_()


def match_sampler_generators(dataloader, saved_generators: int, found: int) -> OneProcessOrder | None:
    """Make this run's training dataloader draw its order from the generators a saved run on another number of
    processes drew it from, where they differ only by the generator accelerate gives a shuffling sampler on
    several processes: a one-process run gets one (it then takes the saved one's state), and a run on several
    processes resumed from a one-process state seeds it each epoch as one process would (the returned order).
    """
    loader = getattr(dataloader, "base_dataloader", dataloader)
    sampler = one_process_sampler(loader)
    if saved_generators == found + 1 and sampler is not None:
        sampler.generator = torch.Generator()
        return None
    synchronized = getattr(dataloader, "synchronized_generator", None)
    if saved_generators == found - 1 and isinstance(synchronized, torch.Generator):
        return OneProcessOrder(synchronized)
    return None
