"""Iterable and streaming datasets: training without a length, accumulation at the end of the data,
schedules sized from max_num_train_steps, resume by replay, HF datasets streaming, two processes."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer, TrainerCallback, TrainerPlaceholderValues
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

from ..launching import REPO_ROOT, run_launch, tail, torchrun_command
from . import iterable_scenario
from .helpers import make_trainer


class Stream(torch.utils.data.IterableDataset):
    """The samples of a TensorDataset, in order, without ``__len__``."""

    def __init__(self, dataset: TensorDataset):
        self.dataset = dataset

    def __iter__(self):
        return iter(self.dataset)


class SizedStream(Stream):
    def __len__(self):
        return len(self.dataset)


class Recorder(TrainerCallback):
    def __init__(self):
        self.batches_per_epoch, self.lrs = [], []

    def on_train_epoch_start(self, trainer, **kwargs):
        self.batches_per_epoch.append(0)

    def on_train_step_end(self, trainer, **kwargs):
        self.batches_per_epoch[-1] += 1

    def on_optimizer_step_end(self, trainer, optimizer, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])


def weights(trainer) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in trainer.get_model().parameters()]


def test_an_iterable_without_length_trains_epochs_that_end_with_the_data():
    recorder = Recorder()
    trainer = make_trainer([*DEFAULT_CALLBACKS, recorder], lr=0.1)  # the progress bar and metrics printer too
    trainer.train(
        Stream(make_tiny_dataset(10)), num_epochs=2, per_device_batch_size=4, max_num_train_steps=100
    )
    assert recorder.batches_per_epoch == [3, 3]
    assert trainer.completed_update_steps == 6
    config = trainer.run_config
    assert config.train_dataloader_len is None and config.num_update_steps_per_epoch is None
    assert config.num_training_steps == 100 and config.num_epochs == 2


def test_max_num_train_steps_ends_an_iterable_run_inside_an_epoch():
    recorder = Recorder()
    trainer = make_trainer([recorder], lr=0.1)
    trainer.train(Stream(make_tiny_dataset(10)), num_epochs=5, per_device_batch_size=4, max_num_train_steps=4)
    assert trainer.completed_update_steps == 4
    assert recorder.batches_per_epoch == [3, 1]


def test_an_iterable_without_length_or_max_steps_is_refused_at_once():
    """An iterable without length or max steps is refused before the first step."""
    recorder = Recorder()
    with pytest.raises(ValueError, match="max_num_train_steps=N"):
        make_trainer([recorder], lr=0.1).train(Stream(make_tiny_dataset(10)), num_epochs=1)
    assert recorder.batches_per_epoch == []


def test_a_sized_iterable_trains_as_a_sized_dataset_in_its_own_order():
    trainer = make_trainer(lr=0.1)
    trainer.train(SizedStream(make_tiny_dataset(10)), num_epochs=2, per_device_batch_size=4)
    assert trainer.run_config.train_dataloader_len == 3 and trainer.run_config.num_training_steps == 6
    assert trainer.completed_update_steps == 6
    reference = make_trainer(lr=0.1)
    reference.train(
        make_tiny_dataset(10),
        num_epochs=2,
        per_device_batch_size=4,
        train_dataloader_kwargs={"shuffle": False},
    )
    assert all(torch.equal(a, b) for a, b in zip(weights(trainer), weights(reference)))


def test_schedules_are_sized_from_max_num_train_steps():
    recorder = Recorder()
    trainer = make_trainer([recorder], lr=1.0)
    schedule = functools.partial(
        torch.optim.lr_scheduler.LinearLR,
        start_factor=1.0,
        end_factor=0.0,
        total_iters=TrainerPlaceholderValues.NUM_TRAINING_STEPS,
    )
    trainer.train(
        Stream(make_tiny_dataset(10)),
        num_epochs=9,
        per_device_batch_size=4,
        max_num_train_steps=5,
        create_scheduler_fn=schedule,
    )
    assert recorder.lrs == pytest.approx([0.8, 0.6, 0.4, 0.2, 0.0])


def test_a_placeholder_that_needs_the_epoch_length_gives_a_clear_error():
    schedule = functools.partial(
        torch.optim.lr_scheduler.OneCycleLR,
        max_lr=0.1,
        epochs=TrainerPlaceholderValues.NUM_EPOCHS,
        steps_per_epoch=TrainerPlaceholderValues.NUM_UPDATE_STEPS_PER_EPOCH,
    )
    with pytest.raises(ValueError, match="NUM_UPDATE_STEPS_PER_EPOCH is unknown.*NUM_TRAINING_STEPS"):
        make_trainer(lr=0.1).train(
            Stream(make_tiny_dataset(10)), num_epochs=1, max_num_train_steps=3, create_scheduler_fn=schedule
        )


@pytest.mark.parametrize("accumulation", [2, 3])
def test_an_iterable_epochs_last_window_updates_like_a_sized_epochs(accumulation):
    # 10 samples in batches of 2: 5 batches, so the last window holds 1 (accumulation 2) or 2 (3) batches
    """The last accumulation window of an iterable epoch updates as a sized one."""
    streamed = make_trainer(lr=0.1)
    streamed.train(
        Stream(make_tiny_dataset(10)),
        num_epochs=2,
        per_device_batch_size=2,
        gradient_accumulation_steps=accumulation,
        max_num_train_steps=100,
    )
    sized = make_trainer(lr=0.1)
    sized.train(
        make_tiny_dataset(10),
        num_epochs=2,
        per_device_batch_size=2,
        gradient_accumulation_steps=accumulation,
        train_dataloader_kwargs={"shuffle": False},
    )
    assert streamed.completed_update_steps == sized.completed_update_steps == 2 * math.ceil(5 / accumulation)
    for a, b in zip(weights(streamed), weights(sized)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_predict_refuses_an_iterable_dataset_with_a_clear_error():
    with pytest.raises(
        TypeError, match="predict\\(\\) needs a map-style dataset.*Stream is an IterableDataset"
    ):
        make_trainer(lr=0.1).predict(Stream(make_tiny_dataset(10)))


class SaveAt(TrainerCallback):
    def __init__(self, save_dir: Path, update: int):
        self.save_dir, self.update = save_dir, update

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps == self.update:
            trainer.save_training_state(self.save_dir)


class Noisy(Stream):
    """Draws from torch's generator while it is read, as augmentation does: a replay must redraw it."""

    def __iter__(self):
        for features, label in self.dataset:
            yield features + 0.1 * torch.randn(features.shape), label


def test_a_mid_epoch_resume_on_an_iterable_replays_to_the_same_weights(tmp_path):
    train = dict(
        num_epochs=2, per_device_batch_size=2, gradient_accumulation_steps=2, max_num_train_steps=100
    )
    torch.manual_seed(1)
    whole = make_trainer([SaveAt(tmp_path / "state", update=2)], lr=0.1)
    whole.train(Noisy(make_tiny_dataset(14)), **train)  # 7 batches, 4 updates an epoch; saved in the first
    torch.manual_seed(2)
    resumed = make_trainer(lr=0.1)
    resumed.train(Noisy(make_tiny_dataset(14)), resume_from=tmp_path / "state", **train)
    assert resumed.completed_update_steps == whole.completed_update_steps == 8
    assert all(torch.equal(a, b) for a, b in zip(weights(resumed), weights(whole)))


class DictModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = make_tiny_model(seed=0)

    def forward(self, x):
        return self.net(x)


def test_hf_datasets_streaming_from_local_files_trains_and_evaluates(tmp_path):
    datasets = pytest.importorskip("datasets", reason="HF datasets is not installed: pip install datasets")
    inputs, labels = make_tiny_dataset(13).tensors
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"x": x.tolist(), "labels": int(y)}) + "\n" for x, y in zip(inputs, labels))
    )
    stream = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True).with_format(
        "torch"
    )
    recorder = Recorder()
    model = DictModel()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[recorder]
    )
    trainer.train(stream, num_epochs=2, eval_dataset=stream, per_device_batch_size=4, max_num_train_steps=50)
    assert recorder.batches_per_epoch == [4, 4]
    expected = torch.nn.functional.cross_entropy(model(inputs.float()), labels).item()
    assert trainer.run_history.get_latest_metric("eval_loss_epoch") == pytest.approx(expected, rel=1e-5)


def test_two_processes_read_disjoint_shares_and_evaluate_each_sample_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    command = torchrun_command(Path(iterable_scenario.__file__).relative_to(REPO_ROOT), out)
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)
    ranks = [json.loads((out / f"iterable_rank{rank}.json").read_text()) for rank in range(2)]
    batch = iterable_scenario.BATCH_SIZE
    num_steps = math.ceil(iterable_scenario.TRAIN_SAMPLES / (2 * batch))
    assert [len(rank["train"]) for rank in ranks] == [num_steps, num_steps]
    assert ranks[0]["updates"] == ranks[1]["updates"] == math.ceil(num_steps / iterable_scenario.ACCUMULATION)
    assert ranks[0]["weight"] == ranks[1]["weight"] and ranks[0]["bias"] == ranks[1]["bias"]
    seen = []
    for step in range(num_steps):
        global_batch = ranks[0]["train"][step] + ranks[1]["train"][step]
        if step < num_steps - 1:
            assert len(set(global_batch)) == len(global_batch) == 2 * batch, global_batch
        seen += global_batch
    assert set(seen) == set(range(iterable_scenario.TRAIN_SAMPLES))
    evaluated = sorted(i for rank in ranks for ids in rank["eval"] for i in ids)
    assert evaluated == list(range(iterable_scenario.EVAL_SAMPLES))
    assert ranks[0]["eval_loss"] == ranks[1]["eval_loss"]
    weight, bias = ddp_reference([rank["train"] for rank in ranks])
    torch.testing.assert_close(torch.tensor(ranks[0]["weight"]), weight)
    torch.testing.assert_close(torch.tensor(ranks[0]["bias"]), bias)


def ddp_reference(steps_per_rank: list[list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scenario's training in plain torch, from the batches each process saw: each update
    averages over the processes and over the batches of its window, the short last one included."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=iterable_scenario.LR)
    num_steps, accumulation = len(steps_per_rank[0]), iterable_scenario.ACCUMULATION
    for window_start in range(0, num_steps, accumulation):
        window = range(window_start, min(window_start + accumulation, num_steps))
        losses = [
            torch.nn.functional.cross_entropy(
                model(torch.tensor(ids, dtype=torch.float32)[:, None].expand(-1, 4)), torch.tensor(ids) % 3
            )
            for rank in steps_per_rank
            for ids in (rank[step] for step in window)
        ]
        (sum(losses) / len(losses)).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.weight.detach(), model.bias.detach()
