"""Training runs that record each update's global sample indices, for resumes on another number of
processes (``tests/core/test_process_count_change.py``). On one process it is imported; on several, run
on every process of a launch::

    python -m torch.distributed.run --nproc_per_node 3 tests/core/process_count_scenario.py OUT RUN...

where each RUN is ``name:kind:per_device_batch_size:accumulation:save_at:resume_from`` (``-`` for none):
``kind`` is ``map`` (a shuffled map-style dataset), ``stream`` (an iterable dataset with a state_dict) or
``fsdp`` (shuffled indexed token sequences, ``sharding_scenarios``' tiny transformer sharded by FSDP2);
``save_at`` saves a training state at that update into ``OUT/<name>_state`` and trains on; ``resume_from``
names a state folder. Rank 0 writes ``OUT/<name>.pt``: each update's sorted global sample indices, the final
(whole) weights, the epochs' training losses, the resume's warnings and whether the model was sharded.
"""

from __future__ import annotations

import os
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs, gather_object
from torch.utils.data import Dataset, IterableDataset

from pytorch_accelerated.trainer import Trainer, TrainerCallback, seed_everything
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

try:  # launched as a script, or imported by the test module
    from sharding_scenarios import TinyTransformer, fsdp2_plugin, next_token_loss, token_dataset
except ImportError:
    from .sharding_scenarios import TinyTransformer, fsdp2_plugin, next_token_loss, token_dataset

NUM_SAMPLES = 60  # 5 updates of 12 samples per epoch
NUM_EPOCHS = 3


class IndexedData(Dataset):
    """A map-style dataset whose samples carry their index: ``(inputs, target, index)``."""

    draws_random_numbers = False

    def __init__(self, num_samples: int = NUM_SAMPLES, tokens: bool = False):
        data = token_dataset(num_samples) if tokens else make_tiny_dataset(num_samples)
        self.inputs, self.targets = data.tensors

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int):
        return self.inputs[index], self.targets[index], torch.tensor(index)


class IndexedStream(IterableDataset):
    """The same samples as a stream in order, which resumes from its own ``state_dict`` (samples read)."""

    def __init__(self, num_samples: int = NUM_SAMPLES):
        self.data = IndexedData(num_samples)
        self.read = 0
        self._start = 0

    def __iter__(self):
        start, self._start = self._start, 0
        for index in range(start, len(self.data)):
            self.read = index + 1
            yield self.data[index]

    def state_dict(self) -> dict:
        return {"read": self.read}

    def load_state_dict(self, state: dict) -> None:
        self._start = state["read"]


class RecordIndices(TrainerCallback):
    """Each step's sample indices under the update they belong to; a training state saved at ``save_at``."""

    def __init__(self, save_at: int | None, save_dir: Path):
        self.steps: list[tuple[int, list[int]]] = []
        self.save_at, self.save_dir = save_at, save_dir

    def on_train_step_end(self, trainer, batch, batch_output, **kwargs):
        self.steps.append((trainer.completed_update_steps, batch[2].tolist()))

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps == self.save_at:
            trainer.save_training_state(self.save_dir)

    def per_update(self) -> dict[int, list[int]]:
        """Every process's indices, by update, sorted (call on every process)."""
        steps = gather_object(self.steps) if torch.distributed.is_initialized() else self.steps
        updates: dict[int, list[int]] = {}
        for update, indices in steps:
            updates.setdefault(update, []).extend(indices)
        return {update: sorted(indices) for update, indices in sorted(updates.items())}


def train(
    out: Path, name: str, kind: str, batch_size: int, accumulation: int, save_at=None, resume_from=None
) -> dict:
    """One run; returns what rank 0 writes (every process returns it)."""
    seed_everything(3)
    sharded = kind == "fsdp"
    model = TinyTransformer() if sharded else make_tiny_model()
    recorder = RecordIndices(save_at, out / f"{name}_state")
    launched = "WORLD_SIZE" in os.environ  # else one process, in the test's own
    handlers = [InitProcessGroupKwargs(backend="gloo", timeout=timedelta(seconds=60))]
    accelerator_kwargs = {"cpu": True, "kwargs_handlers": handlers} if launched else {}
    if sharded:
        accelerator_kwargs["fsdp_plugin"] = fsdp2_plugin()
    trainer = Trainer(
        model,
        next_token_loss if sharded else torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        callbacks=[recorder],
        accelerator_kwargs=accelerator_kwargs,
    )
    data = IndexedStream() if kind == "stream" else IndexedData(tokens=sharded)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train(
            data,
            num_epochs=NUM_EPOCHS,
            per_device_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_num_train_steps=100,
            resume_from=resume_from,
        )
    return {
        "updates": recorder.per_update(),
        "weights": whole_weights(trainer),
        "train_loss_epoch": trainer.run_history.get_metric_values("train_loss_epoch"),
        "warnings": [str(warning.message) for warning in caught if "resum" in str(warning.message).lower()],
        "num_processes": trainer.accelerator.num_processes,
        "sharded": trainer.accelerator.is_fsdp2,
    }


def whole_weights(trainer: Trainer) -> dict:
    """The model's whole weights on the main process (gathered from every process's shards under FSDP)."""
    weights = trainer.accelerator.get_state_dict(trainer.model)
    return {key: value.detach().clone() for key, value in weights.items()}


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for run in argv[2:]:
        name, kind, batch_size, accumulation, save_at, resume_from = run.split(":")
        result = train(
            out,
            name,
            kind,
            int(batch_size),
            int(accumulation),
            None if save_at == "-" else int(save_at),
            None if resume_from == "-" else resume_from,
        )
        if torch.distributed.get_rank() == 0:
            torch.save(result, out / f"{name}.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
