"""Exact resume of a training run: :class:`Resume`, the collaborator the loop calls at four points."""

from __future__ import annotations

import contextlib
import functools
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object

from . import sharded_state
from ._warnings import warn_user
from .agreement import agree_on_training_state, any_process, on_every_process
from .async_saving import BackgroundWriter
from .callbacks import CallbackHandler, TrainerCallback
from .checkpointing import check_model_fits, is_checkpoint_file, load_model_state_dict, model_state_dict
from .data_position import TrainData
from .position import RunPosition
from .process_change import (
    BatchSettings,
    ProcessChange,
    check_global_batch,
    epoch_batches_here,
    match_sampler_generators,
    summed_loss_state,
    warn_dropped_callback_states,
    warn_what_differs,
)
from .random_state import (
    capture_rng_state,
    check_rng_state_fits,
    count_dataloader_generators,
    derived_rng_state,
    restore_rng_state,
)
from .run_config import TrainerRunConfig
from .run_history import RunHistory
from .running_loss import RunningLoss
from .safe_files import CheckpointError, check_plain_data, to_cpu
from .state_format import (
    MANIFEST_NAME,
    components_of,
    load_process_states,
    load_training_state,
    newest_of,
    resolve_training_state,
    start_writing,
    write_training_state,
    writing_folder,
)


@dataclass
class _Pending:
    """What a loaded state still has to put back once the start events have run."""

    rng: dict | None  # None once put back
    epoch_start_rng: dict | None
    callback_states: dict[str, dict]


class Resume:
    """Saves the states one training run resumes exactly from, and resumes it from one.

    The loop calls it at four points: :meth:`begin` around the run's start hook and events,
    :meth:`epoch_batches` as each training epoch starts, :meth:`save` from
    ``Trainer.save_training_state`` and :meth:`end` when the run ends. How a state lies on disk is
    :mod:`state_format`'s; where a resumed epoch's data starts, :mod:`data_position`'s.

    Args:
        accelerator: the run's accelerator (processes, device, gradient scaler).
        model: the prepared model.
        optimizer: the prepared optimizer.
        scheduler: the learning-rate scheduler, or ``None``.
        run_history: the run's history.
        position: the run's position, which the loop advances.
        train_loss: the training epoch's running loss.
        train_dataloader: the prepared training dataloader.
        callbacks: the trainer's callbacks.
        run_config: the run's settings.
    """

    def __init__(
        self,
        accelerator: Accelerator,
        model,
        optimizer,
        scheduler,
        run_history: RunHistory,
        position: RunPosition,
        train_loss: RunningLoss,
        train_dataloader,
        callbacks: CallbackHandler,
        run_config: TrainerRunConfig,
    ):
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.run_history = run_history
        self.position = position
        self.train_loss = train_loss
        self.train_dataloader = train_dataloader
        self.callbacks = callbacks
        self.run_config = run_config
        self.train_data = TrainData(train_dataloader, accelerator.num_processes)
        #: The training state this run resumed from, or None.
        self.resumed_from: Path | None = None
        self._pending: _Pending | None = None
        self._epoch_start_rng: dict | None = None  # the random state the current epoch started from
        self._background = BackgroundWriter(pin_memory=accelerator.device.type == "cuda")
        self._writing: Path | None = None  # the state written in the background (known on every process)
        self._ended = False
        self._one_process_order = None  # resumed from one process on several: each epoch seeded as there

    # ------------------------------------------------------------------ the four points

    @contextlib.contextmanager
    def begin(self, resume_from) -> Iterator[None]:
        """Around the run's start hook and events: the state ``resume_from`` names (none for ``None``)
        is put back before them, so that they see the resumed position; the callbacks' states and the
        random generators after them, so that what they reset is as saved. A state saved inside an
        epoch puts those back once that epoch has started again (:meth:`epoch_batches`)."""
        path = self._find(resume_from)
        if path is not None:
            self._pending = on_every_process(
                self.accelerator, lambda: self._load(path), f"load the training state {str(path)!r}"
            )
        yield
        if self._pending is not None and not self.position.in_epoch:
            self._finish(epoch_goes_on=False)

    def epoch_batches(self) -> _EpochBatches:
        """The training epoch's batches: the epoch's random state is set now, before its start hook
        (as saved, for an epoch resumed inside); the batches are drawn when iterated, after its
        start events, skipping a resumed epoch's batches done without loading them."""
        if self._pending is not None:
            restore_rng_state(self._pending.epoch_start_rng, self.train_dataloader)
        elif self._needs_epoch_start_rng():
            self._epoch_start_rng = capture_rng_state(self.train_dataloader)
        else:
            self._epoch_start_rng = None
        self.train_data.start_epoch(self._epoch_start_rng)
        return _EpochBatches(self._iterate_epoch)

    def save(
        self, save_dir, point: str | None, checkpoint_kwargs: dict | None = None, *, asynchronous=False
    ) -> Path:
        """Save the run's state into the folder ``save_dir``: every process's part is gathered, the
        main process writes. ``point`` is the save point reached, ``None`` inside a step;
        ``checkpoint_kwargs``, the user's plain data, is kept in the shared part. Asynchronous, the call
        returns once the state is copied to host memory, and the main process writes it in the
        background; a state still being written is waited for first (its error raised on every process)."""
        self._check_can_be_saved(point, asynchronous)
        check_plain_data(checkpoint_kwargs, "checkpoint_kwargs")
        self._finish_writing()
        save_dir = Path(save_dir)
        own = on_every_process(
            self.accelerator, lambda: to_cpu(self._process_state()), "collect its training state"
        )
        states = [own] if self.accelerator.num_processes == 1 else gather_object([own])
        stored_apart = self._save_shards(save_dir)

        def write() -> None:
            if not self.accelerator.is_main_process:
                return
            shared = self._shared_state(point, stored_apart[0] if stored_apart else {})
            if checkpoint_kwargs:  # returned by Trainer.load_training_state
                shared["checkpoint_kwargs"] = dict(checkpoint_kwargs)
            state = (shared, states, self._saved_position(point))
            if asynchronous:
                self._background.start(
                    _write_copied_state(save_dir), state, f"the training state {str(save_dir)!r}"
                )
            else:
                write_training_state(save_dir, *state, stored_apart=stored_apart)

        doing = "copy the training state {} to host memory" if asynchronous else "write the training state {}"
        on_every_process(self.accelerator, write, doing.format(repr(str(save_dir))))
        self._writing = save_dir if asynchronous else None
        return save_dir

    def end(self, error: BaseException | None = None) -> None:
        """The run ended, or failed with ``error``: a state still being written is waited for (a failed
        write raised on every process; after ``error``, only reported: the other processes may not be
        here), the host copies are freed, and nothing loaded stays pending."""
        self._pending, self._ended = None, True
        try:
            if error is None:
                self._finish_writing()
            elif self._writing is not None:
                self._writing = None
                self._background.wait()
        except CheckpointError as write_error:
            if error is None:
                raise
            warn_user(f"The run failed ({error!r}), and so did a training state's write: {write_error}")
        finally:
            self._background.close()

    def _finish_writing(self) -> None:
        """Wait for the state being written in the background; its error is raised on every process."""
        if self._writing is None:
            return
        writing, self._writing = self._writing, None
        what = f"write the training state {str(writing)!r} in the background"
        on_every_process(self.accelerator, self._background.wait, what)

    # ------------------------------------------------------------------ resuming

    def _find(self, resume_from) -> Path | None:
        """The state ``resume_from`` names, agreed by every process; ``None`` for a fresh start."""
        if resume_from is None:
            return None
        if isinstance(resume_from, str) and resume_from == "latest":
            latest = agree_on_training_state(self.accelerator, self._latest_of_callbacks, resume_from)
            if latest is None:
                self.accelerator.print(
                    "resume_from='latest': no training state has been saved yet; starting a new run."
                )
            return latest
        return agree_on_training_state(
            self.accelerator, functools.partial(_resolve, resume_from), resume_from
        )

    def _latest_of_callbacks(self) -> Path | None:
        finders = [
            callback.latest_training_state
            for callback in self.callbacks
            if callable(getattr(callback, "latest_training_state", None))
        ]
        if not finders:
            raise ValueError(
                "resume_from='latest' needs a callback that saves training states (SaveTrainingStateCallback "
                "from trainer-callbacks); otherwise pass the folder to resume from."
            )
        return newest_of(path for path in (find() for find in finders) if path is not None)

    def _load(self, path: Path) -> _Pending:
        """Check the state at ``path`` against this run, then put back all but what waits for the start
        events."""
        manifest, shared, own = load_training_state(path, self.accelerator.process_index)
        change = ProcessChange(manifest["num_processes"], self.accelerator.num_processes)
        if change.changed:
            self._check_process_change(path, shared, own, change)
        own_callbacks = own["callbacks"] if change.has_own_state(self.accelerator.process_index) else {}
        callback_states = {**shared["callbacks"], **own_callbacks}
        self._check_fits(path, manifest, shared, own, callback_states)
        # the small parts first: should one still refuse its state, the weights are untouched
        if self.scheduler is not None:
            self.scheduler.load_state_dict(shared["scheduler"])
        if self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(shared["scaler"])
        self._load_large_components(path, manifest, shared)
        # states before 0.4: shared only
        self.run_history.load_state_dict(own.get("run_history", shared["run_history"]))
        self.position.load_state_dict(shared["position"])
        self.train_loss.load_state_dict(own["train_loss"])
        self._epoch_start_rng = own["epoch_start_rng"]  # a state saved later in this epoch needs it too
        self.resumed_from = path
        rng = own["rng"]
        if change.changed:
            rng = self._take_other_processes_parts(path, manifest, shared, own, change)
        # warns where it must replay
        self.train_data.load_state_dict(own.get("train_data"), self.position.in_epoch)
        return _Pending(rng=rng, epoch_start_rng=own["epoch_start_rng"], callback_states=callback_states)

    def _finish(self, epoch_goes_on: bool) -> None:
        """The callbacks' states, then the random generators as saved.

        An epoch resumed inside that goes on keeps the training dataloader's own generators (its
        sampler's) as its iteration drew them from the epoch's start: that iteration asked for one
        index list more than the saved run had (for the batch it yields first), and workers reading
        ahead may take the sampler to its last draw, which the saved state does not hold yet."""
        pending, self._pending = self._pending, None
        callbacks = dict(self._callback_keys())
        for key, state in pending.callback_states.items():
            callbacks[key].load_state_dict(state)
        if pending.rng is not None:
            restore_rng_state(pending.rng, self.train_dataloader, loader_generators=not epoch_goes_on)

    def _iterate_epoch(self) -> Iterator:
        if self._one_process_order is not None:
            self._one_process_order.seed_epoch()
        if self._pending is None:
            return self.train_data.batches(self.position.epoch_batches)
        # a state saved at the update that ended its epoch: the epoch has no batch left, only its end
        goes_on = not self.position.train_epoch_should_end(self.run_config.max_num_train_steps)
        at_position = self._restore_rng_at_position
        batches = self.train_data.batches(self.position.epoch_batches, at_position) if goes_on else iter(())
        if self.train_data.replay_drew is not None:  # a replay that loaded ahead: exact unless a process drew
            self.train_data.warn_replayed(any_process(self.accelerator, self.train_data.replay_drew))
        self._finish(epoch_goes_on=goes_on)
        return batches

    def _restore_rng_at_position(self) -> None:
        """The generators as saved (the loader's own as its iteration drew them, see :meth:`_finish`),
        before the first batch after the saved position loads, so that it draws what the saved run's did."""
        rng, self._pending.rng = self._pending.rng, None
        restore_rng_state(rng, self.train_dataloader, loader_generators=False)

    # ------------------------------------------------------------------ another number of processes (N -> M)

    def _batch_settings(self, settings: dict, num_processes: int) -> BatchSettings:
        accumulation = settings["gradient_accumulation_steps"]
        return BatchSettings(settings["train_per_device_batch_size"], num_processes, accumulation)

    def _check_process_change(self, path: Path, shared: dict, own: dict, change: ProcessChange) -> None:
        """A state of another number of processes: the same samples per update (else what to pass), and the
        training dataloader drawing its order from the generators the saved run drew it from."""
        saved = self._batch_settings(shared["settings"], change.saved)
        here = self._batch_settings(self._resume_settings(), change.here)
        samples_per_epoch = (own.get("data_order") or {}).get("dataset_len")
        check_global_batch(saved, here, samples_per_epoch, repr(str(path)))
        saved_generators = len(own["rng"]["dataloader"])
        found = count_dataloader_generators(self.train_dataloader)
        self._one_process_order = match_sampler_generators(self.train_dataloader, saved_generators, found)
        if self._one_process_order is not None:  # the saved one-process loader kept no generator: take ours
            for rng_state in (own["rng"], own["epoch_start_rng"]):
                if rng_state is not None:
                    rng_state["dataloader"] = [self._one_process_order.generator.get_state()]

    def _take_other_processes_parts(
        self, path: Path, manifest: dict, shared: dict, own: dict, change: ProcessChange
    ) -> dict:
        """What a process takes of a state saved by another number of processes (``process_change`` says
        why): the position in its batches, the running loss summed, its random state (returned)."""
        index = self.accelerator.process_index
        saved = self._batch_settings(shared["settings"], change.saved)
        here = self._batch_settings(self._resume_settings(), change.here)
        self.position.epoch_batches = epoch_batches_here(self.position.epoch_batches, saved, here)
        self._sum_running_losses(path, manifest, own, change)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
            batch_changed = saved.per_device_batch_size != here.per_device_batch_size
            warn_what_differs(change, model, batch_changed, self.train_data.seeds_fetches)
        if own.get("train_data") is None:  # saved where no process read the stream's own position
            self.train_data.resume_without_stream_state()
        return own["rng"] if change.has_own_state(index) else derived_rng_state(own["rng"], index)

    def _sum_running_losses(self, path: Path, manifest: dict, own: dict, change: ProcessChange) -> None:
        """This process's running loss: the sums of the saved processes it takes; inside an epoch, a warning
        naming the per-process callback states of those it takes only the loss of (more saved processes)."""
        index = self.accelerator.process_index
        others = load_process_states(path, manifest, [i for i in change.loss_indices(index) if i != index])
        mine = [own] if change.has_own_state(index) else []
        self.train_loss.load_state_dict(summed_loss_state([state["train_loss"] for state in mine + others]))
        if self.position.in_epoch:
            dropped: dict[str, list[dict]] = {}
            for state in others:
                for key, callback_state in state["callbacks"].items():
                    dropped.setdefault(key, []).append(callback_state)
            warn_dropped_callback_states(change, dropped, own["callbacks"])

    def _needs_epoch_start_rng(self) -> bool:
        # only a callback handling on_save_point can save a state inside the epoch, which replays this
        # random state; seeded fetches take their seed from it. Without either, the capture is skipped.
        return "on_save_point" in self.callbacks.handled_events or self.train_data.seeds_fetches

    # ------------------------------------------------------------------ saving

    def _check_can_be_saved(self, point: str | None, asynchronous: bool) -> None:
        if asynchronous and self._ended:
            raise CheckpointError(
                "save_training_state(asynchronous=True) saves during a run, whose end waits for the write: "
                "after train() returns, save with asynchronous=False."
            )
        if point is None:
            raise CheckpointError(
                "save_training_state was called in the middle of a training step, where a saved state would "
                "not resume exactly: call it from on_save_point (fired after each update and each epoch), "
                "or after train() returns."
            )
        if self.position.in_epoch and self._epoch_start_rng is None:
            raise CheckpointError(
                "This epoch started without a callback that handles on_save_point, so its data order was not"
                " recorded and a state saved inside it would not resume exactly: give the Trainer the"
                " callback that saves (SaveTrainingStateCallback, or one with an on_save_point) before"
                " train()."
            )
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise CheckpointError(
                "save_training_state supports one device, DDP and FSDP2, not DeepSpeed: "
                "use accelerator.save_state / load_state there."
            )
        if asynchronous and sharded_state.is_sharded(self.accelerator):
            raise CheckpointError(
                "save_training_state(asynchronous=True) is not supported for sharded (FSDP) models: every "
                "process writes its own shards, while it waits. Save with asynchronous=False (with "
                "SaveTrainingStateCallback: asynchronous=False)."
            )

    def _save_shards(self, save_dir: Path) -> tuple[dict[str, dict], dict[str, tuple]] | None:
        """A sharded model's components, written by every process into the state's hidden folder
        (:mod:`sharded_state`): what the manifest names and their files; None for an unsharded model."""
        if not sharded_state.is_sharded(self.accelerator):
            return None
        main = self.accelerator.is_main_process
        on_every_process(self.accelerator, lambda: main and start_writing(save_dir), "start writing a state")
        folder = writing_folder(save_dir)
        try:
            return on_every_process(
                self.accelerator,
                lambda: sharded_state.save_shards(self.accelerator, self.model, self.optimizer, folder),
                f"write its shards of the training state {str(save_dir)!r}",
            )
        except BaseException:
            if main:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def _large_components(self, stored_apart: dict[str, dict]) -> dict[str, Any]:
        """The model's and the optimizer's states for ``trainer.pt``, but those stored apart (with DCP)."""
        parts = {
            "model": lambda: model_state_dict(self.accelerator, self.model),
            "optimizer": self.optimizer.state_dict,
        }
        return {name: state() for name, state in parts.items() if name not in stored_apart}

    def _saved_position(self, point: str) -> dict[str, Any]:
        return {**self.position.state_dict(), "epoch": self.run_history.current_epoch, "point": point}

    def _resume_settings(self) -> dict[str, Any]:
        """The settings a position inside an epoch depends on."""
        config = self.run_config
        return {
            "train_dataloader_len": config.train_dataloader_len,
            "train_per_device_batch_size": config.train_per_device_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
        }

    def _shared_state(self, point: str, stored_apart: dict[str, dict]) -> dict[str, Any]:
        state = {
            **self._large_components(stored_apart),
            "optimizer_class": type(self._torch_optimizer()).__name__,
            "run_history": self.run_history.state_dict(),
            "position": self._saved_position(point),
            "settings": self._resume_settings(),
            "callbacks": self._callback_states(per_process=False),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
            state["scheduler_class"] = type(self.scheduler).__qualname__
        if self.accelerator.scaler is not None:
            state["scaler"] = self.accelerator.scaler.state_dict()
        check_plain_data(state["run_history"], "run_history.state_dict()")
        check_plain_data(state.get("scheduler"), "scheduler.state_dict()")
        return state

    def _process_state(self) -> dict[str, Any]:
        # each process's own history too: values such as train_loss_step are the process's own
        history = self.run_history.state_dict()
        check_plain_data(history, "run_history.state_dict()")
        return {
            "run_history": history,
            "rng": capture_rng_state(self.train_dataloader),
            "epoch_start_rng": self._epoch_start_rng if self.position.epoch_batches else None,
            "train_loss": self.train_loss.state_dict(),
            "train_data": self.train_data.state_dict(),
            "data_order": self.train_data.data_order(),
            "callbacks": self._callback_states(per_process=True),
        }

    def _callback_keys(self) -> list[tuple[str, TrainerCallback]]:
        """Each callback under its class name, numbered from the second of a class: ``Logger#2``."""
        seen: dict[str, int] = {}
        keys = []
        for callback in self.callbacks.callbacks:
            name = type(callback).__qualname__
            seen[name] = seen.get(name, 0) + 1
            keys.append((name if seen[name] == 1 else f"{name}#{seen[name]}", callback))
        return keys

    def _callback_states(self, per_process: bool) -> dict[str, dict]:
        states = {}
        for key, callback in self._callback_keys():
            if bool(callback.per_process_state) == per_process:
                state = callback.state_dict()
                if state:
                    check_plain_data(state, f"{key}.state_dict()")
                    states[key] = state
        return states

    def _torch_optimizer(self):
        return getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate's wrapper holds torch's

    # ------------------------------------------------------------------ checks before loading

    def _check_fits(self, path: Path, manifest: dict, shared: dict, own: dict, callback_states: dict) -> None:
        """Everything the state must match, checked before any of it is applied."""
        where = repr(str(path))
        position = shared["position"]
        mid_epoch = position["epoch_batches"] > 0 and not position["stopped"]
        self.train_data.check_fits(own.get("data_order"), mid_epoch, where)
        same_processes = manifest["num_processes"] == self.accelerator.num_processes  # else checked before
        if mid_epoch and same_processes:
            differences = [
                f"{name} {saved} there, {now} here"
                for (name, saved), now in zip(shared["settings"].items(), self._resume_settings().values())
                if saved != now
            ]
            if differences:
                raise CheckpointError(
                    f"{where} was saved in the middle of an epoch of a run with other settings"
                    f" ({'; '.join(differences)}): resume with the settings it was saved with."
                )
        self._check_large_components_fit(path, manifest, shared)
        for part, present in (
            ("scheduler", self.scheduler is not None),
            ("scaler", self.accelerator.scaler is not None),
        ):
            if (part in shared) != present:
                saved_it = "holds" if part in shared else "has no"
                here = "has one" if present else "has none"
                raise CheckpointError(
                    f"{where} {saved_it} a {part} state and this run {here}: resume with the"
                    f" {'create_scheduler_fn' if part == 'scheduler' else 'mixed_precision'} the run was"
                    " saved with."
                )
        saved_scheduler = shared.get("scheduler_class")  # older states do not name it
        if self.scheduler is not None and saved_scheduler not in (None, type(self.scheduler).__qualname__):
            raise CheckpointError(
                f"{where} holds the state of a {saved_scheduler} scheduler; this run's is a"
                f" {type(self.scheduler).__qualname__}. Resume with the create_scheduler_fn the run was saved"
                " with."
            )
        for rng_state in (own["rng"], own["epoch_start_rng"]):
            if rng_state is not None:
                check_rng_state_fits(rng_state, self.train_dataloader)
        callbacks_here = {key for key, _ in self._callback_keys()}
        homeless = sorted(set(callback_states) - callbacks_here)
        if homeless:
            raise CheckpointError(
                f"{where} holds the state of callbacks this trainer does not have: {homeless}. Create the"
                " Trainer with the callbacks the run was saved with (several of one class in the same"
                " order)."
            )

    def _check_large_components_fit(self, path: Path, manifest: dict, shared: dict) -> None:
        components = components_of(path, manifest)
        apart = sharded_state.stored_sharded(components)
        if sharded_state.is_sharded(self.accelerator) and "model" not in apart:
            raise CheckpointError(
                f"{str(path)!r} was saved by an unsharded run (one process or DDP) and this run shards the "
                "model (FSDP): resume it unsharded, or start from its weights with load_checkpoint."
            )
        unwrapped = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if apart:
            sharded_state.check_fits(unwrapped, self.optimizer, path, components, shared["optimizer_class"])
        if "model" not in apart:
            check_model_fits(unwrapped, shared["model"], path)
        if "optimizer" not in apart:
            self._check_optimizer_fits(shared, path)

    def _load_large_components(self, path: Path, manifest: dict, shared: dict) -> None:
        """The model's and the optimizer's states, from ``trainer.pt`` or, resharded, from DCP's files."""
        components = components_of(path, manifest)
        apart = sharded_state.stored_sharded(components)
        if "optimizer" not in apart:
            self.optimizer.load_state_dict(shared["optimizer"])
        if "model" not in apart:
            load_model_state_dict(self.accelerator, self.model, shared["model"], path)
        if apart:
            sharded_state.load_shards(self.model, self.optimizer, path, components)

    def _check_optimizer_fits(self, shared: dict, path: Path) -> None:
        optimizer = self._torch_optimizer()
        optimizer_class = type(optimizer).__name__
        if shared["optimizer_class"] != optimizer_class:
            raise CheckpointError(
                f"{str(path)!r} holds the state of a {shared['optimizer_class']} optimizer; this trainer's is"
                f" a {optimizer_class}. Resume with the optimizer the run was saved with."
            )
        saved_sizes = [len(group["params"]) for group in shared["optimizer"]["param_groups"]]
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        if saved_sizes != sizes:
            raise CheckpointError(
                f"The optimizer state in {str(path)!r} has param groups of {saved_sizes} parameters; this"
                f" optimizer's have {sizes}. Create the optimizer (and add any param groups) as the saved run"
                " had them."
            )


def _resolve(resume_from) -> Path:
    """The training state ``resume_from`` names; a file is refused, named for what it is."""
    path = Path(resume_from)
    if not path.is_file():
        return resolve_training_state(path)
    where = f"resume_from={str(path)!r}"
    if (path.parent / MANIFEST_NAME).is_file():
        raise CheckpointError(
            f"{where} is a file of the training state {str(path.parent)!r}: pass that folder."
        )
    if is_checkpoint_file(path):
        raise CheckpointError(
            f"{where} is a checkpoint written by save_checkpoint (weights, optimizer, scheduler), not a"
            " training state: it holds no position, random state or run history to resume from. To start a"
            f" new run from its weights, call trainer.load_checkpoint({str(path)!r}) before train() (without"
            " resume_from); to resume exactly, pass a folder written by save_training_state (or"
            " SaveTrainingStateCallback)."
        )
    raise CheckpointError(
        f"{where} is a file; a training state is a folder that save_training_state writes: pass one."
    )


def _write_copied_state(save_dir: Path) -> Callable[[tuple], Path]:
    """What the background thread calls with the host copy of (shared state, per-process states, position)."""
    return lambda state: write_training_state(save_dir, *state)


class _EpochBatches:
    """A training epoch's batches, drawn from the dataloader when iterated (after the epoch's start
    events)."""

    def __init__(self, iterate: Callable[[], Iterator]):
        self.iterate = iterate

    def __iter__(self) -> Iterator:
        return self.iterate()
