"""Real multi-process runs: two CPU processes (gloo), launched with torchrun and with accelerate launch.

Each scenario lives in ``distributed_scenarios.py``; every process writes its results as JSON and
the tests here compare them with each other and with single-process references computed with
plain torch. To keep the suite quick, one torchrun launch runs every scenario in turn; a scenario
that fails ends that launch, and the scenarios it did not reach are launched again without it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from ..launching import REPO_ROOT, free_port, run_launch, tail, torchrun_command
from . import distributed_scenarios as scenarios

NUM_PROCESSES = 2
SCRIPT = Path(__file__).resolve().with_name("distributed_scenarios.py").relative_to(REPO_ROOT)


TORCHRUN_SCENARIOS = (
    "uneven_eval",
    "placeholders",
    "max_steps",
    "predict_order",
    "stop_one_rank",
    "ddp_weights_equal",
    "accumulation_equivalence",
    "smoke",
    "buffers_evaluate_empty_share",
    "buffers_predict_empty_share",
    "unfreeze_between_runs",
    "per_item_loss",
)


# ---------------------------------------------------------------------------------------- launching


def scenarios_torchrun_command(names: list[str], out_dir: Path) -> list[str]:
    return torchrun_command(SCRIPT, ",".join(names), out_dir, num_processes=NUM_PROCESSES)


def accelerate_launch_command(names: list[str], out_dir: Path) -> list[str]:
    # `accelerate launch --cpu --num_processes 2` starts only ONE process unless an MPI launcher is
    # configured (accelerate's "simple launcher"); --multi_gpu starts NUM_PROCESSES processes
    # through torch's elastic launcher, and the scenarios' Trainers pick gloo on the CPU themselves
    # (accelerator_kwargs={"cpu": True}), with or without a GPU.
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(NUM_PROCESSES),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        str(SCRIPT),
        ",".join(names),
        str(out_dir),
    ]


def result_paths(out_dir: Path, name: str) -> list[Path]:
    return [out_dir / f"{name}_rank{rank}.json" for rank in range(NUM_PROCESSES)]


def scenario_finished(out_dir: Path, name: str) -> bool:
    """Every process wrote its result, or some process reported an error."""
    results = [json.loads(path.read_text()) for path in result_paths(out_dir, name) if path.exists()]
    return len(results) == NUM_PROCESSES or any("error" in result for result in results)


class ScenarioRuns:
    """The launches' outputs, and each scenario's results per process."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.launch_output: dict[str, str] = {}

    def run(self, names: list[str], make_command, tmp_dir: Path) -> None:
        pending = list(names)
        port_retries = 2
        while pending:
            status, output = run_launch(make_command(pending, self.out_dir), tmp_dir)
            finished = [name for name in pending if scenario_finished(self.out_dir, name)]
            for name in pending:
                self.launch_output[name] = f"exit status {status}; launch output:\n{output}"
            pending = [name for name in pending if name not in finished]
            if status == 0 or not pending:
                break
            if not finished and "address already in use" in output.lower() and port_retries:
                port_retries -= 1  # the free port was taken before the launch bound it: try another
                continue
            if not any(scenario_finished(self.out_dir, name) and self._has_error(name) for name in finished):
                break  # the launch failed without a scenario to blame: relaunching would fail again

    def _has_error(self, name: str) -> bool:
        return any(
            "error" in json.loads(p.read_text()) for p in result_paths(self.out_dir, name) if p.exists()
        )

    def results(self, name: str) -> list[dict]:
        """Each process's result (index = rank); fails the test with the scenario's error or the
        launch's output if it has none."""
        paths = result_paths(self.out_dir, name)
        found = {path: json.loads(path.read_text()) for path in paths if path.exists()}
        errors = [
            f"--- {path.name}:\n{result['error']}" for path, result in found.items() if "error" in result
        ]
        if errors:
            pytest.fail(f"scenario {name!r} raised:\n" + "\n".join(errors), pytrace=False)
        if len(found) != len(paths):
            missing = [path.name for path in paths if path not in found]
            pytest.fail(
                f"scenario {name!r} wrote no result for {missing}; "
                f"{tail(self.launch_output.get(name, 'it was never launched'))}",
                pytrace=False,
            )
        for rank, result in enumerate(found.values()):
            assert result["num_processes"] == NUM_PROCESSES, result
            assert result.get("process_index", rank) == rank, result
        return list(found.values())


@pytest.fixture(scope="module")
def torchrun_runs(tmp_path_factory) -> ScenarioRuns:
    tmp_dir = tmp_path_factory.mktemp("torchrun")
    runs = ScenarioRuns(tmp_dir / "out")
    runs.run(list(TORCHRUN_SCENARIOS), scenarios_torchrun_command, tmp_dir)
    return runs


# ---------------------------------------------------------------------------------------- references


def reference_mean_loss(state_dict, dataset, model=None) -> float:
    """The sample-weighted mean cross-entropy over the whole dataset, in one process."""
    model = model if model is not None else make_tiny_model()
    model.load_state_dict(state_dict)
    model.eval()
    inputs, targets = dataset.tensors
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(inputs), targets).item()


def reference_full_batch_sgd(num_samples: int, batch_size: int, num_epochs: int, lr: float) -> torch.Tensor:
    """Plain SGD on make_tiny_model in one process, batches in dataset order."""
    model = make_tiny_model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    inputs, targets = make_tiny_dataset(num_samples).tensors
    for _ in range(num_epochs):
        for start in range(0, num_samples, batch_size):
            optimizer.zero_grad()
            rows = slice(start, start + batch_size)
            loss = torch.nn.functional.cross_entropy(model(inputs[rows]), targets[rows])
            loss.backward()
            optimizer.step()
    return scenarios.flat_parameters(model).double()


def reference_one_cycle_final_lr(total_steps: int, max_lr: float) -> float:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def same_on_every_process(results: list[dict], key: str):
    values = [result[key] for result in results]
    assert all(value == values[0] for value in values), f"{key} differs across processes: {values}"
    return values[0]


# ---------------------------------------------------------------------------------------- tests


def test_uneven_eval_counts_every_sample_exactly_once(torchrun_runs):
    results = torchrun_runs.results("uneven_eval")
    sizes = scenarios.UNEVEN_EVAL
    per_epoch = [result["eval_samples_per_epoch"] for result in results]
    # Two eval epochs during train(), then evaluate() with the train batch size, another batch
    # size (an uneven number of batches per process), and a dataset smaller than one batch.
    expected_totals = [sizes["eval_samples"]] * 4 + [sizes["tiny_eval_samples"]]
    assert [sum(counts) for counts in zip(*per_epoch)] == expected_totals, per_epoch
    # Each process really evaluated a share (the dataset was sharded, not evaluated twice).
    assert all(0 < counts[0] < sizes["eval_samples"] for counts in per_epoch), per_epoch


def test_uneven_eval_loss_is_the_single_process_sample_weighted_mean(torchrun_runs):
    results = torchrun_runs.results("uneven_eval")
    sizes = scenarios.UNEVEN_EVAL
    state_dict = torch.load(torchrun_runs.out_dir / scenarios.MODEL_FILE, weights_only=True)
    expected = reference_mean_loss(state_dict, make_tiny_dataset(sizes["eval_samples"], seed=1))
    expected_tiny = reference_mean_loss(state_dict, make_tiny_dataset(sizes["tiny_eval_samples"], seed=1))

    eval_loss_epoch = same_on_every_process(results, "eval_loss_epoch")
    assert len(eval_loss_epoch) == 2
    # The last epoch's evaluation ran on the final weights, as evaluate() did.
    assert eval_loss_epoch[-1] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for key in ("eval_loss_default", "eval_loss_other_batch"):
        assert same_on_every_process(results, key) == pytest.approx(expected, rel=1e-5, abs=1e-6), key
    assert same_on_every_process(results, "eval_loss_tiny") == pytest.approx(
        expected_tiny, rel=1e-5, abs=1e-6
    )


def test_placeholders_fill_the_scheduler_with_per_process_sizes(torchrun_runs):
    results = torchrun_runs.results("placeholders")
    sizes = scenarios.PLACEHOLDERS
    batches_per_process = math.ceil(sizes["train_samples"] / NUM_PROCESSES / sizes["batch_size"])
    updates_per_epoch = math.ceil(batches_per_process / sizes["accumulation"])
    total_steps = updates_per_epoch * sizes["num_epochs"]
    expected_lr = reference_one_cycle_final_lr(total_steps, sizes["max_lr"])

    for variant in ("total_steps", "epochs_and_steps_per_epoch"):
        for rank, result in enumerate(r[variant] for r in results):
            config = result["run_config"]
            assert config["num_processes"] == NUM_PROCESSES
            assert config["is_world_process_zero"] == (rank == 0)
            assert config["is_local_process_zero"] == (rank == 0)
            assert config["train_dataloader_len"] == batches_per_process
            assert config["num_update_steps_per_epoch"] == updates_per_epoch
            assert config["num_training_steps"] == total_steps
            # OneCycleLR raises once stepped past total_steps: it ran to exactly its end.
            assert result["scheduler_total_steps"] == total_steps, (variant, result)
            assert result["scheduler_last_epoch"] == total_steps, (variant, result)
            assert result["optimizer_steps"] == result["completed_update_steps"] == total_steps
            assert result["final_lr"] == pytest.approx(expected_lr, rel=1e-9), (variant, result)


def test_max_num_train_steps_stops_every_process_after_that_many_updates(torchrun_runs):
    """``max_num_train_steps`` stops every process after exactly that many updates."""
    results = torchrun_runs.results("max_steps")
    sizes = scenarios.MAX_STEPS
    for result in results:
        assert result["completed_update_steps"] == sizes["max_steps"], result
        assert result["optimizer_step_events"] == sizes["max_steps"], result
        assert result["scheduler_last_epoch"] == sizes["max_steps"], result
        assert result["run_config"]["num_training_steps"] == sizes["max_steps"]
        # 5 batches per process and epoch, accumulation 2: 3 updates per epoch, so the run
        # needs 2 epochs and stops after the 4th batch of the second (5 + 4 forward steps).
        assert result["run_config"]["num_update_steps_per_epoch"] == 3
        assert result["train_epochs_started"] == result["run_config"]["num_epochs"] == 2
        assert result["train_steps"] == 9
    same_on_every_process(results, "parameters_digest")


def test_predict_returns_every_sample_in_dataset_order_on_every_process(torchrun_runs):
    results = torchrun_runs.results("predict_order")
    sizes = scenarios.PREDICT
    expected = scenarios._indexed_dataset(sizes["num_samples"], sizes["num_features"]).tensors[0].tolist()
    for result in results:
        assert result["predictions"] == expected


def test_predict_with_fewer_samples_than_processes(torchrun_runs):
    results = torchrun_runs.results("predict_order")
    expected = scenarios._indexed_dataset(1, scenarios.PREDICT["num_features"]).tensors[0].tolist()
    for result in results:
        assert result["single_sample_predictions"] == expected


def test_any_process_stops_every_process_together_at_epoch_end(torchrun_runs):
    results = [result["epoch_end"] for result in torchrun_runs.results("stop_one_rank")]
    stop_epoch = scenarios.STOP["stop_epoch"]
    for result in results:
        assert result["stopped_at_epoch"] == stop_epoch, result
        assert result["current_epoch"] == stop_epoch, result
        assert result["counts"]["on_train_epoch_start"] == stop_epoch
        assert result["counts"]["on_stop_training_error"] == 1
        assert result["counts"]["on_training_run_end"] == 1
    same_on_every_process(results, "completed_update_steps")
    same_on_every_process(results, "parameters_digest")


def test_any_process_stops_every_process_together_mid_epoch(torchrun_runs):
    results = [result["mid_epoch"] for result in torchrun_runs.results("stop_one_rank")]
    stop_step = scenarios.STOP["stop_step"]
    for result in results:
        assert result["stopped_at_step"] == stop_step, result
        assert result["current_epoch"] == 1
        # The stop comes at the end of the stop_step-th step, before its update.
        assert result["completed_update_steps"] == stop_step - 1
        assert result["counts"]["on_stop_training_error"] == 1
        assert result["counts"]["on_training_run_end"] == 1
    same_on_every_process(results, "parameters_digest")


def test_ddp_keeps_the_weights_equal_on_every_process(torchrun_runs):
    results = torchrun_runs.results("ddp_weights_equal")
    # The processes started from different weights: DDP broadcast process 0's.
    assert results[0]["initial_digest"] != results[1]["initial_digest"]
    same_on_every_process(results, "parameters_digest")
    same_on_every_process(results, "parameters_sum")
    assert results[0]["parameters_digest"] not in {result["initial_digest"] for result in results}


def test_gradient_accumulation_matches_a_larger_batch(torchrun_runs):
    results = torchrun_runs.results("accumulation_equivalence")
    sizes = scenarios.ACCUMULATION
    # One update sees per_device_batch_size * accumulation * NUM_PROCESSES = 16 samples either way,
    # and with shuffle=False those are dataset rows 0-15, then 16-31.
    expected = reference_full_batch_sgd(sizes["train_samples"], 16, sizes["num_epochs"], sizes["lr"])
    for result in results:
        accumulated = torch.tensor(result["bs4_accum2"]["parameters"], dtype=torch.float64)
        larger_batch = torch.tensor(result["bs8_accum1"]["parameters"], dtype=torch.float64)
        assert (
            result["bs4_accum2"]["completed_update_steps"] == result["bs8_accum1"]["completed_update_steps"]
        )
        torch.testing.assert_close(accumulated, larger_batch, atol=1e-6, rtol=0)
        torch.testing.assert_close(accumulated, expected, atol=1e-5, rtol=0)
    assert results[0]["bs4_accum2"]["parameters"] == results[1]["bs4_accum2"]["parameters"]


def test_accelerate_launch_runs_a_training_on_two_cpu_processes(tmp_path):
    runs = ScenarioRuns(tmp_path / "out")
    runs.run(["smoke"], accelerate_launch_command, tmp_path)
    results = runs.results("smoke")
    for result in results:
        assert result["distributed_type"] == "DistributedType.MULTI_CPU"
        assert result["world_size_env"] == str(NUM_PROCESSES)
        # 32 samples, batch 4, two processes: 4 updates each.
        assert result["completed_update_steps"] == 4
    assert sum(result["eval_samples"][0] for result in results) == 11
    same_on_every_process(results, "eval_loss")
    same_on_every_process(results, "parameters_digest")


def test_torchrun_on_a_cpu_only_machine_trains_on_every_process(torchrun_runs):
    # The smoke scenario passes no cpu=True where the machine has no accelerator: the Trainer
    # must see on its own that it was launched on several processes.
    results = torchrun_runs.results("smoke")
    for result in results:
        assert result["distributed_type"] == "DistributedType.MULTI_CPU"
        assert result["completed_update_steps"] == 4
    assert sum(result["eval_samples"][0] for result in results) == 11
    same_on_every_process(results, "parameters_digest")


# A model with buffers (BatchNorm) under DDP: its first forward after training broadcasts the
# buffers, a collective that a process without an evaluation batch would never join.


def test_evaluate_a_model_with_buffers_when_one_process_has_no_batch(torchrun_runs):
    results = torchrun_runs.results("buffers_evaluate_empty_share")
    num_samples = scenarios.UNEVEN_EVAL["tiny_eval_samples"]
    state_dict = torch.load(
        torchrun_runs.out_dir / "buffers_evaluate_empty_share_model.pt", weights_only=True
    )
    dataset = make_tiny_dataset(num_samples, seed=1)
    expected = reference_mean_loss(state_dict, dataset, scenarios.make_batch_norm_model())
    assert sum(result["eval_samples"][0] for result in results) == num_samples
    assert same_on_every_process(results, "eval_loss") == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_predict_with_a_model_with_buffers_on_fewer_samples_than_processes(torchrun_runs):
    results = torchrun_runs.results("buffers_predict_empty_share")
    state_dict = torch.load(torchrun_runs.out_dir / "buffers_predict_empty_share_model.pt", weights_only=True)
    model = scenarios.make_batch_norm_model()
    model.load_state_dict(state_dict)
    model.eval()
    inputs, _ = make_tiny_dataset(1, seed=1).tensors
    with torch.no_grad():
        expected = model(inputs).double()
    predictions = torch.tensor(same_on_every_process(results, "predictions"), dtype=torch.float64)
    torch.testing.assert_close(predictions, expected, atol=1e-5, rtol=1e-5)


def test_unfrozen_parameters_stay_in_sync_when_training_again(torchrun_runs):
    results = torchrun_runs.results("unfreeze_between_runs")
    frozen = same_on_every_process(results, "frozen_digest")
    assert same_on_every_process(results, "first_layer_digest") != frozen  # it trained after unfreezing
    same_on_every_process(results, "parameters_digest")


def test_per_token_loss_on_two_processes_gives_the_gradients_of_one(torchrun_runs):
    from .tiny_lm import TinyCausalLM, TokenSequences, pad_batch, reference_gradients

    dataset = TokenSequences(16)  # 2 processes x 2 x 2 accumulated, in order: the first update sees rows 0-7
    expected = reference_gradients(TinyCausalLM(), pad_batch([dataset[index] for index in range(8)]))
    for result in torchrun_runs.results("per_item_loss"):
        for got, want in zip(result["gradients"], expected):
            torch.testing.assert_close(torch.tensor(got), want, rtol=1e-5, atol=1e-7)
