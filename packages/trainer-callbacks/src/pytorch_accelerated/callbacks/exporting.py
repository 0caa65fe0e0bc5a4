"""The model's weights exported as safetensors (``model.safetensors``), the format the HF ecosystem loads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .extras import require_extra

#: The file name transformers and the Hub expect (a large model: ``model-0000<i>-of-0000<n>.safetensors``
#: and ``model.safetensors.index.json``).
SAFETENSORS_FILENAME = "model.safetensors"


def save_model_safetensors(trainer, save_dir: str | os.PathLike, max_shard_size: str = "10GB") -> Path:
    """Write the model's weights (without wrappers) to ``save_dir/model.safetensors`` with
    accelerate's ``save_model``, replacing an earlier export only once the new one is complete.
    Call it on every process (sharded weights are gathered); the main process writes. Needs the
    ``safetensors`` extra. Read it back with ``safetensors.torch.load_model(model, path)``.

    Args:
        trainer: the trainer whose model to export.
        save_dir: the folder to write into (created if missing).
        max_shard_size: above this size the weights are split into several files, with an index.
    """
    require_extra("safetensors", "safetensors", "save_model_safetensors")
    save_dir = Path(save_dir)
    staging = save_dir / f".{SAFETENSORS_FILENAME}.partial"
    if trainer.is_world_process_zero:
        shutil.rmtree(staging, ignore_errors=True)  # left by a process killed while exporting
    trainer.wait_for_everyone()
    accelerator = trainer.accelerator
    accelerator.save_model(trainer.model, staging, max_shard_size=max_shard_size, safe_serialization=True)
    trainer.wait_for_everyone()  # every process has made the staging folder before the main one removes it
    if trainer.is_world_process_zero:
        for written in sorted(staging.iterdir()):
            os.replace(written, save_dir / written.name)  # each file whole: a crash keeps the earlier one
        staging.rmdir()
    trainer.wait_for_everyone()
    return save_dir / SAFETENSORS_FILENAME
