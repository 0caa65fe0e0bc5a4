"""Saving in the background: a state is copied to host memory while the caller waits, then written
by one background thread while training goes on; at most one write is in flight.

Why a thread, and not ``torch.distributed.checkpoint.async_save``: DCP writes its own format
(``.distcp`` files and a plan shared by every process), and the non-sharded state is ``torch.save``
files with their digests and a manifest; a thread shares the host copy without pickling it to
another process, and ``torch.save``, file writes, fsync and XXH3 release the GIL.

Why not DCP's ``DefaultStager`` for the host copy: it spends half as long again as the copy itself in
Python (``no_grad`` entered at each step of its recursion), and torch 2.11-2.12's cannot be reused
(pytorch#183413); :class:`HostCopies` is the same idea in a loop: buffers kept from one save to the next
(a fresh one costs page faults, or pinning, worth several copies), pinned with non-blocking copies
from a CUDA device, containers rebuilt.
"""

from __future__ import annotations

import copy
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
        self._copies = HostCopies(pin_memory)
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None
        self._what = ""

    def start(self, write: Callable[[Any], Any], state: Any, what: str) -> None:
        """Wait for the write in flight (raising its error), copy ``state`` to host memory, then
        call ``write(copy)`` in the background. ``what`` names the write in its error."""
        self.wait()
        copied = self._copies.copy(state)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-state-writer")
        self._in_flight, self._what = self._executor.submit(write, copied), what

    def wait(self) -> None:
        """Wait for the write in flight, if any; its error is raised as a :class:`CheckpointError` naming
        it."""
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
            self._copies.free()


class HostCopies:
    """Copies of a state (tensors in dicts, lists and tuples) in host memory, each tensor copied into
    the buffer its place in the state had at the previous copy when it still fits.

    Args:
        pin_memory: pinned buffers and non-blocking copies, waited for before :meth:`copy` returns.
    """

    def __init__(self, pin_memory: bool = False):
        self.pin_memory = pin_memory
        self._buffers: dict[tuple, torch.Tensor] = {}

    @torch.no_grad()
    def copy(self, state: Any) -> Any:
        """A copy of ``state`` that later changes to it do not reach; valid until the next copy."""
        used: dict[tuple, torch.Tensor] = {}
        copied = self._copy(state, (), used, {})
        self._buffers = used  # the buffers of places gone from the state are freed
        if self.pin_memory:
            torch.cuda.synchronize()
        return copied

    def free(self) -> None:
        self._buffers = {}

    def _copy(self, value: Any, place: tuple, used: dict, seen: dict) -> Any:
        if isinstance(value, torch.Tensor):
            view = (
                value.device,
                value.untyped_storage().data_ptr(),
                value.storage_offset(),
                value.shape,
                value.stride(),
            )
            if view not in seen:  # a tensor stored twice (tied weights) is copied once
                seen[view] = self._copy_tensor(value, place, used)
            return seen[view]
        if isinstance(value, dict):
            items = {key: self._copy(item, (*place, key), used, seen) for key, item in value.items()}
            if type(value) is dict:
                return items
            copied = copy.copy(value)  # its type and attributes (a state_dict's _metadata), then the copies
            copied.update(items)
            return copied
        if isinstance(value, (list, tuple)):
            items = [self._copy(item, (*place, index), used, seen) for index, item in enumerate(value)]
            if isinstance(value, list):
                return items
            return tuple(items) if type(value) is tuple else type(value)(*items)  # a namedtuple
        return copy.deepcopy(value)

    def _copy_tensor(self, tensor: torch.Tensor, place: tuple, used: dict) -> torch.Tensor:
        if tensor.layout != torch.strided or type(tensor) is not torch.Tensor:
            return tensor.detach().to("cpu", copy=True)  # sparse tensors and subclasses: a fresh copy
        buffer = self._buffers.get(place)
        if buffer is None or (buffer.dtype, buffer.shape) != (tensor.dtype, tensor.shape):
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=self.pin_memory)
        used[place] = buffer
        return buffer.copy_(tensor.detach(), non_blocking=self.pin_memory)
