"""Dataloader workers: how they start on several processes (never by forking a training process on
a Python whose forked children can hang), how long a batch may take, and that they end with their
training process.

CPython before 3.11.10 (3.10.15, 3.9.20; fixed in 3.12) re-initializes the lock over its thread
states only after using it in a forked child (gh-112275). When another thread holds that lock at
the fork - a C++ thread of torch (gloo's, autograd's) entering Python for a moment creates and
removes a thread state under it, without the GIL - the worker hangs forever in
``PyOS_AfterFork_Child``. A run on several processes always has such threads, and starts its
workers at every epoch, so there the trainer starts them from a clean single-threaded process
(``multiprocessing_context="forkserver"``, with torch preloaded) unless the user chose a start
method. The workers' random seeds come from the main process as with fork, so exact resume is
unchanged; the dataset, collate_fn and worker_init_fn must be picklable (checked at set-up), and
the script must start training under ``if __name__ == "__main__":``, since each worker imports it.

Such workers leave SIGTERM to their training process (see ``_WorkerStart``), so that process ends
them when it exits: multiprocessing's exit hook only sends SIGTERM and then waits, and a worker
whose iterator an error's traceback keeps alive was never told to stop (the process hung at exit).

A worker's batch has a time limit (``DEFAULT_TIMEOUT_S``, unless the dataloader has a ``timeout``):
a ``__getitem__`` that never returns fails with torch's "DataLoader timed out" instead of hanging
the run (on several processes, the others waited in a collective for good).
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.util
import os
import pickle
import signal
import sys
import weakref
from types import ModuleType

from torch.utils.data import DataLoader

#: The start method used where forking a training process can hang (see the module docstring).
SAFE_START_METHOD = "forkserver"
#: How long the main process waits for a batch from a dataloader's workers, unless it has a ``timeout``.
DEFAULT_TIMEOUT_S = 600.0


def fork_can_hang(version_info=sys.version_info, implementation: str = sys.implementation.name) -> bool:
    """Whether this interpreter has the fork bug gh-112275 (a child that can hang in PyOS_AfterFork_Child)."""
    if implementation != "cpython":
        return False
    fixed_in = {(3, 8): 20, (3, 9): 20, (3, 10): 15, (3, 11): 10}
    minor = tuple(version_info[:2])
    if minor >= (3, 12):
        return False
    return minor not in fixed_in or version_info[2] < fixed_in[minor]


def limit_the_wait_for_a_batch(dataloader: DataLoader) -> None:
    """Give ``dataloader`` a ``timeout`` of :data:`DEFAULT_TIMEOUT_S` if it has workers and none.

    Args:
        dataloader: a DataLoader, changed in place; one without workers is left as it is.
    """
    if getattr(dataloader, "num_workers", 0) > 0 and not getattr(dataloader, "timeout", 0):
        dataloader.timeout = DEFAULT_TIMEOUT_S


def start_workers_safely(dataloader: DataLoader) -> None:
    """Give ``dataloader`` the forkserver start method where its workers would otherwise be forked
    from this (multi-threaded) process on a Python where that can hang; a start method the user
    chose is kept. Checked once, when the dataloader is prepared."""
    if getattr(dataloader, "num_workers", 0) == 0 or dataloader.multiprocessing_context is not None:
        return
    if multiprocessing.get_start_method(allow_none=True) not in (None, "fork") or not fork_can_hang():
        return
    _check_picklable(dataloader)
    dataloader.multiprocessing_context = _forkserver(dataloader)
    dataloader.worker_init_fn = _WorkerStart(dataloader.worker_init_fn)


class _WorkerStart:
    """A worker's start: stop signals left to the main process, as forked workers inherit from it
    (SIGINT from a terminal reaches every worker too: the main process decides, saving a state first
    with SaveTrainingStateCallback, and the workers end with it); then the user's worker_init_fn."""

    def __init__(self, worker_init_fn):
        self.worker_init_fn = worker_init_fn

    def __call__(self, worker_id: int) -> None:
        _end_with_the_forkserver()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signal_number, signal.SIG_IGN)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)


def _forkserver(dataloader: DataLoader):
    # The server imports once (a few seconds, once per process) what every worker needs: torch, this
    # module, the dataset's module and the modules the user's script uses (each worker runs the script's
    # imports again, as with spawn). A worker forked from it then starts almost as fast as one forked
    # from this process, where without these it would import them all again at every epoch.
    context = _WorkerContext()
    context.set_forkserver_preload(_modules_workers_need(dataloader))
    return context


# Windows has no forkserver (and never gets here: its workers are spawned, not forked)
_ForkServerContext = getattr(multiprocessing.context, "ForkServerContext", object)


class _WorkerContext(_ForkServerContext):
    """The forkserver start method, keeping the workers it starts, to end them at exit."""

    def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
        worker = super().Process(*args, **kwargs)
        _started_workers.add(worker)
        _end_workers_at_exit()
        return worker


@functools.cache
def _end_workers_at_exit() -> None:
    # multiprocessing's exit hook runs its finalizers before it terminates and joins its children
    multiprocessing.util.Finalize(None, _end_workers_left, exitpriority=100)


def _end_workers_left() -> None:
    """End the workers still running: they ignore SIGTERM, which is all multiprocessing sends them."""
    workers = [worker for worker in list(_started_workers) if worker.is_alive()]
    for worker in workers:
        worker.kill()
    for worker in workers:
        worker.join(timeout=10)


def _modules_workers_need(dataloader: DataLoader) -> list[str]:
    parts = [dataloader.dataset, dataloader.collate_fn, dataloader.worker_init_fn]
    main = sys.modules.get("__main__")
    parts += list(vars(main).values()) if main is not None else []
    modules = {"torch": None, __name__: None}
    for part in parts:
        name = part.__name__ if isinstance(part, ModuleType) else getattr(part, "__module__", None)
        if isinstance(name, str) and name not in ("__main__", "builtins"):
            modules[name] = None
    return list(modules)


def _check_picklable(dataloader: DataLoader) -> None:
    for name in ("dataset", "collate_fn", "worker_init_fn"):
        try:
            pickle.dumps(getattr(dataloader, name))
        except Exception as error:  # noqa: BLE001 - pickling fails in many ways; all mean the same here
            raise TypeError(
                f"The dataloader's {name} cannot be pickled ({error}), and on this Python"
                f" ({sys.version.split()[0]}) the trainer starts dataloader workers with"
                f" multiprocessing_context='{SAFE_START_METHOD}', which sends it to them: forking a process"
                " that runs several threads can hang here (CPython gh-112275, fixed in 3.11.10 and 3.12)."
                " Define it at module level (no lambdas or local classes), upgrade Python, or pass"
                " multiprocessing_context='fork' in the dataloader kwargs to accept the risk."
            ) from error


def _end_with_the_training_process() -> None:
    """In the forkserver (which imports this module before serving), ask Linux to end it when the
    training process that started it dies. A training process killed with SIGKILL otherwise leaves
    its forkserver behind, and the workers forked from it with it: their watchdog watches the
    forkserver, their parent, not the training process (each holds hundreds of MB of torch)."""
    global _forkserver_pid
    if not sys.platform.startswith("linux") or not _importing_in_a_forkserver():
        return
    _forkserver_pid = os.getpid()  # the workers forked from here inherit it
    _kill_me_when_my_parent_dies()
    if os.getppid() == 1:  # the training process died before the request: nobody will ask for workers
        os._exit(0)


def _end_with_the_forkserver() -> None:
    """In a worker forked by that forkserver: end with it. A worker still starting when the training
    process died finds the forkserver gone already and ends now; torch's watchdog would not see it,
    since it takes the parent it finds at the worker's start (here init) for the training process."""
    if _forkserver_pid is None:  # not started by this module's forkserver
        return
    _kill_me_when_my_parent_dies()
    if os.getppid() != _forkserver_pid:
        os._exit(0)


def _kill_me_when_my_parent_dies() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _importing_in_a_forkserver() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith(
            os.path.join("multiprocessing", "forkserver.py")
        ):
            return True
        frame = frame.f_back
    return False


_forkserver_pid: int | None = None  # in the forkserver and its workers: the forkserver's pid
_started_workers: weakref.WeakSet = weakref.WeakSet()  # in a training process: the workers it started
_end_with_the_training_process()
