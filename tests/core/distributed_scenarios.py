"""Multi-process training scenarios, checked by ``tests/core/test_distributed.py``.

Run on every process of a launch, e.g.::

    python -m torch.distributed.run --nproc_per_node 2 --master_port 29511 \\
        tests/core/distributed_scenarios.py uneven_eval,max_steps /tmp/out

The first argument is a comma-separated list of scenarios, run in that order in one launch; the
second is the folder where each process writes ``<scenario>_rank<r>.json``. Every Trainer runs on
the CPU (gloo). A scenario that raises, or runs past its time limit (a hang), writes
``{"error": ...}`` as its result and ends the process with a non-zero exit status, so that the
launcher stops the others instead of leaving them waiting in a collective; scenarios listed
after it do not run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import threading
import traceback
from pathlib import Path

import torch
from accelerate.utils import InitProcessGroupKwargs
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import (
    DEFAULT_CALLBACKS,
    StopTrainingError,
    Trainer,
    TrainerCallback,
    TrainerPlaceholderValues,
)
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

try:  # launched as a script, or imported by the test module
    from helpers import make_gloo_trainer
except ImportError:
    from .helpers import make_gloo_trainer

# A collective that one process never joins fails after this long instead of hanging.
COLLECTIVE_TIMEOUT_S = 60

# Sizes the test module recomputes its expectations from.
UNEVEN_EVAL = {
    "train_samples": 64,
    "eval_samples": 37,
    "batch_size": 4,
    "evaluate_batch_size": 6,
    "tiny_eval_samples": 3,
}
PLACEHOLDERS = {"train_samples": 50, "batch_size": 4, "accumulation": 3, "num_epochs": 3, "max_lr": 0.5}
MAX_STEPS = {"train_samples": 40, "batch_size": 4, "accumulation": 2, "num_epochs": 10, "max_steps": 5}
PREDICT = {"num_samples": 23, "num_features": 4, "batch_size": 5}
STOP = {"num_epochs": 6, "stop_epoch": 2, "stop_step": 3}
ACCUMULATION = {"train_samples": 32, "num_epochs": 2, "lr": 0.1}
MODEL_FILE = "uneven_eval_model.pt"


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0"))


def flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


def parameters_digest(model: torch.nn.Module) -> str:
    return hashlib.sha256(flat_parameters(model).double().numpy().tobytes()).hexdigest()


def common_facts(trainer: Trainer) -> dict:
    return {
        "process_index": trainer.accelerator.process_index,
        "num_processes": trainer.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
    }


class EventCounter(TrainerCallback):
    """Counts the events named in ``names``."""

    def __init__(self, *names: str):
        self.counts = {name: 0 for name in names}
        for name in names:
            setattr(self, name, functools.partial(self._count, name))

    def _count(self, name, trainer, *args, **kwargs):
        self.counts[name] += 1


class EvalSampleCounter(TrainerCallback):
    """The number of samples this process evaluated, per evaluation epoch."""

    def __init__(self):
        self.samples_per_epoch: list[int] = []
        self.batches_per_epoch: list[int] = []

    def on_eval_epoch_start(self, trainer, **kwargs):
        self.samples_per_epoch.append(0)
        self.batches_per_epoch.append(0)

    def on_eval_step_end(self, trainer, batch, batch_output, **kwargs):
        self.samples_per_epoch[-1] += int(batch_output["batch_size"])
        self.batches_per_epoch[-1] += 1


# ---------------------------------------------------------------------------------------- scenarios


def scenario_uneven_eval(out: Path) -> dict:
    sizes = UNEVEN_EVAL
    counter = EvalSampleCounter()
    trainer = make_gloo_trainer(callbacks=[counter])
    eval_dataset = make_tiny_dataset(sizes["eval_samples"], seed=1)
    trainer.train(
        train_dataset=make_tiny_dataset(sizes["train_samples"]),
        eval_dataset=eval_dataset,
        num_epochs=2,
        per_device_batch_size=sizes["batch_size"],
    )
    eval_loss_epoch = trainer.run_history.get_metric_values("eval_loss_epoch")
    evaluate_default = trainer.evaluate()
    evaluate_other_batch = trainer.evaluate(eval_dataset, per_device_batch_size=sizes["evaluate_batch_size"])
    # Fewer samples than one batch: one process has no batch at all.
    evaluate_tiny = trainer.evaluate(
        make_tiny_dataset(sizes["tiny_eval_samples"], seed=1), per_device_batch_size=sizes["batch_size"]
    )
    if trainer.is_world_process_zero:
        torch.save(trainer.get_model(keep_torch_compile=False).state_dict(), out / MODEL_FILE)
    trainer.wait_for_everyone()
    return {
        **common_facts(trainer),
        "eval_samples_per_epoch": counter.samples_per_epoch,
        "eval_batches_per_epoch": counter.batches_per_epoch,
        "eval_loss_epoch": eval_loss_epoch,
        "eval_loss_default": evaluate_default.get("eval_loss"),
        "eval_loss_other_batch": evaluate_other_batch.get("eval_loss"),
        "eval_loss_tiny": evaluate_tiny.get("eval_loss"),
    }


def scenario_placeholders(out: Path) -> dict:
    sizes = PLACEHOLDERS
    results = {}
    variants = {
        "total_steps": functools.partial(
            torch.optim.lr_scheduler.OneCycleLR,
            max_lr=sizes["max_lr"],
            total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
        ),
        "epochs_and_steps_per_epoch": functools.partial(
            torch.optim.lr_scheduler.OneCycleLR,
            max_lr=sizes["max_lr"],
            epochs=TrainerPlaceholderValues.NUM_EPOCHS,
            steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
        ),
    }
    for variant, create_scheduler_fn in variants.items():
        counter = EventCounter("on_optimizer_step_end")
        trainer = make_gloo_trainer(callbacks=[counter])
        trainer.train(
            train_dataset=make_tiny_dataset(sizes["train_samples"]),
            num_epochs=sizes["num_epochs"],
            per_device_batch_size=sizes["batch_size"],
            gradient_accumulation_steps=sizes["accumulation"],
            create_scheduler_fn=create_scheduler_fn,
        )
        results[variant] = {
            **common_facts(trainer),
            "run_config": trainer.run_config.to_dict(),
            "scheduler_total_steps": trainer.scheduler.total_steps,
            "scheduler_last_epoch": trainer.scheduler.last_epoch,
            "optimizer_steps": counter.counts["on_optimizer_step_end"],
            "completed_update_steps": trainer.completed_update_steps,
            "final_lr": trainer.optimizer.param_groups[0]["lr"],
        }
    return {**common_facts(trainer), **results}


def scenario_max_steps(out: Path) -> dict:
    sizes = MAX_STEPS
    counter = EventCounter("on_optimizer_step_end", "on_train_epoch_start", "on_train_step_end")
    trainer = make_gloo_trainer(callbacks=[counter])
    trainer.train(
        train_dataset=make_tiny_dataset(sizes["train_samples"]),
        num_epochs=sizes["num_epochs"],
        per_device_batch_size=sizes["batch_size"],
        gradient_accumulation_steps=sizes["accumulation"],
        max_num_train_steps=sizes["max_steps"],
        create_scheduler_fn=functools.partial(
            torch.optim.lr_scheduler.OneCycleLR,
            max_lr=0.5,
            total_steps=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
        ),
    )
    return {
        **common_facts(trainer),
        "completed_update_steps": trainer.completed_update_steps,
        "optimizer_step_events": counter.counts["on_optimizer_step_end"],
        "train_epochs_started": counter.counts["on_train_epoch_start"],
        "train_steps": counter.counts["on_train_step_end"],
        "scheduler_last_epoch": trainer.scheduler.last_epoch,
        "run_config": trainer.run_config.to_dict(),
        "parameters_digest": parameters_digest(trainer.get_model()),
    }


def _identity_model(num_features: int) -> torch.nn.Module:
    model = torch.nn.Linear(num_features, num_features, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(num_features))
    return model


def _indexed_dataset(num_samples: int, num_features: int) -> TensorDataset:
    # Row i holds i * num_features ... i * num_features + num_features - 1: it names its sample.
    values = torch.arange(num_samples * num_features, dtype=torch.float32)
    return TensorDataset(values.reshape(num_samples, num_features))


def scenario_predict_order(out: Path) -> dict:
    sizes = PREDICT
    trainer = make_gloo_trainer(model=_identity_model(sizes["num_features"]))
    predictions = trainer.predict(
        _indexed_dataset(sizes["num_samples"], sizes["num_features"]),
        per_device_batch_size=sizes["batch_size"],
    )
    # A dataset with fewer samples than processes: one process has nothing to predict.
    single = trainer.predict(
        _indexed_dataset(1, sizes["num_features"]), per_device_batch_size=sizes["batch_size"]
    )
    return {
        **common_facts(trainer),
        "predictions": predictions.tolist(),
        "single_sample_predictions": single.tolist() if isinstance(single, torch.Tensor) else repr(single),
    }


class StopOnOneProcessAtEpochEnd(TrainerCallback):
    """At the end of epoch ``stop_epoch``, process 0 alone wants to stop; every process asks
    ``trainer.any_process`` at the end of every epoch and stops when it says so."""

    def __init__(self, stop_epoch: int):
        self.stop_epoch = stop_epoch
        self.stopped_at_epoch = None

    def on_train_epoch_end(self, trainer, **kwargs):
        wants_to_stop = (
            trainer.accelerator.process_index == 0 and trainer.run_history.current_epoch >= self.stop_epoch
        )
        if trainer.any_process(wants_to_stop):
            self.stopped_at_epoch = trainer.run_history.current_epoch
            raise StopTrainingError(f"process 0 asked to stop at epoch {self.stopped_at_epoch}")


class StopOnOneProcessAtStep(TrainerCallback):
    """The same, mid-epoch: the last process alone wants to stop after its ``stop_step``-th step."""

    def __init__(self, stop_step: int):
        self.stop_step = stop_step
        self.steps = 0
        self.stopped_at_step = None

    def on_train_step_end(self, trainer, **kwargs):
        self.steps += 1
        wants_to_stop = (
            trainer.accelerator.process_index == trainer.num_processes - 1 and self.steps >= self.stop_step
        )
        if trainer.any_process(wants_to_stop):
            self.stopped_at_step = self.steps
            raise StopTrainingError(f"the last process asked to stop at step {self.steps}")


def scenario_stop_one_rank(out: Path) -> dict:
    results = {}
    for variant, stopper in {
        "epoch_end": StopOnOneProcessAtEpochEnd(STOP["stop_epoch"]),
        "mid_epoch": StopOnOneProcessAtStep(STOP["stop_step"]),
    }.items():
        counter = EventCounter(
            "on_train_epoch_start", "on_stop_training_error", "on_training_run_end", "on_optimizer_step_end"
        )
        trainer = make_gloo_trainer(callbacks=[counter, stopper])
        trainer.train(
            train_dataset=make_tiny_dataset(64),
            eval_dataset=make_tiny_dataset(16, seed=1),
            num_epochs=STOP["num_epochs"],
            per_device_batch_size=4,
        )
        # Both processes must still be able to talk to each other after the stop.
        trainer.wait_for_everyone()
        results[variant] = {
            **common_facts(trainer),
            "stopped_at_epoch": getattr(stopper, "stopped_at_epoch", None),
            "stopped_at_step": getattr(stopper, "stopped_at_step", None),
            "current_epoch": trainer.run_history.current_epoch,
            "counts": counter.counts,
            "completed_update_steps": trainer.completed_update_steps,
            "parameters_digest": parameters_digest(trainer.get_model()),
        }
    return {**common_facts(trainer), **results}


def scenario_ddp_weights_equal(out: Path) -> dict:
    # Per-process seeds differ on purpose: only DDP keeps the processes' weights equal.
    model = make_tiny_model(seed=100 + rank_from_env())
    initial_digest = parameters_digest(model)
    trainer = make_gloo_trainer(model=model, lr=0.2)
    trainer.train(
        train_dataset=make_tiny_dataset(45),
        eval_dataset=make_tiny_dataset(13, seed=1),
        num_epochs=3,
        per_device_batch_size=4,
        gradient_accumulation_steps=2,
        gradient_clip_norm=0.5,
    )
    parameters = flat_parameters(trainer.get_model())
    return {
        **common_facts(trainer),
        "initial_digest": initial_digest,
        "parameters_digest": parameters_digest(trainer.get_model()),
        "parameters_sum": float(parameters.double().sum()),
    }


def scenario_accumulation_equivalence(out: Path) -> dict:
    sizes = ACCUMULATION
    finals = {}
    for variant, (batch_size, accumulation) in {"bs4_accum2": (4, 2), "bs8_accum1": (8, 1)}.items():
        trainer = make_gloo_trainer(model=make_tiny_model(seed=0), lr=sizes["lr"])
        trainer.train(
            train_dataset=make_tiny_dataset(sizes["train_samples"]),
            num_epochs=sizes["num_epochs"],
            per_device_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            train_dataloader_kwargs={"shuffle": False},
        )
        finals[variant] = {
            "parameters": flat_parameters(trainer.get_model()).double().tolist(),
            "completed_update_steps": trainer.completed_update_steps,
        }
    return {**common_facts(trainer), **finals}


def scenario_smoke(out: Path) -> dict:
    """A short run with the default callbacks (progress bars, NaN check, printing), for
    launchers other than torchrun."""
    trainer = make_gloo_trainer(callbacks=DEFAULT_CALLBACKS, force_cpu=False)
    trainer.train(
        train_dataset=make_tiny_dataset(32),
        eval_dataset=make_tiny_dataset(11, seed=1),
        num_epochs=1,
        per_device_batch_size=4,
    )
    counter = EvalSampleCounter()
    trainer.callback_handler.add_callback(counter)
    metrics = trainer.evaluate()
    return {
        **common_facts(trainer),
        "world_size_env": os.environ.get("WORLD_SIZE"),
        "completed_update_steps": trainer.completed_update_steps,
        "eval_samples": counter.samples_per_epoch,
        "eval_loss": metrics.get("eval_loss"),
        "parameters_digest": parameters_digest(trainer.get_model()),
    }


def scenario_per_item_loss(out: Path) -> dict:
    """A tiny causal LM's first update with the loss per token, two processes x batch 2 x 2 accumulated:
    its gradients must be those of the first 8 sequences' per-token mean loss computed at once."""
    from tiny_lm import TinyCausalLM, TokenLossTrainer, TokenSequences, pad_batch  # beside this script

    gradients = []

    class FirstUpdate(TrainerCallback):
        def on_before_optimizer_step(self, trainer, optimizer, **kwargs):
            if not gradients:
                gradients.extend(parameter.grad.tolist() for parameter in trainer.get_model().parameters())

    model = TinyCausalLM()
    trainer = TokenLossTrainer(
        model,
        None,
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[FirstUpdate()],
        accelerator_kwargs={"cpu": True, "kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]},
    )
    trainer.train(
        TokenSequences(16),
        num_epochs=1,
        per_device_batch_size=2,
        gradient_accumulation_steps=2,
        collate_fn=pad_batch,
        train_dataloader_kwargs={"shuffle": False},
    )
    return {**common_facts(trainer), "gradients": gradients}


def make_batch_norm_model(seed: int = 0) -> torch.nn.Module:
    """make_tiny_model with a BatchNorm layer: a model with buffers, which DDP keeps in sync."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
        )


def _trained_batch_norm_trainer(out: Path, scenario: str) -> Trainer:
    trainer = make_gloo_trainer(model=make_batch_norm_model())
    trainer.train(train_dataset=make_tiny_dataset(64), num_epochs=1, per_device_batch_size=4)
    if trainer.is_world_process_zero:
        torch.save(trainer.get_model(keep_torch_compile=False).state_dict(), out / f"{scenario}_model.pt")
    trainer.wait_for_everyone()
    return trainer


def scenario_buffers_evaluate_empty_share(out: Path) -> dict:
    """evaluate() a model with buffers on a dataset smaller than one batch: one process has no batch."""
    trainer = _trained_batch_norm_trainer(out, "buffers_evaluate_empty_share")
    counter = EvalSampleCounter()
    trainer.callback_handler.add_callback(counter)
    metrics = trainer.evaluate(
        make_tiny_dataset(UNEVEN_EVAL["tiny_eval_samples"], seed=1), per_device_batch_size=4
    )
    return {
        **common_facts(trainer),
        "eval_samples": counter.samples_per_epoch,
        "eval_loss": metrics.get("eval_loss"),
    }


def scenario_buffers_predict_empty_share(out: Path) -> dict:
    """predict() with a model with buffers on fewer samples than processes: one process has none."""
    trainer = _trained_batch_norm_trainer(out, "buffers_predict_empty_share")
    predictions = trainer.predict(make_tiny_dataset(1, seed=1), per_device_batch_size=4)
    return {**common_facts(trainer), "predictions": predictions.tolist()}


def scenario_unfreeze_between_runs(out: Path) -> dict:
    """Train with the first layer frozen, unfreeze it, add it to the optimizer and train again on
    the same Trainer: DDP must be re-wrapped, or the unfrozen weights drift apart across processes."""
    model = make_tiny_model(seed=0)
    first_layer = model[0]
    for parameter in first_layer.parameters():
        parameter.requires_grad = False
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.2),
        callbacks=(),
    )
    # different data per process, so that only gradient averaging keeps the weights equal
    trainer.train(make_tiny_dataset(32, seed=rank_from_env()), num_epochs=1, per_device_batch_size=4)
    frozen_digest = parameters_digest(first_layer)
    for parameter in first_layer.parameters():
        parameter.requires_grad = True
    trainer.optimizer.add_param_group({"params": list(first_layer.parameters()), "lr": 0.5})
    trainer.train(make_tiny_dataset(32, seed=10 + rank_from_env()), num_epochs=2, per_device_batch_size=4)
    return {
        **common_facts(trainer),
        "frozen_digest": frozen_digest,
        "first_layer_digest": parameters_digest(trainer.get_model()[0]),
        "parameters_digest": parameters_digest(trainer.get_model()),
    }


SCENARIOS = {
    "uneven_eval": scenario_uneven_eval,
    "placeholders": scenario_placeholders,
    "max_steps": scenario_max_steps,
    "predict_order": scenario_predict_order,
    "stop_one_rank": scenario_stop_one_rank,
    "ddp_weights_equal": scenario_ddp_weights_equal,
    "accumulation_equivalence": scenario_accumulation_equivalence,
    "smoke": scenario_smoke,
    "buffers_evaluate_empty_share": scenario_buffers_evaluate_empty_share,
    "buffers_predict_empty_share": scenario_buffers_predict_empty_share,
    "unfreeze_between_runs": scenario_unfreeze_between_runs,
    "per_item_loss": scenario_per_item_loss,
}

# How long a scenario may take before it counts as hung (tiny runs take a second or two): generous,
# so that a loaded machine never fails a scenario that has not hung.
DEFAULT_TIME_LIMIT_S = 120


def start_watchdog(out: Path, scenario: str, rank: int, limit_s: float) -> threading.Timer:
    """After ``limit_s``, report the scenario as hung, with where every thread is, and end the process."""

    def report_hang():
        stacks = "\n".join(
            f"--- thread {thread_id}:\n{''.join(traceback.format_stack(frame))}"
            for thread_id, frame in sys._current_frames().items()
            if thread_id != threading.get_ident()
        )
        error = (
            f"scenario {scenario!r} did not finish within {limit_s} s on process {rank} (a hang?)\n{stacks}"
        )
        write_result(out, scenario, rank, {"error": error})
        print(f"[rank {rank}] {error}", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(limit_s, report_hang)
    timer.daemon = True
    timer.start()
    return timer


def write_result(out: Path, scenario: str, rank: int, result: dict) -> None:
    path = out / f"{scenario}_rank{rank}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True))
    os.replace(tmp, path)


def main(argv: list[str], scenarios: dict | None = None) -> int:
    """Run the scenarios named in ``argv`` (of ``scenarios``, this module's by default), each watched."""
    scenarios = SCENARIOS if scenarios is None else scenarios
    if len(argv) != 3:
        known = ", ".join(scenarios)
        print(f"usage: {argv[0]} SCENARIO[,SCENARIO...] OUTPUT_DIR (scenarios: {known})", file=sys.stderr)
        return 2
    names = [name for name in argv[1].split(",") if name]
    unknown = [name for name in names if name not in scenarios]
    if unknown:
        print(f"unknown scenario(s) {unknown}; known: {list(scenarios)}", file=sys.stderr)
        return 2
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rank = rank_from_env()
    for name in names:
        torch.manual_seed(0)
        watchdog = start_watchdog(out, name, rank, DEFAULT_TIME_LIMIT_S)
        try:
            result = scenarios[name](out)
        except BaseException:  # noqa: BLE001 - reported to the test, then the launch is ended
            error = traceback.format_exc()
            write_result(out, name, rank, {"error": error})
            print(f"[rank {rank}] scenario {name} failed:\n{error}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            # Do not wait in a collective for processes that may have gone on: end now.
            os._exit(1)
        watchdog.cancel()
        write_result(out, name, rank, result)
        print(f"[rank {rank}] scenario {name} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
