"""Saving in the background: a state is copied to host memory while the caller waits, then written
by one background thread while training goes on; at most one write is in flight.

Why a thread, and not ``torch.distributed.checkpoint.async_save``: DCP writes its own format
(``.distcp`` files and a plan shared by every process), and the non-sharded state is ``torch.save``
files with their digests and a manifest; a thread shares the host copy without pickling it to
another process, and ``torch.save``, file writes, fsync and XXH3 release the GIL. The host copy
is DCP's component, its ``DefaultStager``: every tensor copied into host buffers kept from one save
to the next (pinned, with non-blocking copies, from a CUDA device), the containers deep-copied.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import torch

from .safe_files import CheckpointError


class BackgroundWriter:
    """Writes states in one background thread, one at a time, from copies in host memory.

    Args:
        pin_memory: copy into pinned host memory with non-blocking copies (for states on a CUDA device).
    """

    def __init__(self, pin_memory: bool = False):
        self.pin_memory = pin_memory
        self._stager = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None
        self._what = ""

    def start(self, write: Callable[[Any], Any], state: Any, what: str) -> None:
        """Wait for the write in flight (raising its error), copy ``state`` to host memory, then
        call ``write(copy)`` in the background. ``what`` names the write in its error."""
        self.wait()
        copy = self._host_copy(state)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-state-writer")
        self._in_flight, self._what = self._executor.submit(write, copy), what

    def wait(self) -> None:
        """Wait for the write in flight, if any; its error is raised as a :class:`CheckpointError` naming it."""
        in_flight, self._in_flight = self._in_flight, None
        error = in_flight.exception() if in_flight is not None else None
        if isinstance(error, CheckpointError):
            raise error
        if error is not None:
            raise CheckpointError(f"Writing {self._what} in the background failed: {error!r}") from error

    def close(self) -> None:
        """Wait for the write in flight (raising its error), then free the thread and the host buffers."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._stager is not None:
                self._stager.close()
                self._stager = None

    def _host_copy(self, state: Any) -> Any:
        if self._stager is not None and not _STAGERS_ARE_REUSABLE:
            self._stager.close()
            self._stager = None
        if self._stager is None:
            self._stager = _new_stager(self.pin_memory)
        return self._stager.stage(state)


# torch 2.11 and 2.12's DefaultStager closes itself after each copy (pytorch#183413): one per save there
_STAGERS_ARE_REUSABLE = not ((2, 11) <= tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 13))


def _new_stager(pin_memory: bool):
    try:
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions
    except ImportError as error:
        raise CheckpointError(
            f"Asynchronous saving copies the state with torch.distributed.checkpoint's DefaultStager, which this "
            f"torch {torch.__version__} lacks ({error}): install torch 2.9 or newer, or save with asynchronous=False."
        ) from error
    options = StagingOptions(
        use_pinned_memory=pin_memory, use_shared_memory=False, use_async_staging=False, use_non_blocking_copy=pin_memory
    )
    return DefaultStager(options)
