"""Exact resume: what a training state holds, whether a saved one fits this run, putting it back,
and the run's position it records.

The Trainer holds one :class:`TrainingStates` and calls it at a few named points: ``find`` and
``start_run``/``load`` as ``train`` starts, ``start_epoch`` as each training epoch starts,
``train_batches`` for its batches (a resumed epoch's skip to its position is
:mod:`resumable_data`'s), ``finish_resuming`` once the resumed run's start events have run, and ``save`` from
:meth:`Trainer.save_training_state`. The position itself (``completed_update_steps``,
``completed_epoch_batches``, ...) stays on the Trainer, where the loop advances it every step;
how a state is laid out on disk is :mod:`training_state`'s.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from accelerate.utils import DistributedType, gather_object

from .agreement import agree_on_training_state, on_every_process
from .checkpointing import (
    CheckpointError,
    check_model_fits,
    check_plain_data,
    load_model_state_dict,
    model_state_dict,
    to_cpu,
)
from .resumable_data import TrainData
from .running_loss import RunningLoss
from .training_state import (
    capture_rng_state,
    check_rng_state_fits,
    load_training_state,
    newest_of,
    resolve_training_state,
    restore_rng_state,
    write_training_state,
)

if TYPE_CHECKING:
    from .callbacks import TrainerCallback
    from .trainer import Trainer

@dataclass
class PendingResume:
    """What a resumed run restores once its start events have run."""

    rng: dict
    epoch_start_rng: dict | None
    callback_states: dict[str, dict]
    mid_epoch: bool


class TrainingStates:
    """The training states of one :class:`Trainer`'s runs: capture, check, apply, and the position."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.pending: PendingResume | None = None  # set by load(), cleared by finish_resuming()
        self.epoch_start_rng: dict | None = None
        self.train_data: TrainData | None = None  # the training dataloader as a resume needs it, set by start_run()

    # ------------------------------------------------------------------ the points the loop calls

    @property
    def resuming(self) -> bool:
        """Whether a loaded state has still to be finished (its callbacks' states and generators)."""
        return self.pending is not None

    @property
    def resuming_mid_epoch(self) -> bool:
        return self.pending is not None and self.pending.mid_epoch

    def find(self, resume_from) -> Path | None:
        """The state ``train(resume_from=...)`` names, agreed by every process; ``None`` for a fresh start."""
        trainer = self.trainer
        if resume_from is None:
            return None
        if isinstance(resume_from, str) and resume_from == "latest":
            latest = agree_on_training_state(trainer, self._latest_training_state_of_callbacks, resume_from)
            if latest is None:
                trainer.print("resume_from='latest': no training state has been saved yet; starting a new run.")
            return latest
        return agree_on_training_state(trainer, functools.partial(resolve_training_state, resume_from), resume_from)

    def start_run(self) -> None:
        trainer = self.trainer
        trainer.completed_update_steps = 0
        trainer.completed_epoch_batches = 0
        trainer._epochs_completed = 0
        trainer._training_stopped = False
        trainer._epoch_end_requested = False
        trainer.resumed_from = None
        self.pending = None
        self.train_data = TrainData(trainer.train_dataloader, trainer.num_processes)

    def load(self, path: Path) -> None:
        """Check the state at ``path`` against this run and apply it, on every process; what must
        wait for the run's start events (callbacks, generators) waits for :meth:`finish_resuming`."""
        self.pending = on_every_process(self.trainer, lambda: self._apply(path), f"load the training state {str(path)!r}")

    def start_epoch(self) -> bool:
        """At a training epoch's start: a fresh epoch's position and data order, or, for a resume
        inside this epoch, the data order it started with. Returns whether it is that resume."""
        trainer = self.trainer
        if self.pending is not None:  # only a resume inside an epoch is still pending here
            restore_rng_state(self.pending.epoch_start_rng, trainer.train_dataloader)
            self.train_data.start_epoch(self.pending.epoch_start_rng)
            return True
        trainer.completed_epoch_batches = 0
        trainer._epoch_end_requested = False
        trainer._train_loss = RunningLoss(trainer.device)
        # the epoch's data order is drawn from these: a state saved inside the epoch replays them, and
        # seeded fetches take their seed from them. Only a callback handling on_save_point can save a
        # state inside the epoch: without one, and without seeded fetches, skip the capture (~0.2 ms).
        needed = "on_save_point" in trainer.callback_handler.handled_events or self.train_data.seeds_fetches
        self.epoch_start_rng = capture_rng_state(trainer.train_dataloader) if needed else None
        self.train_data.start_epoch(self.epoch_start_rng)
        return False

    def train_batches(self, skip: int) -> Iterator:
        """The training epoch's batches after the first ``skip``: a resumed epoch starts at its
        position without loading what the saved run had seen (see :class:`resumable_data.TrainData`)."""
        return self.train_data.batches(skip)

    def finish_resuming(self) -> None:
        """The last step of resuming, once the run-start (and epoch-start) events have run: the
        callbacks' states, then the random generators as they were when the state was saved.

        An epoch resumed inside goes on with the training dataloader's own generators (its
        sampler's) as its iteration has drawn them from the epoch's start: by now it has asked
        for one index list more than the saved run had at its save point (for the look-ahead
        of the batch it yields first), and with workers reading ahead that may take the sampler
        to its end and its last draw, which the saved state does not hold yet; put back, that
        draw would be undone and the next epoch's order would differ. An epoch that ends right
        away leaves its iteration here, as the saved run did: its saved state is put back."""
        resume, self.pending = self.pending, None
        callbacks = dict(self._callback_keys())
        for key, state in resume.callback_states.items():
            callbacks[key].load_state_dict(state)
        epoch_goes_on = resume.mid_epoch and not self.trainer._train_epoch_should_end()
        restore_rng_state(resume.rng, self.trainer.train_dataloader, loader_generators=not epoch_goes_on)

    def end_run(self) -> None:
        self.pending = None

    def save(self, save_dir) -> Path:
        """:meth:`Trainer.save_training_state`: gather every process's part, the main process writes."""
        trainer = self.trainer
        self._check_can_be_saved()
        save_dir = Path(save_dir)
        own = on_every_process(trainer, lambda: to_cpu(self._process_state()), "collect its training state")
        states = [own] if trainer.num_processes == 1 else gather_object([own])

        def write() -> None:
            if trainer.is_world_process_zero:
                write_training_state(save_dir, self._shared_state(), states, self.position())

        on_every_process(trainer, write, f"write the training state {str(save_dir)!r}")
        return save_dir

    def position(self) -> dict[str, Any]:
        trainer = self.trainer
        return {
            "completed_update_steps": trainer.completed_update_steps,
            "epochs_completed": trainer._epochs_completed,
            "epoch_batches": trainer.completed_epoch_batches,
            "epoch_end_requested": trainer._epoch_end_requested,
            "stopped": trainer._training_stopped,
            "epoch": trainer.run_history.current_epoch,
            "point": trainer._save_point or "run_end",
        }

    # ------------------------------------------------------------------ capture

    def _check_can_be_saved(self) -> None:
        trainer = self.trainer
        if trainer.run_config is None:
            raise CheckpointError("Nothing to save yet: save_training_state saves a run started with train().")
        if trainer._in_training_run and trainer._save_point is None:
            raise CheckpointError(
                "save_training_state was called in the middle of a training step, where a saved state would "
                "not resume exactly: call it from on_save_point (fired after each update and each epoch), "
                "or after train() returns."
            )
        if trainer.completed_epoch_batches and self.epoch_start_rng is None and not trainer._training_stopped:
            raise CheckpointError(
                "This epoch started without a callback that handles on_save_point, so its data order was not "
                "recorded and a state saved inside it would not resume exactly: give the Trainer the callback "
                "that saves (SaveTrainingStateCallback, or one with an on_save_point) before train()."
            )
        if trainer.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise CheckpointError(
                "save_training_state supports one device and DDP, not sharded FSDP/DeepSpeed models: "
                "use accelerator.save_state / load_state there."
            )

    def _resume_settings(self) -> dict[str, Any]:
        """The settings a position inside an epoch depends on."""
        config = self.trainer.run_config
        return {
            "train_dataloader_len": config.train_dataloader_len,
            "train_per_device_batch_size": config.train_per_device_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
        }

    def _shared_state(self) -> dict[str, Any]:
        trainer = self.trainer
        state = {
            "model": model_state_dict(trainer),
            "optimizer": trainer.optimizer.state_dict(),
            "optimizer_class": type(trainer._unwrapped_optimizer()).__name__,
            "run_history": trainer.run_history.state_dict(),
            "position": self.position(),
            "settings": self._resume_settings(),
            "callbacks": self._callback_states(per_process=False),
        }
        if trainer.scheduler is not None:
            state["scheduler"] = trainer.scheduler.state_dict()
            state["scheduler_class"] = type(trainer.scheduler).__qualname__
        if trainer.accelerator.scaler is not None:
            state["scaler"] = trainer.accelerator.scaler.state_dict()
        check_plain_data(state["run_history"], "run_history.state_dict()")
        check_plain_data(state.get("scheduler"), "scheduler.state_dict()")
        return state

    def _process_state(self) -> dict[str, Any]:
        trainer = self.trainer
        # each process's own history too: values such as train_loss_step are the process's own
        history = trainer.run_history.state_dict()
        check_plain_data(history, "run_history.state_dict()")
        return {
            "run_history": history,
            "rng": capture_rng_state(trainer.train_dataloader),
            "epoch_start_rng": self.epoch_start_rng if trainer.completed_epoch_batches else None,
            "train_loss": trainer._train_loss.state_dict() if trainer._train_loss is not None else None,
            "train_data": self.train_data.state_dict(),
            "callbacks": self._callback_states(per_process=True),
        }

    def _callback_keys(self) -> list[tuple[str, TrainerCallback]]:
        """Each callback under its class name, numbered from the second of a class: ``Logger#2``."""
        seen: dict[str, int] = {}
        keys = []
        for callback in self.trainer.callback_handler.callbacks:
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

    # ------------------------------------------------------------------ find

    def _latest_training_state_of_callbacks(self) -> Path | None:
        finders = [
            callback.latest_training_state
            for callback in self.trainer.callback_handler.callbacks
            if callable(getattr(callback, "latest_training_state", None))
        ]
        if not finders:
            raise ValueError(
                "resume_from='latest' needs a callback that saves training states (SaveTrainingStateCallback "
                "from trainer-callbacks); otherwise pass the folder to resume from."
            )
        return newest_of(path for path in (find() for find in finders) if path is not None)

    # ------------------------------------------------------------------ check and apply

    def _apply(self, path: Path) -> PendingResume:
        trainer = self.trainer
        manifest, shared, own = load_training_state(path, trainer.process_index)
        callback_states = {**shared["callbacks"], **own["callbacks"]}
        self._check_fits(path, manifest, shared, own, callback_states)
        # the small parts first: should one still refuse its state, the weights are untouched
        if trainer.scheduler is not None:
            trainer.scheduler.load_state_dict(shared["scheduler"])
        if trainer.accelerator.scaler is not None:
            trainer.accelerator.scaler.load_state_dict(shared["scaler"])
        trainer.optimizer.load_state_dict(shared["optimizer"])
        load_model_state_dict(trainer, shared["model"], path)
        trainer.run_history.load_state_dict(own.get("run_history", shared["run_history"]))  # states before 0.4: shared only
        position = shared["position"]
        trainer.completed_update_steps = position["completed_update_steps"]
        trainer.completed_epoch_batches = position["epoch_batches"]
        trainer._epochs_completed = position["epochs_completed"]
        trainer._epoch_end_requested = position["epoch_end_requested"]
        trainer._training_stopped = position["stopped"]
        trainer._train_loss = RunningLoss.from_state_dict(own["train_loss"], trainer.device)
        self.epoch_start_rng = own["epoch_start_rng"]  # a state saved later in this epoch needs it too
        trainer.resumed_from = path
        mid_epoch = not position["stopped"] and position["epoch_batches"] > 0
        self.train_data.load_state_dict(own.get("train_data"), mid_epoch)  # warns once where it must replay
        return PendingResume(
            rng=own["rng"], epoch_start_rng=own["epoch_start_rng"], callback_states=callback_states, mid_epoch=mid_epoch
        )

    def _check_fits(self, path: Path, manifest: dict, shared: dict, own: dict, callback_states: dict) -> None:
        """Everything the state must match, checked before any of it is applied."""
        trainer = self.trainer
        where = repr(str(path))
        if manifest["num_processes"] != trainer.num_processes:
            raise CheckpointError(
                f"{where} was saved by {manifest['num_processes']} process(es) and this run has {trainer.num_processes}: "
                "resume with as many processes as it was saved with (the data order and the random generators depend on it)."
            )
        position = shared["position"]
        if position["epoch_batches"] > 0 and not position["stopped"]:
            differences = [
                f"{name} {saved} there, {now} here"
                for (name, saved), now in zip(shared["settings"].items(), self._resume_settings().values())
                if saved != now
            ]
            if differences:
                raise CheckpointError(
                    f"{where} was saved in the middle of an epoch of a run with other settings ({'; '.join(differences)}): "
                    "resume with the settings it was saved with."
                )
        check_model_fits(trainer.get_model(keep_torch_compile=False), shared["model"], path)
        self._check_optimizer_fits(shared, path)
        for part, present in (("scheduler", trainer.scheduler is not None), ("scaler", trainer.accelerator.scaler is not None)):
            if (part in shared) != present:
                saved_it = "holds" if part in shared else "has no"
                here = "has one" if present else "has none"
                raise CheckpointError(
                    f"{where} {saved_it} a {part} state and this run {here}: resume with the "
                    f"{'create_scheduler_fn' if part == 'scheduler' else 'mixed_precision'} the run was saved with."
                )
        saved_scheduler = shared.get("scheduler_class")  # older states do not name it
        if trainer.scheduler is not None and saved_scheduler not in (None, type(trainer.scheduler).__qualname__):
            raise CheckpointError(
                f"{where} holds the state of a {saved_scheduler} scheduler; this run's is a "
                f"{type(trainer.scheduler).__qualname__}. Resume with the create_scheduler_fn the run was saved with."
            )
        for rng_state in (own["rng"], own["epoch_start_rng"]):
            if rng_state is not None:
                check_rng_state_fits(rng_state, trainer.train_dataloader)
        callbacks_here = {key for key, _ in self._callback_keys()}
        homeless = sorted(set(callback_states) - callbacks_here)
        if homeless:
            raise CheckpointError(
                f"{where} holds the state of callbacks this trainer does not have: {homeless}. Create the Trainer "
                "with the callbacks the run was saved with (several of one class in the same order)."
            )

    def _check_optimizer_fits(self, shared: dict, path: Path) -> None:
        optimizer = self.trainer._unwrapped_optimizer()
        optimizer_class = type(optimizer).__name__
        if shared["optimizer_class"] != optimizer_class:
            raise CheckpointError(
                f"{str(path)!r} holds the state of a {shared['optimizer_class']} optimizer; this trainer's is a "
                f"{optimizer_class}. Resume with the optimizer the run was saved with."
            )
        saved_sizes = [len(group["params"]) for group in shared["optimizer"]["param_groups"]]
        sizes = [len(group["params"]) for group in optimizer.param_groups]
        if saved_sizes != sizes:
            raise CheckpointError(
                f"The optimizer state in {str(path)!r} has param groups of {saved_sizes} parameters; this optimizer's "
                f"have {sizes}. Create the optimizer (and add any param groups) as the saved run had them."
            )
