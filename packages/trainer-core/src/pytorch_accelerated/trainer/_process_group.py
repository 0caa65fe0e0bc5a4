"""The process group's end at interpreter exit: gloo's worker threads joined while Python is whole,
so that a process that trained successfully exits 0.

After a collective, gloo's worker thread (``pt_gloo_runloop``) lets go of the finished work, and of
its tensors with it, only after the caller has its result. Releasing a tensor that has a Python
object takes the GIL. Scheduled late (a loaded machine), the thread waits for the GIL while the
interpreter starts finalizing; CPython (before 3.14) then ends it with ``pthread_exit``, whose
unwinding crosses the work's noexcept destructor: ``std::terminate`` ("terminate called without an
active exception"), SIGABRT, exit code -6. ``destroy_process_group()`` alone does not stop these
threads (gloo's ``shutdown`` does nothing): only ``ProcessGroupGloo``'s destructor joins them, when
the group's last reference goes, and a DDP wrapper holds one in its reducer; a model sharded with
FSDP2 (``fully_shard``) holds one in the mesh description of each of its sharded modules.

So at exit the trainers' models let go of the group, then the group is destroyed: its last
reference goes while Python is whole and off the GIL (torch's holder releases it), and the
destructor joins the threads, each finishing its release first.
"""

from __future__ import annotations

import atexit
import functools
import sys
import weakref
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

_trainers: weakref.WeakSet = weakref.WeakSet()  # the trainers of this process whose wrappers hold the group

# The DDP attributes that hold the process group, in the order they let go of it: the logger holds
# the reducer, the reducer holds the group (its release runs under the GIL, so it must not be the last).
_DDP_HOLDERS = ("logger", "reducer", "process_group")


def tear_down_at_exit(trainer: Any) -> None:
    """Destroy the process group at interpreter exit, after ``trainer``'s model lets go of it.

    Args:
        trainer: a trainer running on several processes; held weakly.
    """
    _trainers.add(trainer)
    _register_tear_down()


@functools.cache
def _register_tear_down() -> None:
    atexit.register(_tear_down)


def _tear_down() -> None:
    if _exiting_on_an_error():
        return  # a collective may still be in flight: joining gloo's threads could wait for it
    for trainer in list(_trainers):
        let_go_of_the_process_group(getattr(trainer, "model", None))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def let_go_of_the_process_group(model: torch.nn.Module | None) -> None:
    """Drop the references that the DDP wrappers and the FSDP2-sharded modules in ``model`` hold to
    their process groups.

    Args:
        model: a prepared model (DDP or FSDP2, possibly compiled), or None; unusable for training afterwards.
    """
    if not isinstance(model, torch.nn.Module):
        return
    for module in model.modules():
        if isinstance(module, DistributedDataParallel):
            for name in _DDP_HOLDERS:
                module.__dict__.pop(name, None)
        for holder in _fsdp2_group_holders(module):
            _drop_process_groups(holder)


def _fsdp2_group_holders(module: torch.nn.Module) -> list:
    """The mesh descriptions, and their meshes, of a module that ``fully_shard`` sharded (none elsewhere)."""
    get_state = getattr(module, "_get_fsdp_state", None)  # FSDP2 has no public way to its param groups
    param_group = getattr(get_state(), "_fsdp_param_group", None) if callable(get_state) else None
    if param_group is None:
        return []
    owners = [param_group, *getattr(param_group, "fsdp_params", ())]
    names = ("mesh_info", "post_forward_mesh_info")
    infos = [info for owner in owners for name in names if (info := getattr(owner, name, None)) is not None]
    return infos + [mesh for info in infos if (mesh := getattr(info, "mesh", None)) is not None]


def _drop_process_groups(holder: Any) -> None:
    """Drop ``holder``'s attributes that are process groups, or dicts of them (a DeviceMesh's registry)."""
    for name, value in list(getattr(holder, "__dict__", {}).items()):
        if isinstance(value, torch.distributed.ProcessGroup):
            del holder.__dict__[name]
        elif isinstance(value, dict) and any(
            isinstance(v, torch.distributed.ProcessGroup) for v in value.values()
        ):
            value.clear()


def _exiting_on_an_error() -> bool:
    """Whether the interpreter exits on an uncaught exception (CPython keeps it in ``sys.last_value``)."""
    return getattr(sys, "last_exc", None) is not None or getattr(sys, "last_value", None) is not None
