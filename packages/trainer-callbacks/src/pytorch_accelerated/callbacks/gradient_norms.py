"""Gradient norms per optimizer update, total and per layer group, before and after clipping."""

from __future__ import annotations

from typing import Any

import torch

from pytorch_accelerated.finetuning import ModelFreezer
from pytorch_accelerated.trainer import TrainerCallback

#: The custom event :class:`GradientClippingEventMixin` fires just before the gradients are clipped.
BEFORE_GRADIENT_CLIPPING_EVENT = "on_before_gradient_clipping"


class GradientClippingEventMixin:
    """Makes a Trainer fire ``on_before_gradient_clipping(trainer)`` once per optimizer update,
    after the last backward of the accumulation window (and after DDP's gradient averaging) and
    before ``clip_gradients`` clips. The core's ``on_before_optimizer_step`` fires after clipping::

        class MyTrainer(GradientClippingEventMixin, Trainer): ...
    """

    custom_events = (BEFORE_GRADIENT_CLIPPING_EVENT,)

    def clip_gradients(self) -> None:
        self.callback_handler.call_event(BEFORE_GRADIENT_CLIPPING_EVENT, self)
        super().clip_gradients()


class GradientNormCallback(TrainerCallback):
    """Records the L2 norm of the gradients of every optimizer update: ``grad_norm`` (all
    parameters) and ``grad_norm/group_<i>`` per layer group, as ``ModelFreezer`` splits the model
    (``pytorch_accelerated.finetuning``: plain containers opened up, each module with weights
    starting a group), so the norms line up with the groups you freeze and unfreeze (a group with
    no gradients, frozen, has norm 0).

    The norms are taken once per update, on the gradients the optimizer is about to use: after the
    accumulation window's last backward and, on several processes, after DDP averaged them, so they
    are equal on every process. Without clipping, they are recorded as ``grad_norm``. With
    ``gradient_clip_norm`` or ``gradient_clip_value``, the norm before clipping needs the event of
    :class:`GradientClippingEventMixin` (a Trainer subclass: ``class MyTrainer(GradientClippingEventMixin,
    Trainer)``); ``grad_norm`` is then the norm before clipping and ``grad_norm_clipped`` (and
    ``grad_norm_clipped/<group>``) the norm after. A clipping run without the mixin is refused when it
    starts, naming it.

    The norms stay on the device; they are read (one transfer) every ``log_every_n_steps`` updates and
    at the end of each training epoch, then recorded into the run history, one value per update, in
    order, each at the step of its update. Per layer group only if ``per_layer_group`` (the default). With
    fp16 mixed precision the
    norms are those of the unscaled gradients (the loss scale is divided out where the gradients
    still carry it).
    """

    custom_events = (BEFORE_GRADIENT_CLIPPING_EVENT,)

    def __init__(self, log_every_n_steps: int = 50, per_layer_group: bool = True):
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be >= 1, got {log_every_n_steps}.")
        self.log_every_n_steps = log_every_n_steps
        self.per_layer_group = per_layer_group
        self._groups: list[tuple[str, list[torch.nn.Parameter]]] = []
        self._names: list[str] = []
        self._pending: list[torch.Tensor] = []  # one row of norms per update, on the device
        self._pending_steps: list[int] = []  # the update each row belongs to
        self._clipping = False
        self._device = torch.device("cpu")
        self._all_parameters: list[torch.nn.Parameter] = []
        self._before_clipping: torch.Tensor | None = None
        self._scaler = None

    def on_training_run_start(self, trainer, **kwargs):
        self._clipping = _clips(trainer.run_config)
        if self._clipping and not isinstance(trainer, GradientClippingEventMixin):
            raise TypeError(
                "GradientNormCallback: this run clips gradients, and the norm before clipping needs the "
                f"{BEFORE_GRADIENT_CLIPPING_EVENT} event: train with a subclass "
                "`class MyTrainer(GradientClippingEventMixin, Trainer)` (both from pytorch_accelerated)."
            )
        self._groups = self._layer_groups(trainer)
        self._names = _norm_names(self._groups, self._clipping)
        self._all_parameters = list(trainer.get_model(keep_torch_compile=False).parameters())
        self._device = trainer.device
        self._scaler = trainer.accelerator.scaler
        self._pending, self._pending_steps = [], []
        self._before_clipping = None

    def recorded_metric_names(self, trainer):
        return _norm_names(self._layer_groups(trainer), _clips(trainer.run_config))

    def _layer_groups(self, trainer) -> list[tuple[str, list[torch.nn.Parameter]]]:
        return _layer_groups(trainer.get_model(keep_torch_compile=False)) if self.per_layer_group else []

    @torch.no_grad()
    def on_before_gradient_clipping(self, trainer, **kwargs):
        if self._clipping:
            self._before_clipping = self._unscaled(self._norms())

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
        # clipping unscaled the gradients (accelerate does it first); without it they carry the scale
        norms = self._norms()
        row = torch.cat([self._before_clipping, norms]) if self._clipping else self._unscaled(norms)
        self._pending.append(row)
        self._pending_steps.append(trainer.completed_update_steps + 1)
        if len(self._pending) >= self.log_every_n_steps:
            self._record(trainer)

    def on_train_epoch_end(self, trainer, **kwargs):
        self._record(trainer)

    def on_stop_training_error(self, trainer, **kwargs):
        self._record(trainer)

    def _norms(self) -> torch.Tensor:
        """The total norm, then one per group, as one tensor on the device (no synchronisation)."""
        total = _norm([p.grad for p in self._all_parameters if p.grad is not None], self._device).reshape(1)
        if not self._groups:
            return total
        group_norms = [
            _norm([p.grad for p in params if p.grad is not None], self._device) for _, params in self._groups
        ]
        return torch.cat([total, torch.stack(group_norms)])

    def _unscaled(self, norms: torch.Tensor) -> torch.Tensor:
        """``norms`` of gradients that still carry an fp16 loss scale, with the scale divided out."""
        if self._scaler is None or not self._scaler.is_enabled():
            return norms
        # the scale as a device tensor: get_scale() would read it on the host, a sync every update
        return norms / self._scaler._get_scale_async().to(norms.dtype)

    def _record(self, trainer) -> None:
        if not self._pending:
            return
        rows = torch.stack(self._pending).tolist()  # the one host-device transfer per interval
        steps = self._pending_steps
        self._pending, self._pending_steps = [], []
        for step, row in zip(steps, rows):
            for name, value in zip(self._names, row):
                trainer.run_history.update_metric(name, value, step=step)  # at the update it belongs to

    def state_dict(self) -> dict[str, Any]:
        # norms of updates not yet recorded: a training state saved between two readings keeps them
        if not self._pending:
            return {}
        return {"pending": [row.cpu() for row in self._pending], "pending_steps": list(self._pending_steps)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = [row.to(self._device) for row in state_dict.get("pending", [])]
        # a state saved before norms knew their update: those rows are recorded at the step they are read
        self._pending_steps = list(state_dict.get("pending_steps", [None] * len(self._pending)))


def _layer_groups(model: torch.nn.Module) -> list[tuple[str, list[torch.nn.Parameter]]]:
    """``group_<i>`` and its parameters for each of ModelFreezer's layer groups of ``model``."""
    return [
        (f"group_{group.layer_group_idx}", list(group.params))
        for group in ModelFreezer(model).get_layer_groups()
    ]


def _clips(run_config) -> bool:
    return run_config.gradient_clip_norm is not None or run_config.gradient_clip_value is not None


def _norm_names(groups: list[tuple[str, list]], clipping: bool) -> list[str]:
    """``grad_norm`` and one per layer group, then the same after clipping (``grad_norm_clipped``)."""
    parts = ["grad_norm", *(f"grad_norm/{name}" for name, _ in groups)]
    return parts + ([f"grad_norm_clipped{part[len('grad_norm') :]}" for part in parts] if clipping else [])


def _norm(gradients: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not gradients:
        return torch.zeros((), dtype=torch.float32, device=device)
    return torch.nn.utils.get_total_norm(gradients, norm_type=2.0).to(torch.float32)
