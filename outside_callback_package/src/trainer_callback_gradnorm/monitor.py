"""The gradient-norm monitor."""

from __future__ import annotations

import torch

from pytorch_accelerated.trainer import TrainerCallback


class GradientNormMonitorCallback(TrainerCallback):
    """Measures the total norm of the model's gradients at every optimizer update and records,
    once per training epoch, its mean and its maximum over the epoch's updates.

    The norm is the one the optimizer sees: of the gradients summed over the accumulation window,
    synchronised across processes (so every process measures the same norm) and clipped if the
    run clips them. With fp16 loss scaling the gradients are unscaled first (when the run does not
    clip, the monitor calls ``accelerator.unscale_gradients()`` itself, as torch advises before
    reading gradients; the update is unchanged). Updates that the optimizer skipped (fp16
    overflow) are left out.

    Recorded in the run history at ``on_train_epoch_end`` (so loggers, the progress printout and
    watchers such as early stopping all see them): ``<name>_mean`` and ``<name>_max``, by default
    ``grad_norm_mean`` and ``grad_norm_max``. Each update's norm stays on the device; the values
    are read back once per epoch, so the monitor adds no host-device synchronisation per step.

    Args:
        norm_type: the order of the norm (2.0: Euclidean; ``float("inf")``: largest absolute value),
            as in ``torch.nn.utils.clip_grad_norm_``.
        name: the prefix of the recorded metrics.
    """

    def __init__(self, norm_type: float = 2.0, name: str = "grad_norm"):
        if not isinstance(norm_type, (int, float)) or isinstance(norm_type, bool) or norm_type <= 0:
            raise ValueError(f"norm_type must be a positive number (or float('inf')), got {norm_type!r}.")
        if not name or any(char.isspace() for char in name):
            raise ValueError(f"name must be a non-empty metric name without spaces, got {name!r}.")
        self.norm_type = float(norm_type)
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self._pending: torch.Tensor | None = None  # this update's norm, until we know it was not skipped
        self._total: torch.Tensor | None = None
        self._max: torch.Tensor | None = None
        self._num_updates = 0

    def on_training_run_start(self, trainer, **kwargs):
        self._reset()

    def on_train_epoch_start(self, trainer, **kwargs):
        self._reset()

    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        _unscale_gradients(trainer)
        gradients = [p.grad.detach() for p in trainer.model.parameters() if p.grad is not None]
        if not gradients:
            self._pending = None
            return
        norms = torch.stack(
            [torch.linalg.vector_norm(g, self.norm_type, dtype=torch.float32) for g in gradients]
        )
        self._pending = torch.linalg.vector_norm(norms, self.norm_type)

    def on_optimizer_step_end(self, trainer, optimizer, **kwargs):
        norm, self._pending = self._pending, None
        if norm is None or trainer.optimizer_step_was_skipped:
            return
        if self._total is None:
            self._total, self._max = norm.clone(), norm.clone()
        else:
            self._total = self._total.to(norm.device) + norm
            self._max = torch.maximum(self._max.to(norm.device), norm)
        self._num_updates += 1

    def state_dict(self):
        # the epoch's running figures, so that a run resumed inside an epoch records the same values
        return {"total": self._total, "max": self._max, "num_updates": self._num_updates}

    def load_state_dict(self, state_dict):
        # moved to the norms' device when next used
        self._total, self._max = (
            state_dict["total"],
            state_dict["max"],
        )
        self._num_updates = state_dict["num_updates"]

    def on_train_epoch_end(self, trainer, **kwargs):
        if self._num_updates == 0:
            return  # no update with gradients this epoch: nothing to record
        mean, maximum = torch.stack([self._total / self._num_updates, self._max]).tolist()
        trainer.run_history.update_metric(f"{self.name}_mean", mean)
        trainer.run_history.update_metric(f"{self.name}_max", maximum)


def _unscale_gradients(trainer) -> None:
    """With fp16 loss scaling, divide the loss scale out of the gradients, as torch advises before
    reading them (``GradScaler.unscale_``: the optimizer step then does not unscale them again, and
    nothing is read back to the host). Clipping already did it when the run clips."""
    accelerator = trainer.accelerator
    config = trainer.run_config
    if (
        accelerator.scaler is None
        or config.gradient_clip_norm is not None
        or config.gradient_clip_value is not None
    ):
        return
    try:
        accelerator.unscale_gradients()
    except RuntimeError as error:  # an overridden clip_gradients unscaled them already
        if "unscale_() has already been called" not in str(error):
            raise
