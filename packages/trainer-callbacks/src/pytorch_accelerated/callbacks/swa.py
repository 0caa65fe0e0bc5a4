"""Stochastic weight averaging (Izmailov et al., 2018) on ``torch.optim.swa_utils``."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from pytorch_accelerated.trainer import TrainerCallback

_BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)


class StochasticWeightAveragingCallback(TrainerCallback):
    """Averages the weights at the end of every training epoch from ``swa_start_epoch`` (1-based)
    on, with ``torch.optim.swa_utils.AveragedModel``; at the end of the run, copies the average into
    the model and recomputes the BatchNorm statistics for it.

    With ``swa_lr``, ``torch.optim.swa_utils.SWALR`` sets the learning rate of every epoch from
    ``swa_start_epoch`` on (at the epoch's start): annealed from the current lr to ``swa_lr`` over
    ``annealing_epochs`` epochs (``annealing_strategy`` ``"cos"`` or ``"linear"``), then constant. It
    replaces the trainer's scheduler, so a run with both is refused; without ``swa_lr`` the lr
    follows the trainer's scheduler (if any) throughout.

    At the end of the run (also when stopped early), if any epoch was averaged and
    ``swap_weights_at_end``: the averaged weights are copied into ``trainer.get_model()``, and, if it
    has BatchNorm layers and ``update_batch_norm``, ``torch.optim.swa_utils.update_bn`` recomputes
    their statistics with one pass over the training dataloader (batches are ``inputs`` or
    ``(inputs, ...)``); on several processes each process computes them on its shard and the
    statistics are then averaged over the processes, so every process ends with the same model.
    ``callback.averaged_model`` is the ``AveragedModel``. Its state (the average, the number of
    epochs averaged, SWALR's state) is in training states, so a resumed run averages exactly as the
    uninterrupted run did.
    """

    def __init__(
        self,
        swa_start_epoch: int,
        swa_lr: float | None = None,
        annealing_epochs: int = 1,
        annealing_strategy: str = "cos",
        update_batch_norm: bool = True,
        swap_weights_at_end: bool = True,
    ):
        if not isinstance(swa_start_epoch, int) or swa_start_epoch < 1:
            raise ValueError(f"swa_start_epoch is the first averaged epoch, from 1; got {swa_start_epoch!r}.")
        if annealing_strategy not in ("cos", "linear"):
            raise ValueError(f"annealing_strategy must be 'cos' or 'linear', got {annealing_strategy!r}.")
        self.swa_start_epoch = swa_start_epoch
        self.swa_lr = swa_lr
        self.annealing_epochs = annealing_epochs
        self.annealing_strategy = annealing_strategy
        self.update_batch_norm = update_batch_norm
        self.swap_weights_at_end = swap_weights_at_end
        self.averaged_model: AveragedModel | None = None
        self.swa_scheduler: SWALR | None = None
        self._optimizer = None

    def on_training_run_start(self, trainer, **kwargs):
        if self.swa_start_epoch > trainer.run_config.num_epochs:
            raise ValueError(
                f"swa_start_epoch={self.swa_start_epoch} is after this run's last epoch"
                f" ({trainer.run_config.num_epochs}): nothing would be averaged. Start averaging earlier or"
                " train for longer."
            )
        if self.swa_lr is not None and trainer.scheduler is not None:
            raise ValueError(
                "StochasticWeightAveragingCallback(swa_lr=...) sets the lr with SWALR, and the trainer's"
                " scheduler (create_scheduler_fn) would overwrite it at every update: pass one of them, or"
                " swa_lr=None to average under the trainer's schedule."
            )
        self.averaged_model = AveragedModel(trainer.get_model(keep_torch_compile=False))
        self._optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        self.swa_scheduler = None
        if self.swa_lr is not None:
            self.swa_scheduler = SWALR(
                self._optimizer,
                self.swa_lr,
                anneal_epochs=self.annealing_epochs,
                anneal_strategy=self.annealing_strategy,
            )

    def on_train_epoch_start(self, trainer, **kwargs):
        if self.swa_scheduler is not None and self._in_swa_phase(trainer):
            with warnings.catch_warnings():
                # a resumed epoch steps the new SWALR before the optimizer steps: intended, and its state
                # follows
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
                self.swa_scheduler.step()

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, **kwargs):
        if self._in_swa_phase(trainer):
            self.averaged_model.update_parameters(trainer.get_model(keep_torch_compile=False))

    @torch.no_grad()
    def on_training_run_end(self, trainer, **kwargs):
        if not self.swap_weights_at_end or int(self.averaged_model.n_averaged) == 0:
            return
        model = trainer.get_model(keep_torch_compile=False)
        for weight, average in zip(model.parameters(), self.averaged_model.module.parameters()):
            weight.copy_(average)
        batch_norms = [m for m in model.modules() if isinstance(m, _BATCH_NORMS)]
        if self.update_batch_norm and batch_norms:
            update_bn(trainer.train_dataloader, model, device=trainer.device)
            if trainer.num_processes > 1:
                for module in batch_norms:
                    for buffer in (module.running_mean, module.running_var):
                        buffer.copy_(trainer.reduce(buffer, "mean"))

    def _in_swa_phase(self, trainer) -> bool:
        return trainer.run_history.current_epoch >= self.swa_start_epoch

    def state_dict(self) -> dict[str, Any]:
        if self.averaged_model is None:
            return {}
        state = {
            "averaged_model": dict(self.averaged_model.state_dict()),
            # the lr of the epoch in progress: a resumed epoch's start steps SWALR before this state is loaded
            "lrs": [group["lr"] for group in self._optimizer.param_groups],
        }
        if self.swa_scheduler is not None:
            state["swa_scheduler"] = self.swa_scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.averaged_model.load_state_dict(state_dict["averaged_model"])
        if self.swa_scheduler is not None:
            self.swa_scheduler.load_state_dict(state_dict["swa_scheduler"])
        for group, lr in zip(self._optimizer.param_groups, state_dict["lrs"]):
            group["lr"] = lr
