"""The largest per-device batch size that trains without running out of CUDA memory."""

from __future__ import annotations

import gc
from typing import Callable

import torch
from torch.utils.data import Subset

from pytorch_accelerated.trainer import Trainer

from ._copies import optimizer_over, random_state_kept, torch_optimizer


def find_batch_size(
    trainer: Trainer,
    train_dataset,
    start_batch_size: int = 1,
    max_batch_size: int | None = None,
    collate_fn: Callable | None = None,
    trainer_class: type[Trainer] | None = None,
    allow_cpu: bool = False,
) -> int:
    """The largest per-device batch size, up to ``max_batch_size`` (default: the dataset's length),
    for which one optimizer update (forward, loss, backward, optimizer step) on ``train_dataset``
    runs without ``torch.OutOfMemoryError``.

    Tries ``start_batch_size`` and doubles it until a size runs out of memory (or the maximum is
    reached), then halves the gap between the largest size that fitted and the smallest that did
    not until they are adjacent. Each trial trains the trainer's own model (so the memory is the
    real one) with a copy of its optimizer, through a new trainer of ``trainer_class``
    (``type(trainer)`` by default) on the first samples of the dataset; afterwards the weights, the
    optimizer's state, the gradients and the random generators are put back exactly as they were,
    and CUDA's cache is emptied.

    CUDA only: elsewhere there is no out-of-memory error to search for (a CPU process is killed, or
    swaps), so it raises ``RuntimeError`` unless ``allow_cpu=True`` (for models that raise
    ``torch.OutOfMemoryError`` themselves, as in tests). Run it on one process, before training:
    the result is per device, the same on every device of the kind.
    """
    if trainer.device.type != "cuda" and not allow_cpu:
        raise RuntimeError(
            "find_batch_size searches for the largest batch that fits in CUDA memory; it is not supported on"
            f" {trainer.device.type.upper()} (a {trainer.device.type} process that runs out of memory is"
            " killed or swaps, it raises nothing to search for). Run it on a GPU."
        )
    if trainer.num_processes > 1:
        raise RuntimeError(
            "find_batch_size runs on one process: launch it without torchrun/accelerate, then use its result "
            "as per_device_batch_size on every device."
        )
    max_batch_size = min(max_batch_size or len(train_dataset), len(train_dataset))
    if not 1 <= start_batch_size <= max_batch_size:
        raise ValueError(
            f"Need 1 <= start_batch_size <= {max_batch_size} (max_batch_size / the dataset's length), got"
            f" {start_batch_size}."
        )
    trial = _Trial(trainer, train_dataset, collate_fn, trainer_class or type(trainer))
    fitting, too_large = 0, None
    size = start_batch_size
    while True:
        if not trial.fits(size):
            too_large = size
            break
        fitting = size
        if size == max_batch_size:
            break
        size = min(2 * size, max_batch_size)
    if fitting == 0:
        raise RuntimeError(
            f"Even a batch of {start_batch_size} runs out of memory: use a smaller start_batch_size or model."
        )
    while too_large is not None and too_large - fitting > 1:
        middle = (fitting + too_large) // 2
        if trial.fits(middle):
            fitting = middle
        else:
            too_large = middle
    trainer.print(f"find_batch_size: the largest batch that fits is {fitting} (tried {trial.tried})")
    return fitting


class _Trial:
    """One optimizer update at a given batch size, the trainer's state put back afterwards."""

    def __init__(self, trainer: Trainer, dataset, collate_fn, trainer_class: type[Trainer]):
        self.trainer = trainer
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.trainer_class = trainer_class
        self.model = trainer.get_model(keep_torch_compile=False)
        self.tried: dict[int, bool] = {}

    def fits(self, batch_size: int) -> bool:
        model = self.model
        # on the CPU: a copy on the accelerator would take the memory the trial is measuring
        weights = {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
        device = next(model.parameters()).device
        gradients = [p.grad for p in model.parameters()]
        try:
            with random_state_kept():
                self._one_update(batch_size)
            fits = True
        except torch.OutOfMemoryError:
            fits = False
        finally:
            model.to(device)
            model.load_state_dict(weights)
            for parameter, gradient in zip(model.parameters(), gradients):
                parameter.grad = gradient
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.tried[batch_size] = fits
        return fits

    def _one_update(self, batch_size: int) -> None:
        trainer = self.trainer
        optimizer = optimizer_over(torch_optimizer(trainer), self.model, self.model)
        trial_trainer = self.trainer_class(
            trainer.get_model(),
            trainer.loss_func,
            optimizer,
            callbacks=[],
            accelerator_kwargs=trainer.accelerator_kwargs,
        )
        trial_trainer.train(
            Subset(self.dataset, range(batch_size)),
            num_epochs=1,
            max_num_train_steps=1,
            per_device_batch_size=batch_size,
            collate_fn=self.collate_fn,
            train_dataloader_kwargs={"shuffle": False},
        )
