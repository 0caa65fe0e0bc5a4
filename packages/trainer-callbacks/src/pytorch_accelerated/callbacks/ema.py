"""An exponential moving average of the model's weights, evaluated and saved alongside the model."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from pytorch_accelerated.trainer import TrainerCallback

from .run_folders import CHECKPOINT_IF_EXISTS_CHOICES, IfExists, RunPath


class ModelEmaCallback(TrainerCallback):
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every optimizer update.

    Buffers that are not floating point (BatchNorm's step counter) are copied. With
    ``use_warmup=True`` the decay starts low and rises as ``min(decay, (1 + n) / (10 + n))`` after
    ``n`` updates, so that early EMA weights are not dominated by the initialisation.

    During training, after each evaluation epoch, the EMA weights are evaluated on the same data
    and their metrics recorded with ``metric_prefix`` (``ema_eval_loss``, and e.g.
    ``ema_eval_accuracy`` from a metrics callback); at the end of the run they are saved to
    ``save_path`` as a Trainer checkpoint (load them with ``trainer.load_checkpoint``), in a fresh
    ``version_<n>`` folder beside it unless ``if_exists`` says otherwise, as for
    :class:`SaveBestModelCallback` (``ema_model.pt`` is saved as ``version_0/ema_model.pt``, then
    ``version_1/ema_model.pt``; ``if_exists="overwrite"`` replaces the file given).
    The average is kept on the trainer's device; updates add no host-device synchronisation.
    Sharded models (FSDP, DeepSpeed ZeRO-3) are not supported.
    """

    def __init__(
        self,
        decay: float = 0.9999,
        use_warmup: bool = False,
        evaluate_during_training: bool = True,
        metric_prefix: str = "ema_",
        save_path: str | Path | None = "ema_model.pt",
        if_exists: IfExists = "new_version",
    ):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.use_warmup = use_warmup
        self.evaluate_during_training = evaluate_during_training
        self.metric_prefix = metric_prefix
        owner, choices = type(self).__name__, CHECKPOINT_IF_EXISTS_CHOICES
        self._run_path = None if save_path is None else RunPath(save_path, if_exists, owner, choices)
        self.num_updates = 0
        self.ema_state: dict[str, torch.Tensor] | None = None
        self._model_tensors: list[torch.Tensor] = []
        self._in_training_run = False
        self._evaluating = False

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if self.use_warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @property
    def save_path(self) -> Path | None:
        """Where the average is saved (its ``version_<n>`` folder once the first run has started), or None."""
        return self._run_path.path if self._run_path is not None else None

    def recorded_metric_names(self, trainer):
        if not self.evaluate_during_training:
            return []
        # evaluated inside each evaluation set's epoch: ema_eval_loss, ema_eval_<name> (or val_ema_...)
        return [f"{outer}{self.metric_prefix}*eval_*" for outer in trainer.evaluation_metric_names("")]

    def on_training_run_start(self, trainer, **kwargs):
        if self._run_path is not None:
            self._run_path.start_run(trainer)
        model_state = trainer.get_model(keep_torch_compile=False).state_dict()
        if self.ema_state is None or self.ema_state.keys() != model_state.keys():
            self.ema_state = {name: tensor.detach().clone() for name, tensor in model_state.items()}
            self.num_updates = 0
        else:
            self.ema_state = {name: tensor.to(trainer.device) for name, tensor in self.ema_state.items()}
        self._model_tensors = list(model_state.values())
        self._in_training_run = True

    @torch.no_grad()
    def on_optimizer_step_end(self, trainer, **kwargs):
        if trainer.optimizer_step_was_skipped:
            return
        weight = 1.0 - self.current_decay()
        averaged, current, copied, sources = [], [], [], []
        for ema, tensor in zip(self.ema_state.values(), self._model_tensors):
            if ema.is_floating_point():
                averaged.append(ema)
                current.append(tensor)
            else:
                copied.append(ema)
                sources.append(tensor)
        if averaged:
            torch._foreach_lerp_(averaged, current, weight)
        for ema, tensor in zip(copied, sources):
            ema.copy_(tensor)
        self.num_updates += 1

    def on_eval_epoch_end(self, trainer, **kwargs):
        if self._in_training_run and self.evaluate_during_training and not self._evaluating:
            self._evaluating = True
            try:
                with self.ema_weights_in(trainer), trainer.run_history.metric_prefix(self.metric_prefix):
                    trainer.evaluate(trainer.eval_dataset)  # the set just evaluated (of several named ones)
            finally:
                self._evaluating = False

    def on_training_run_end(self, trainer, **kwargs):
        self._in_training_run = False
        if self.save_path is not None and self.ema_state is not None:
            with self.ema_weights_in(trainer):
                trainer.save_checkpoint(self.save_path, save_optimizer=False, save_scheduler=False)

    @contextmanager
    def ema_weights_in(self, trainer) -> Iterator[None]:
        """Within this block the trainer's model holds the EMA weights; its own come back after."""
        model_state = trainer.get_model(keep_torch_compile=False).state_dict()
        backup = {name: tensor.clone() for name, tensor in model_state.items()}
        _copy_into(model_state, self.ema_state)
        try:
            yield
        finally:
            _copy_into(model_state, backup)

    def state_dict(self):
        where = self._run_path.state_dict() if self._run_path is not None else {}
        return {**where, "num_updates": self.num_updates, "ema_state": self.ema_state}

    def load_state_dict(self, state_dict):
        if self._run_path is not None:
            self._run_path.load_state_dict(state_dict)
        self.num_updates = state_dict["num_updates"]
        # a resumed run loads this after on_training_run_start placed the average on the device
        device = next(iter(self.ema_state.values())).device if self.ema_state else None
        self.ema_state = {
            name: tensor.to(device) if device else tensor for name, tensor in state_dict["ema_state"].items()
        }


@torch.no_grad()
def _copy_into(targets: dict[str, torch.Tensor], sources: dict[str, torch.Tensor]) -> None:
    for name, tensor in targets.items():
        tensor.copy_(sources[name])
