"""Sharded training (issue 26): FSDP2 through the Trainer on two CPU processes, against DDP on the same data
(``sharding_scenarios.py``, one launch); DeepSpeed ZeRO-2 on one CPU process against plain torch
(``deepspeed_scenario.py``, one launch, skipped without deepspeed); and what is refused or warned about."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

from pytorch_accelerated.trainer import _accelerate_state, _sharding

from ..launching import REPO_ROOT, run_launch, tail, torchrun_command
from . import sharding_scenarios as scenarios
from .helpers import make_trainer

FSDP_SCENARIOS = (
    "fsdp_and_ddp",
    "fsdp_bf16",
    "fsdp_checkpoints",
    "fsdp_per_item_loss",
    "fsdp_asked_and_refused",
)
TOLERANCE = 1e-6  # fp32, SGD: the reduction order differs (FSDP reduce-scatters, DDP all-reduces)


class Launch:
    """One launch of a scenario script; each scenario's results per process."""

    def __init__(
        self, script: str, names, num_processes: int, tmp_dir: Path, env: dict[str, str] | None = None
    ):
        self.out, self.num_processes = tmp_dir / "out", num_processes
        command = torchrun_command(
            Path(__file__).with_name(script).relative_to(REPO_ROOT),
            ",".join(names),
            self.out,
            num_processes=num_processes,
        )
        saved = {name: os.environ.get(name) for name in env or {}}
        os.environ.update(env or {})  # launch_env copies os.environ
        try:
            self.status, self.output = run_launch(command, tmp_dir)
        finally:
            for name, value in saved.items():
                os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)

    def results(self, name: str) -> list[dict]:
        paths = [self.out / f"{name}_rank{rank}.json" for rank in range(self.num_processes)]
        found = [json.loads(path.read_text()) for path in paths if path.exists()]
        errors = [result["error"] for result in found if "error" in result]
        if errors or len(found) < self.num_processes:
            pytest.fail(f"scenario {name!r}: {errors or 'no result'}\n{tail(self.output)}", pytrace=False)
        return found


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory) -> Launch:
    return Launch("sharding_scenarios.py", FSDP_SCENARIOS, 2, tmp_path_factory.mktemp("fsdp"))


def max_difference(a, b) -> float:
    return (
        (torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max().item()
    )


def checkpoint(launch: Launch, name: str) -> dict:
    return torch.load(launch.out / f"{name}_{scenarios.CHECKPOINT}", weights_only=True)


# ---------------------------------------------------------------------------- FSDP2 on two processes


def test_fsdp2_plugin_shards_the_model_on_cpu_processes(fsdp):
    for result in fsdp.results("fsdp_and_ddp"):
        run = result["fsdp"]
        assert (run["distributed_type"], run["model_class"], run["parameter_class"]) == (
            "DistributedType.FSDP",
            "FSDPTinyTransformer",
            "DTensor",
        ), run
    # what the Trainer makes up for: accelerate 1.16 alone keeps plain multi-CPU DDP
    assert fsdp.results("fsdp_asked_and_refused")[0]["accelerate_alone"] == "DistributedType.MULTI_CPU"


def test_fsdp2_losses_and_weights_match_ddp_with_accumulation_and_clip(fsdp):
    for result in fsdp.results("fsdp_and_ddp"):
        fsdp_run, ddp_run = result["fsdp"], result["ddp"]
        assert len(fsdp_run["step_losses"]) == 10, "2 epochs of 5 batches per process"
        assert max_difference(fsdp_run["step_losses"], ddp_run["step_losses"]) < TOLERANCE
        clip = scenarios.TRAIN["clip"]
        assert any(abs(norm - clip) < 1e-4 for norm in ddp_run["clipped_norms"]), (
            f"clipping never acted: {ddp_run}"
        )
        assert max_difference(fsdp_run["clipped_norms"], ddp_run["clipped_norms"]) < TOLERANCE
    sharded, replicated = checkpoint(fsdp, "fsdp"), checkpoint(fsdp, "ddp")
    for name, weights in replicated["model_state_dict"].items():
        assert max_difference(sharded["model_state_dict"][name], weights) < TOLERANCE, name
    momentum = {i: s["momentum_buffer"] for i, s in replicated["optimizer_state_dict"]["state"].items()}
    for index, buffer in momentum.items():
        assert (
            max_difference(sharded["optimizer_state_dict"]["state"][index]["momentum_buffer"], buffer)
            < TOLERANCE
        )


def test_fsdp2_evaluation_counts_each_sample_once_with_uneven_shards(fsdp):
    results = fsdp.results("fsdp_and_ddp")
    # per process: 2 epochs of 3 or 2 batches of 18 samples, then 1 or 0 of the tiny set
    assert [result["fsdp"]["eval_batches"] for result in results] == [7, 4]
    for result in results:
        fsdp_run, ddp_run = result["fsdp"], result["ddp"]
        assert max_difference(fsdp_run["eval_loss_epoch"], ddp_run["eval_loss_epoch"]) < TOLERANCE
        assert abs(fsdp_run["tiny_eval_loss"] - ddp_run["tiny_eval_loss"]) < TOLERANCE


def test_fsdp2_predict_gives_every_sample_with_uneven_and_empty_shares(fsdp):
    for result in fsdp.results("fsdp_and_ddp"):
        fsdp_run, ddp_run = result["fsdp"], result["ddp"]
        assert (
            len(fsdp_run["predictions"]) == scenarios.PREDICT_SAMPLES and len(fsdp_run["one_prediction"]) == 1
        )
        assert max_difference(fsdp_run["predictions"], ddp_run["predictions"]) < 1e-5
        assert max_difference(fsdp_run["one_prediction"], ddp_run["one_prediction"]) < 1e-5


def test_an_fsdp_trainer_leaves_no_sharding_to_a_later_ddp_trainer(fsdp):
    for result in fsdp.results("fsdp_and_ddp"):
        ddp_run = result["ddp"]
        assert (ddp_run["distributed_type"], ddp_run["parameter_class"]) == (
            "DistributedType.MULTI_CPU",
            "Parameter",
        )
        assert result["fsdp"]["environment_fsdp"] is None, (
            "Accelerator(fsdp_plugin=...) set ACCELERATE_USE_FSDP"
        )


def test_fsdp2_bf16_gives_fp32_outputs_and_stays_close_to_ddp_bf16(fsdp):
    for result in fsdp.results("fsdp_bf16"):
        fsdp_run, ddp_run = result["fsdp"], result["ddp"]
        assert fsdp_run["prediction_dtype"] == ddp_run["prediction_dtype"] == "torch.float32"
        # bf16 computes differently
        assert max_difference(fsdp_run["step_losses"], ddp_run["step_losses"]) < 1e-2
    sharded, replicated = checkpoint(fsdp, "bf16_fsdp"), checkpoint(fsdp, "bf16_ddp")
    for name, weights in replicated["model_state_dict"].items():
        assert sharded["model_state_dict"][name].dtype == torch.float32, "the sharded parameters stay fp32"
        assert max_difference(sharded["model_state_dict"][name], weights) < 1e-3, name


def test_fsdp2_checkpoint_loads_into_a_plain_model_and_optimizer(fsdp):
    saved = checkpoint(fsdp, "fsdp")
    model = scenarios.TinyTransformer(seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=scenarios.TRAIN["lr"], momentum=0.9)
    model.load_state_dict(saved["model_state_dict"])  # whole weights, named as the plain model's
    optimizer.load_state_dict(saved["optimizer_state_dict"])  # torch's own format: numbered, whole buffers
    entries = [result["get_state_dict_entries"] for result in fsdp.results("fsdp_checkpoints")]
    assert entries == [
        len(saved["model_state_dict"]),
        0,
    ], "accelerator.get_state_dict: whole on the main process"


def test_fsdp2_load_checkpoint_restores_fsdp_and_ddp_checkpoints_exactly(fsdp):
    results = fsdp.results("fsdp_checkpoints")
    for name in ("fsdp", "ddp"):
        assert results[0][f"{name}_returned_keys"] == ["model_state_dict", "optimizer_state_dict"]
        saved, reloaded = checkpoint(fsdp, name), checkpoint(fsdp, f"{name}_reloaded")
        for key, weights in saved["model_state_dict"].items():
            assert torch.equal(reloaded["model_state_dict"][key], weights), f"{name}: {key}"
        assert (
            reloaded["optimizer_state_dict"]["param_groups"] == saved["optimizer_state_dict"]["param_groups"]
        )
        for index, state in saved["optimizer_state_dict"]["state"].items():
            assert torch.equal(
                reloaded["optimizer_state_dict"]["state"][index]["momentum_buffer"], state["momentum_buffer"]
            )


def test_accelerate_save_state_restores_a_sharded_trainer_model(fsdp):
    assert [result["accelerate_state_restores"] for result in fsdp.results("fsdp_checkpoints")] == [
        True,
        True,
    ]


def test_fsdp2_per_token_loss_matches_ddp(fsdp):
    result = fsdp.results("fsdp_per_item_loss")[0]
    for name, weights in result["ddp"].items():
        assert max_difference(result["fsdp"][name], weights) < TOLERANCE, name


def test_fsdp2_asked_by_accelerates_environment_shards_the_model(fsdp):
    for result in fsdp.results("fsdp_asked_and_refused"):
        asked = result["from_environment"]
        assert asked["distributed_type"] == "DistributedType.FSDP"
        assert asked["sharded_modules"] == [
            "FSDPBlock",
            "FSDPBlock",
            "FSDPLayerNorm",
            "FSDPTinyTransformer",
        ], asked


def test_what_fsdp_cannot_do_on_cpu_processes_is_refused_or_warned(fsdp):
    for result in fsdp.results("fsdp_asked_and_refused"):
        assert result["fsdp1"].startswith("ValueError: FSDP1 does not run on CPU processes"), result["fsdp1"]
        assert "fsdp_version=2" in result["fsdp1"]
        assert result["cpu_offload_warnings"] == [
            "cpu_offload=True is dropped on CPU processes (the parameters are on the CPU already, and "
            "its pinned memory needs an accelerator): the model is sharded without offloading."
        ]
        assert result["cpu_offload_trained"] == 2
        assert result["clip_value"].startswith("ValueError: gradient_clip_value is not supported under FSDP")


def test_training_states_of_fsdp2_models_are_saved_and_resumed_from(fsdp):
    for result in fsdp.results("fsdp_asked_and_refused"):  # refused until issue 26.2 (test_sharded_state.py)
        assert (result["save_training_state"], result["resume_from"]) == ("no error", "no error"), result
        assert result["state_folder_written"]


def test_a_trainer_whose_sharding_was_replaced_refuses_to_train(fsdp):
    for result in fsdp.results("fsdp_asked_and_refused"):
        assert result["replaced"].startswith(
            "RuntimeError: This Trainer was created with distributed_type='FSDP', but a Trainer created "
            "since set accelerate's process-wide state to 'MULTI_CPU'"
        ), result["replaced"]


# ---------------------------------------------------------------------------------------- one process


def test_an_fsdp_plugin_on_one_process_warns_that_it_trains_unsharded():
    assert "ACCELERATE_USE_FSDP" not in os.environ
    with pytest.warns(UserWarning, match="The FSDP plugin is ignored on one process.*trains unsharded"):
        trainer = make_trainer(
            accelerator_kwargs={"fsdp_plugin": FullyShardedDataParallelPlugin(fsdp_version=2)}
        )
    assert trainer.accelerator.distributed_type == DistributedType.NO
    assert "ACCELERATE_USE_FSDP" not in os.environ, "the plugin's environment variable leaked"


def test_the_accelerate_internals_of_cpu_fsdp2_are_what_accelerate_reads():
    trainer = make_trainer()
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2)
    _sharding._shard_cpu_processes(trainer.accelerator, plugin)
    try:
        assert trainer.accelerator.is_fsdp2 and trainer.accelerator.distributed_type == DistributedType.FSDP
        assert AcceleratorState().fsdp_plugin is plugin and trainer.accelerator.state.fsdp_plugin is plugin
        assert PartialState().distributed_type == DistributedType.FSDP, (
            "a new AcceleratorState starts from it"
        )
    finally:
        _accelerate_state.make_way_for({})
    assert not AcceleratorState._shared_state, "an FSDP state is made way for"
    assert PartialState().distributed_type == DistributedType.NO, "the launch's own type is given back"
    assert make_trainer().accelerator.distributed_type == DistributedType.NO


@pytest.mark.parametrize(
    "environment, accelerator_kwargs, error",
    [
        (
            {"LOCAL_RANK": "0"},
            {"cpu": True},
            "DeepSpeed was asked for with cpu=True, which makes accelerate drop it",
        ),
        (
            {"LOCAL_RANK": "0", "WORLD_SIZE": "2"},
            {},
            "DeepSpeed on several CPU processes is not run by accelerate",
        ),
        ({}, {}, r"DeepSpeed needs a launcher, also for one process.*torchrun --nproc_per_node 1"),
    ],
    ids=["cpu-true", "several-cpu-processes", "no-launcher"],
)
def test_deepspeed_where_accelerate_would_drop_it_is_refused(
    monkeypatch, environment, accelerator_kwargs, error
):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what accelerate launch --use_deepspeed sets
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if environment.get("WORLD_SIZE") == "2" and torch.cuda.is_available():
        pytest.skip("a GPU is present: several processes run DeepSpeed on it")
    with pytest.raises((ValueError, RuntimeError), match=error):
        make_trainer(accelerator_kwargs=accelerator_kwargs)


# ---------------------------------------------------------------------------------------- DeepSpeed


def _deepspeed_missing() -> str | None:
    missing = [name for name in ("deepspeed", "transformers") if importlib.util.find_spec(name) is None]
    return f"needs {' and '.join(missing)} (pip install deepspeed transformers)" if missing else None


@pytest.fixture(scope="module")
def deepspeed(tmp_path_factory) -> Launch:
    if _deepspeed_missing():
        pytest.skip(_deepspeed_missing())
    env = {"DS_ACCELERATOR": "cpu"}
    return Launch("deepspeed_scenario.py", ["deepspeed"], 1, tmp_path_factory.mktemp("deepspeed"), env)


def test_deepspeed_zero2_trains_like_plain_torch_on_one_cpu_process(deepspeed):
    result = deepspeed.results("deepspeed")[0]
    assert result["distributed_type"] == "DistributedType.DEEPSPEED"
    # SGD with momentum, accumulation 2 with a window cut short: a loss divided twice would show
    for name, weights in result["plain"].items():
        assert torch.equal(torch.tensor(result["deepspeed"][name]), torch.tensor(weights)), name
        assert max_difference(result["deepspeed_clipped"][name], result["plain_clipped"][name]) < TOLERANCE, (
            name
        )
    assert max(max_difference(result["plain_clipped"][n], result["plain"][n]) for n in result["plain"]) > 1e-3
    assert result["final_lr"] == pytest.approx(scenarios.TRAIN["lr"] / 4), (
        "the scheduler steps DeepSpeed's optimizer"
    )


def test_deepspeed_auto_fields_are_filled_from_train_arguments(deepspeed):
    result = deepspeed.results("deepspeed")[0]
    assert result["config"] == {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 2,
        "train_batch_size": 8,
        "gradient_clipping": 0.0,  # off: "auto" would have become 1.0
    }
    assert result["clipped_config"] == 0.5
    assert result["contradiction"].startswith(
        "ValueError: The DeepSpeed config sets gradient_accumulation_steps=4 but train() was given "
        "gradient_accumulation_steps=2"
    ), result["contradiction"]
    assert "made with gradient_clipping=0.0" in result["other_clipping"], result["other_clipping"]


def test_what_deepspeed_cannot_save_is_refused_naming_what_to_use(deepspeed):
    result = deepspeed.results("deepspeed")[0]
    assert result["save_training_state"].startswith(
        "CheckpointError: Training states of DeepSpeed runs are not"
    )
    assert "trainer.accelerator.save_state(folder)" in result["save_training_state"]
    assert "save_optimizer=False" in result["save_optimizer"]
    assert result["weights_only"] == "no error"
    assert result["per_token_loss"].startswith(
        "ValueError: num_items_in_batch is not supported under DeepSpeed"
    )
    weights = torch.load(deepspeed.out / "weights.pt", weights_only=True)["model_state_dict"]
    assert set(weights) == set(result["deepspeed"])


@pytest.mark.slow
def test_the_gpu_fsdp_check_dry_runs_on_cpu_processes(tmp_path):
    status, output = run_launch([sys.executable, "benchmarks/gpu_fsdp.py", "--device", "cpu"], tmp_path)
    assert status == 0, tail(output)
    lines = [line for line in output.splitlines() if line.startswith(("1 process", "2 processes"))]
    assert len(lines) == 2 and all(line.endswith("ok") and " FSDP " in line for line in lines), tail(output)
