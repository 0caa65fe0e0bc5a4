"""Sharded-training scenarios on two CPU processes (gloo), checked by ``tests/core/test_sharding.py``.

Run on every process of a launch, e.g.::

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29512 \\
        tests/core/sharding_scenarios.py fsdp_and_ddp,fsdp_checks /tmp/out

Arguments, results and failure handling as in ``distributed_scenarios.py`` (whose runner this reuses):
each process writes ``<scenario>_rank<r>.json``; a scenario that raises or hangs ends the launch.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import torch
from accelerate.utils import FullyShardedDataParallelPlugin, InitProcessGroupKwargs
from torch import nn
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import Trainer, TrainerCallback

try:  # launched as a script, or imported by the test module
    from helpers import SGD_MOMENTUM, make_gloo_trainer
except ImportError:
    from .helpers import SGD_MOMENTUM, make_gloo_trainer

COLLECTIVE_TIMEOUT_S = (
    60  # a collective that one process never joins fails after this long instead of hanging
)

VOCAB, DIM, HEADS, SEQ = 16, 16, 2, 8
# 40 samples in batches of 4 on 2 processes: 5 batches per process and epoch, windows of 2, 2 and 1
TRAIN = {"samples": 40, "batch_size": 4, "accumulation": 2, "epochs": 2, "lr": 0.05, "clip": 0.5}
EVAL_SAMPLES = 18  # 5 batches of 4: 3 on one process, 2 on the other
TINY_EVAL_SAMPLES = 3  # one batch: the other process has none
PREDICT_SAMPLES = 9  # shares of 5 and 4 samples: 2 batches of 4 on one process, 1 on the other
CHECKPOINT = "fsdp_checkpoint.pt"


class Block(nn.Module):
    """A transformer block: the unit FSDP shards (``transformer_cls_names_to_wrap=["Block"]``)."""

    def __init__(self):
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.attn = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = nn.Embedding(VOCAB, DIM)
            self.blocks = nn.ModuleList([Block(), Block()])
            self.norm = nn.LayerNorm(DIM)
            self.head = nn.Linear(DIM, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def token_dataset(num_samples: int, seed: int = 1) -> TensorDataset:
    tokens = torch.randint(0, VOCAB, (num_samples, SEQ + 1), generator=torch.Generator().manual_seed(seed))
    return TensorDataset(tokens[:, :-1], tokens[:, 1:])


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))


def fsdp2_plugin(**kwargs) -> FullyShardedDataParallelPlugin:
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["Block"],
        **kwargs,
    )


def make_sharded_trainer(
    fsdp_plugin=None, mixed_precision="no", callbacks=(), **accelerator_kwargs
) -> Trainer:
    """A Trainer of TinyTransformer with SGD (momentum), on gloo; FSDP2 where a plugin is given."""
    if fsdp_plugin is not None:
        accelerator_kwargs["fsdp_plugin"] = fsdp_plugin
    return make_gloo_trainer(
        callbacks,
        lr=TRAIN["lr"],
        model=TinyTransformer(),
        timeout_s=COLLECTIVE_TIMEOUT_S,
        mixed_precision=mixed_precision,
        accelerator_kwargs=accelerator_kwargs,
        loss_func=next_token_loss,
        optimizer_kwargs=SGD_MOMENTUM,
    )


class StepLosses(TrainerCallback):
    """This process's loss of every training step, the gradients' norm after clipping at every update, and
    how many evaluation batches it saw."""

    def __init__(self):
        self.losses: list[float] = []
        self.clipped_norms: list[float] = []
        self.eval_batches = 0

    def on_train_step_end(self, trainer, batch_output, **kwargs):
        self.losses.append(batch_output["loss"].item())

    def on_before_optimizer_step(self, trainer, **kwargs):
        gradients = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        whole = [getattr(g, "full_tensor", lambda g=g: g)() for g in gradients]  # a shard's gathered (FSDP)
        self.clipped_norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in whole])).item())

    def on_eval_step_end(self, trainer, **kwargs):
        self.eval_batches += 1


def train_and_use(trainer: Trainer, out: Path, name: str) -> dict:
    """Train, evaluate (uneven shards, one process without a batch), predict (uneven and empty shares),
    save a checkpoint: what the FSDP2 and DDP runs are compared by."""
    steps = trainer.callback_handler.callbacks[0]
    torch.manual_seed(0)  # the same shuffled order for every run in a process
    trainer.train(
        token_dataset(TRAIN["samples"]),
        num_epochs=TRAIN["epochs"],
        eval_dataset=token_dataset(EVAL_SAMPLES, seed=2),
        per_device_batch_size=TRAIN["batch_size"],
        gradient_accumulation_steps=TRAIN["accumulation"],
        gradient_clip_norm=TRAIN["clip"],
    )
    tiny = trainer.evaluate(token_dataset(TINY_EVAL_SAMPLES, seed=3), per_device_batch_size=4)
    predictions = trainer.predict(token_dataset(PREDICT_SAMPLES, seed=4), per_device_batch_size=4)
    one_prediction = trainer.predict(token_dataset(1, seed=5), per_device_batch_size=4)
    trainer.save_checkpoint(out / f"{name}_{CHECKPOINT}")
    first_parameter = next(trainer.get_model().parameters())
    return {
        "distributed_type": str(trainer.accelerator.distributed_type),
        "model_class": type(trainer.get_model()).__name__,
        "parameter_class": type(first_parameter).__name__,
        "step_losses": steps.losses,
        "clipped_norms": steps.clipped_norms,
        "eval_batches": steps.eval_batches,
        "eval_loss_epoch": trainer.run_history.get_metric_values("eval_loss_epoch"),
        "tiny_eval_loss": tiny["eval_loss"],
        "predictions": predictions.tolist(),
        "prediction_dtype": str(predictions.dtype),
        "one_prediction": one_prediction.tolist(),
        "environment_fsdp": os.environ.get("ACCELERATE_USE_FSDP"),
    }


# ---------------------------------------------------------------------------------------- scenarios


def scenario_fsdp_and_ddp(out: Path) -> dict:
    """The same run under FSDP2 and, in the same process afterwards, under DDP: the DDP Trainer must not
    inherit the sharding (accelerate's process-wide state, its environment variable)."""
    fsdp = train_and_use(make_sharded_trainer(fsdp2_plugin(), callbacks=[StepLosses()]), out, "fsdp")
    ddp = train_and_use(make_sharded_trainer(callbacks=[StepLosses()]), out, "ddp")
    return {"process_index": int(os.environ["RANK"]), "num_processes": 2, "fsdp": fsdp, "ddp": ddp}


def scenario_fsdp_bf16(out: Path) -> dict:
    """bf16 under FSDP2 and DDP: outputs and losses in fp32 under both, weights close."""
    results = {}
    for name, plugin in (("fsdp", fsdp2_plugin()), ("ddp", None)):
        trainer = make_sharded_trainer(plugin, mixed_precision="bf16", callbacks=[StepLosses()])
        results[name] = train_and_use(trainer, out, f"bf16_{name}")
    return {"process_index": int(os.environ["RANK"]), "num_processes": 2, **results}


def scenario_fsdp_checkpoints(out: Path) -> dict:
    """Checkpoints of a sharded model: an FSDP2 checkpoint and a DDP one (``fsdp_and_ddp``'s) loaded into
    a fresh FSDP2 Trainer and saved again; ``accelerator.get_state_dict``: the whole weights on the main
    process."""
    results = {"process_index": int(os.environ["RANK"]), "num_processes": 2}
    for name in ("fsdp", "ddp"):
        trainer = make_sharded_trainer(fsdp2_plugin())
        trainer.model = TinyTransformer(seed=7)  # other weights than the checkpoint's
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=TRAIN["lr"], momentum=0.9)
        trainer.evaluate(token_dataset(8), per_device_batch_size=4)  # prepares (shards) the model
        returned = trainer.load_checkpoint(out / f"{name}_{CHECKPOINT}")
        trainer.save_checkpoint(out / f"{name}_reloaded_{CHECKPOINT}")
        results[f"{name}_returned_keys"] = sorted(returned)
    results["get_state_dict_entries"] = len(trainer.accelerator.get_state_dict(trainer.model))
    results["accelerate_state_restores"] = _accelerate_state_restores(trainer, out)
    return results


def _accelerate_state_restores(trainer: Trainer, out: Path) -> bool:
    """``trainer.accelerator.save_state`` / ``load_state`` (what the refusal of training states names) put the
    sharded weights back."""
    before = trainer.accelerator.get_state_dict(trainer.model)
    trainer.accelerator.save_state(out / "accelerate_state")
    trainer.load_checkpoint(out / f"fsdp_{CHECKPOINT}")  # other weights
    trainer.accelerator.load_state(out / "accelerate_state")
    after = trainer.accelerator.get_state_dict(trainer.model)
    return all(torch.equal(before[name], after[name]) for name in before) and len(before) == len(after)


def scenario_fsdp_per_item_loss(out: Path) -> dict:
    """The loss per token (``num_items_in_batch``: the gradients divided by the window's tokens after the
    backward) under FSDP2 and DDP: the whole weights after an epoch, on the main process."""
    from tiny_lm import TinyCausalLM, TokenLossTrainer, TokenSequences, pad_batch  # beside this script

    results = {"process_index": int(os.environ["RANK"]), "num_processes": 2}
    for name, plugin in (("fsdp", FullyShardedDataParallelPlugin(fsdp_version=2)), ("ddp", None)):
        model = TinyCausalLM()
        kwargs = {"cpu": True, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
        kwargs.update({"fsdp_plugin": plugin} if plugin is not None else {})
        trainer = TokenLossTrainer(
            model, None, torch.optim.SGD(model.parameters(), lr=0.1), callbacks=(), accelerator_kwargs=kwargs
        )
        torch.manual_seed(0)
        trainer.train(
            TokenSequences(20),
            num_epochs=1,
            per_device_batch_size=2,
            gradient_accumulation_steps=2,
            collate_fn=pad_batch,
        )
        results[name] = {
            key: value.tolist() for key, value in trainer.accelerator.get_state_dict(trainer.model).items()
        }
    return results


def scenario_fsdp_asked_and_refused(out: Path) -> dict:
    """FSDP2 asked for through accelerate's environment; what is refused or warned about, by its message."""
    results = {"process_index": int(os.environ["RANK"]), "num_processes": 2}
    results["accelerate_alone"] = _what_accelerate_does_alone()
    results["from_environment"] = _asked_by_environment()
    results["fsdp1"] = _error_of(lambda: make_sharded_trainer(FullyShardedDataParallelPlugin(fsdp_version=1)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_sharded_trainer(fsdp2_plugin(cpu_offload=True))
        trainer.train(token_dataset(16), num_epochs=1, per_device_batch_size=4)
    results["cpu_offload_warnings"] = [str(w.message) for w in caught if "cpu_offload" in str(w.message)]
    results["cpu_offload_trained"] = trainer.completed_update_steps
    results["save_training_state"] = _error_of(lambda: trainer.save_training_state(out / "state"))
    results["state_folder_written"] = (out / "state").exists()
    train = functools.partial(trainer.train, token_dataset(16), num_epochs=1, per_device_batch_size=4)
    results["clip_value"] = _error_of(lambda: train(gradient_clip_value=0.1))
    results["resume_from"] = _error_of(lambda: train(resume_from=out / "state"))
    make_sharded_trainer()  # a DDP Trainer created since: the FSDP one must not train as DDP
    results["replaced"] = _error_of(lambda: train())
    return results


def _what_accelerate_does_alone() -> str:
    """accelerate's own choice for an FSDP2 plugin on CPU processes (MULTI_CPU: dropped); the environment
    is put back."""
    from accelerate import Accelerator
    from pytorch_accelerated.trainer._accelerate_state import make_way_for

    make_way_for({"fsdp_plugin": fsdp2_plugin()})
    try:
        return str(Accelerator(cpu=True, fsdp_plugin=fsdp2_plugin()).distributed_type)
    finally:
        os.environ.pop("ACCELERATE_USE_FSDP", None)


def _asked_by_environment() -> dict:
    """``accelerate launch --use_fsdp --fsdp_version 2 ...`` sets these; the Trainer shards as asked."""
    asked = {
        "ACCELERATE_USE_FSDP": "true",
        "FSDP_VERSION": "2",
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
        "FSDP_TRANSFORMER_CLS_TO_WRAP": "Block",
    }
    os.environ.update(asked)
    try:
        trainer = make_sharded_trainer()
        trainer.evaluate(token_dataset(8), per_device_batch_size=4)
        sharded = sorted(
            type(module).__name__
            for module in trainer.model.modules()
            if type(module).__name__.startswith("FSDP")
        )
        return {"distributed_type": str(trainer.accelerator.distributed_type), "sharded_modules": sharded}
    finally:
        for name in asked:
            os.environ.pop(name)


def _error_of(call) -> str:
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the message is the result
        return f"{type(error).__name__}: {error}"
    return "no error"


SCENARIOS = {
    name[len("scenario_") :]: function for name, function in globals().items() if name.startswith("scenario_")
}

if __name__ == "__main__":
    from distributed_scenarios import main  # beside this script

    sys.exit(main(sys.argv, SCENARIOS))
