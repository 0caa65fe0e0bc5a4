"""DeepSpeed ZeRO-2 on one CPU process (``DS_ACCELERATOR=cpu``), checked by ``tests/core/test_sharding.py``.

DeepSpeed needs a launcher even for one process::

    DS_ACCELERATOR=cpu python -m torch.distributed.run --nproc_per_node 1 tests/core/deepspeed_scenario.py \\
        deepspeed /tmp/out

Arguments, results and failure handling as in ``distributed_scenarios.py``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import deepspeed.ops
import torch
from accelerate.utils import DeepSpeedPlugin

from distributed_scenarios import main  # beside this script
from helpers import SGD_MOMENTUM, make_trainer
from pytorch_accelerated.trainer import Trainer
from sharding_scenarios import TinyTransformer, next_token_loss, token_dataset

# gloo does DeepSpeed's collectives here: its shared-memory ones would first be compiled (minutes; a build
# killed midway leaves a lock that hangs every later one). DeepSpeed keeps this probe's result in this dict.
deepspeed.ops.__compatible_ops__ = {"deepspeed_shm_comm": False}

# 36 samples in batches of 4: 9 batches, windows of 2, 2, 2, 2 and 1 (cut short: each scaled on its own)
TRAIN = {"samples": 36, "batch_size": 4, "accumulation": 2, "epochs": 2, "lr": 0.05}


def make_transformer_trainer(accelerator_kwargs: dict) -> Trainer:
    """A Trainer of TinyTransformer with SGD (momentum) and no callbacks, made with ``accelerator_kwargs``."""
    return make_trainer(
        lr=TRAIN["lr"],
        model=TinyTransformer(),
        loss_func=next_token_loss,
        optimizer_kwargs=SGD_MOMENTUM,
        accelerator_kwargs=accelerator_kwargs,
    )


def train(trainer: Trainer, clip_norm=None) -> dict:
    torch.manual_seed(0)  # the same shuffled order for every run
    trainer.train(
        token_dataset(TRAIN["samples"]),
        num_epochs=TRAIN["epochs"],
        per_device_batch_size=TRAIN["batch_size"],
        gradient_accumulation_steps=TRAIN["accumulation"],
        gradient_clip_norm=clip_norm,
        create_scheduler_fn=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=4, gamma=0.5),
    )
    weights = trainer.accelerator.get_state_dict(trainer.model)
    return {name: value.tolist() for name, value in weights.items()}


def _error_of(call) -> str:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the message is the result
        return f"{type(error).__name__}: {error}"
    return "no error"


def scenario_deepspeed(out: Path) -> dict:
    """ZeRO-2 against the same run without DeepSpeed (SGD with momentum: a loss divided twice would show),
    without and with clipping; the config fields filled; what is refused."""
    results = {"process_index": 0, "num_processes": 1}
    results["plain"] = train(make_transformer_trainer({}))
    results["plain_clipped"] = train(make_transformer_trainer({}), clip_norm=0.5)
    trainer = make_transformer_trainer({"deepspeed_plugin": DeepSpeedPlugin(zero_stage=2)})
    results["deepspeed"] = train(trainer)
    results["distributed_type"] = str(trainer.accelerator.distributed_type)
    config = trainer.accelerator.deepspeed_config
    keys = (
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "train_batch_size",
    )
    results["config"] = {key: config[key] for key in keys}
    results["final_lr"] = trainer.scheduler.get_last_lr()[0]
    results["save_training_state"] = _error_of(lambda: trainer.save_training_state(out / "state"))
    results["save_optimizer"] = _error_of(lambda: trainer.save_checkpoint(out / "with_optimizer.pt"))
    results["weights_only"] = _error_of(
        lambda: trainer.save_checkpoint(out / "weights.pt", save_optimizer=False)
    )
    results["other_clipping"] = _error_of(lambda: train(trainer, clip_norm=0.5))
    clipped = make_transformer_trainer({"deepspeed_plugin": DeepSpeedPlugin(zero_stage=2)})
    results["deepspeed_clipped"] = train(clipped, clip_norm=0.5)
    results["clipped_config"] = clipped.accelerator.deepspeed_config["gradient_clipping"]
    contradicting = make_transformer_trainer(
        {"deepspeed_plugin": DeepSpeedPlugin(zero_stage=2, gradient_accumulation_steps=4)}
    )
    results["contradiction"] = _error_of(lambda: train(contradicting))
    results["per_token_loss"] = _error_of(_train_with_loss_per_token)
    return results


def _train_with_loss_per_token() -> None:
    from tiny_lm import TinyCausalLM, TokenLossTrainer, TokenSequences, pad_batch  # beside this script

    model = TinyCausalLM()
    accelerator_kwargs = {"deepspeed_plugin": DeepSpeedPlugin(zero_stage=2)}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = TokenLossTrainer(model, None, optimizer, callbacks=(), accelerator_kwargs=accelerator_kwargs)
    trainer.train(TokenSequences(8), num_epochs=1, per_device_batch_size=2, collate_fn=pad_batch)


SCENARIOS = {"deepspeed": scenario_deepspeed}

if __name__ == "__main__":
    sys.exit(main(sys.argv, SCENARIOS))
