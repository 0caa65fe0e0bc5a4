"""A resume inside an epoch skips to its position without loading what the saved run had seen
(O(1) in the position), exactly, with a random augmentation in ``__getitem__`` and dropout; an
iterable dataset with ``state_dict`` resumes from its own state; where exactness cannot be had,
the epoch is replayed with one warning that says why. (Two processes, dataloader workers, kill -9
and SIGTERM: ``tests/callbacks/test_resume.py``.)"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from pytorch_accelerated.trainer import StopTrainingError, Trainer, TrainerCallback, seed_everything
from pytorch_accelerated.trainer.testing import assert_bitwise_equal, final_state, make_tiny_dataset

from ..launching import REPO_ROOT, run_launch, tail, torchrun_command
from . import stream_resume_scenario

BATCH_SIZE = 4
NUM_SAMPLES = 40  # 10 batches an epoch
SAVED_AFTER = 6


class Augmented(Dataset):
    """The tiny dataset with noise from all three generators added as a sample loads; counts loads."""

    def __init__(self, num_samples: int = NUM_SAMPLES):
        self.samples = make_tiny_dataset(num_samples)
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        self.loaded.append(index)
        inputs, target = self.samples[index]
        return (
            inputs + 0.1 * torch.randn(4) + 0.05 * float(np.random.randn()) + 0.05 * random.random(),
            target,
        )


class WithItsOwnGenerator(Augmented):
    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)


class Counted(IterableDataset):
    """A stream with its position in ``state_dict`` (torchdata's Stateful protocol), augmented as it loads."""

    def __init__(self, num_samples: int = NUM_SAMPLES):
        self.samples = make_tiny_dataset(num_samples)
        self.position = 0
        self.loaded = 0

    def __iter__(self):
        start, self.position = self.position, 0
        for index in range(start, len(self.samples)):
            self.position = index + 1
            self.loaded += 1
            inputs, target = self.samples[index]
            yield inputs + 0.1 * torch.randn(4), target
        self.position = 0

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


class SaveThenStop(TrainerCallback):
    def __init__(self, path, after: int = SAVED_AFTER):
        self.path, self.after = path, after

    def on_save_point(self, trainer, point, **kwargs):
        if point == "update" and trainer.completed_update_steps == self.after:
            trainer.save_training_state(self.path)
            raise StopTrainingError("saved")


def run(dataset, callbacks=(), num_epochs: int = 2, resume_from=None, **train_kwargs):
    seed_everything(7)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
        )
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.AdamW(model.parameters(), lr=0.01),
        callbacks=list(callbacks),
    )
    trainer.train(
        dataset,
        num_epochs=num_epochs,
        per_device_batch_size=BATCH_SIZE,
        resume_from=resume_from,
        **train_kwargs,
    )
    return trainer


def scramble():
    random.seed()
    np.random.seed()
    torch.seed()


@pytest.mark.parametrize("workers", [0, 2], ids=["in-the-main-process", "two-workers"])
def test_a_mid_epoch_resume_loads_no_sample_before_its_position(tmp_path, workers):
    """A resume inside an epoch loads no sample before its position and ends bitwise equal."""
    loader_kwargs = {"train_dataloader_kwargs": {"num_workers": workers}}
    expected = final_state(run(Augmented(), **loader_kwargs))
    run(Augmented(), [SaveThenStop(tmp_path / "state")], **loader_kwargs)
    scramble()
    dataset = Augmented()
    resumed = run(dataset, resume_from=tmp_path / "state", **loader_kwargs)
    assert_bitwise_equal(final_state(resumed), expected)
    if workers == 0:  # the workers' copies count their own loads
        remaining = (NUM_SAMPLES // BATCH_SIZE - SAVED_AFTER) * BATCH_SIZE
        assert len(dataset.loaded) == remaining + NUM_SAMPLES, (
            "the resumed epoch loaded batches the saved run had seen"
        )


def test_the_time_to_the_first_step_does_not_grow_with_the_position(tmp_path):
    """Loads before the resumed run's first step: one batch, wherever the state was saved."""
    loads_before_first_step = {}
    for after in (1, 9):
        run(Augmented(), [SaveThenStop(tmp_path / f"after-{after}", after)], num_epochs=1)
        dataset = Augmented()

        class CountAtFirstStep(TrainerCallback):
            def on_train_step_start(self, trainer, **kwargs):
                loads_before_first_step.setdefault(after, len(dataset.loaded))

        run(dataset, [CountAtFirstStep()], num_epochs=1, resume_from=tmp_path / f"after-{after}")
    assert loads_before_first_step == {1: BATCH_SIZE, 9: BATCH_SIZE}


def _warnings_of(action) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        action()
    return [str(warning.message) for warning in caught if "resum" in str(warning.message).lower()]


def test_a_dataset_with_an_untouched_generator_of_its_own_replays_exactly(tmp_path):
    """A dataset with a generator of its own that it leaves is replayed exactly."""
    expected = final_state(run(WithItsOwnGenerator()))
    run(WithItsOwnGenerator(), [SaveThenStop(tmp_path / "state")])
    dataset = WithItsOwnGenerator()
    state = tmp_path / "state"
    messages = _warnings_of(
        lambda: assert_bitwise_equal(final_state(run(dataset, resume_from=state)), expected)
    )
    assert len(messages) == 1 and "loading again the batches the saved run had seen" in messages[0], messages
    assert "WithItsOwnGenerator.rng, a numpy.random._generator.Generator" in messages[0]
    assert "The resume is exact" in messages[0]
    assert len(dataset.loaded) == 2 * NUM_SAMPLES  # the whole resumed epoch, replayed, and the next


class DrawsFromItsOwnGenerator(Augmented):
    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)

    def __getitem__(self, index):
        inputs, target = super().__getitem__(index)
        return inputs + 0.1 * float(self.rng.standard_normal()), target


def test_a_dataset_drawing_from_its_own_generator_says_resume_is_inexact(tmp_path):
    # saved in the second epoch: the dataset's generator had drawn through the first, the resumed run's had
    # not
    """A dataset that draws from a generator of its own says its resume is not exact."""
    run(DrawsFromItsOwnGenerator(), [SaveThenStop(tmp_path / "state", after=NUM_SAMPLES // BATCH_SIZE + 3)])
    messages = _warnings_of(lambda: run(DrawsFromItsOwnGenerator(), resume_from=tmp_path / "state"))
    assert len(messages) == 1, messages
    assert messages[0].startswith(
        "This resume is not exact because the training dataset draws from a random generator of its own "
        "(DrawsFromItsOwnGenerator.rng, a numpy.random._generator.Generator)"
    ), messages[0]


def test_an_iterable_with_a_state_dict_resumes_from_it_without_replaying(tmp_path):
    """An iterable dataset with a ``state_dict`` resumes from it exactly without replaying."""
    kwargs = {"max_num_train_steps": 100}
    expected = final_state(run(Counted(), **kwargs))
    run(Counted(), [SaveThenStop(tmp_path / "state")], **kwargs)
    scramble()
    dataset = Counted()
    resumed = run(dataset, resume_from=tmp_path / "state", **kwargs)
    assert_bitwise_equal(final_state(resumed), expected)
    assert dataset.loaded == NUM_SAMPLES - SAVED_AFTER * BATCH_SIZE + NUM_SAMPLES


def test_an_hf_stream_of_local_files_resumes_from_its_state_exactly(tmp_path):
    """HF datasets streaming from local files resume from their state exactly."""
    datasets = pytest.importorskip("datasets", reason="HF datasets is not installed: pip install datasets")
    path = tmp_path / "data.jsonl"
    inputs, targets = make_tiny_dataset(NUM_SAMPLES).tensors
    path.write_text(
        "".join(json.dumps({"x": x, "y": y}) + "\n" for x, y in zip(inputs.tolist(), targets.tolist()))
    )

    loaded = []

    def counted(row):
        loaded.append(1)
        return row

    def stream():
        rows = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
        return rows.map(counted).with_format("torch")

    def collate(rows):
        return torch.stack([row["x"] for row in rows]), torch.stack([row["y"] for row in rows])

    kwargs = {"max_num_train_steps": 100, "collate_fn": collate}
    expected = final_state(run(stream(), **kwargs))
    run(stream(), [SaveThenStop(tmp_path / "state")], **kwargs)
    scramble()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*loading again the batches")  # no replay
        loaded.clear()
        resumed = run(stream(), resume_from=tmp_path / "state", **kwargs)
    assert_bitwise_equal(final_state(resumed), expected)
    assert len(loaded) <= NUM_SAMPLES - SAVED_AFTER * BATCH_SIZE + NUM_SAMPLES + 10, (
        "it read the rows before its position"
    )


def _json_lines(path, num_samples: int = NUM_SAMPLES):
    inputs, targets = make_tiny_dataset(num_samples).tensors
    path.write_text(
        "".join(json.dumps({"x": x, "y": y}) + "\n" for x, y in zip(inputs.tolist(), targets.tolist()))
    )
    return path


def _collate_rows(rows):
    return torch.stack([row["x"] for row in rows]), torch.stack([row["y"] for row in rows])


@pytest.mark.parametrize("workers", [0, 2], ids=["in-the-main-process", "two-workers"])
def test_a_shuffled_hf_stream_resumes_exactly_by_replaying_its_epoch(tmp_path, workers):
    # its state_dict() does not hold the buffer's content: loaded from it, every weight differed (HF logged a
    # line)
    """An HF stream with a shuffle buffer resumes exactly by reading its epoch again."""
    datasets = pytest.importorskip("datasets", reason="HF datasets is not installed: pip install datasets")
    path = _json_lines(tmp_path / "data.jsonl")

    def stream():
        rows = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
        return rows.shuffle(seed=3, buffer_size=16).with_format("torch")

    kwargs = {"max_num_train_steps": 100, "collate_fn": _collate_rows}
    kwargs["train_dataloader_kwargs"] = {"num_workers": workers}
    expected = final_state(run(stream(), **kwargs))
    run(stream(), [SaveThenStop(tmp_path / "state")], **kwargs)
    scramble()
    messages = _warnings_of(
        lambda: assert_bitwise_equal(
            final_state(run(stream(), resume_from=tmp_path / "state", **kwargs)), expected
        )
    )
    assert len(messages) == 1 and "The resume is exact" in messages[0], messages


def test_an_hf_stream_shuffled_without_a_seed_says_its_resume_is_not_exact(tmp_path):
    datasets = pytest.importorskip("datasets", reason="HF datasets is not installed: pip install datasets")
    path = _json_lines(tmp_path / "data.jsonl")

    def stream():  # HF draws a seed of its own each time: the resumed run's buffer is seeded otherwise
        rows = datasets.load_dataset("json", data_files=str(path), split="train", streaming=True)
        return rows.shuffle(buffer_size=16).with_format("torch")

    kwargs = {"max_num_train_steps": 100, "collate_fn": _collate_rows}
    run(stream(), [SaveThenStop(tmp_path / "state")], **kwargs)
    messages = _warnings_of(lambda: run(stream(), resume_from=tmp_path / "state", **kwargs))
    assert len(messages) == 1, messages
    assert messages[0].startswith(
        "This resume is not exact because the stream's shuffle buffer is seeded otherwise"
    )
    assert ".shuffle(seed=..., buffer_size=...)" in messages[0]


class Noisy(IterableDataset):
    """A stream without state_dict that draws from torch's generator as it is read (augmentation)."""

    def __iter__(self):
        for inputs, target in make_tiny_dataset(NUM_SAMPLES):
            yield inputs + 0.1 * torch.randn(4), target


def test_a_stream_replayed_in_the_only_process_says_the_resume_is_exact(tmp_path):
    kwargs = {"max_num_train_steps": 100}
    expected = final_state(run(Noisy(), **kwargs))
    run(Noisy(), [SaveThenStop(tmp_path / "state")], **kwargs)
    scramble()
    messages = _warnings_of(
        lambda: assert_bitwise_equal(
            final_state(run(Noisy(), resume_from=tmp_path / "state", **kwargs)), expected
        )
    )
    assert len(messages) == 1, messages
    said = (
        f"loading again the batches the saved run had seen ({SAVED_AFTER}), because the iterable dataset"
        " Noisy has no"
    )
    assert said in messages[0], messages[0]
    assert "The resume is exact" in messages[0] and "may differ" not in messages[0]


def test_a_stream_replayed_on_two_processes_says_if_the_resume_is_exact(tmp_path):
    """A stream replayed on two processes says whether the resume is exact.

    Read in the main process, accelerate loads a batch ahead of the step: the draws of a stream that
    draws as it is read fall elsewhere in a replay. Before, the warning said they "may differ"."""
    out = tmp_path / "out"
    command = torchrun_command(Path(stream_resume_scenario.__file__).relative_to(REPO_ROOT), out)
    status, output = run_launch(command, tmp_path)
    assert status == 0, tail(output)
    for rank in range(2):
        results = json.loads((out / f"stream_rank{rank}.json").read_text())
        for case, result in results.items():
            assert len(result["warnings"]) == 1, (rank, case, result)
            said_exact = "The resume is exact" in result["warnings"][0]
            assert said_exact == result["exact"] == (case != "draws-in-the-main-process"), (
                rank,
                case,
                result,
            )
        inexact = results["draws-in-the-main-process"]["warnings"][0]
        assert inexact.startswith("This resume is not exact because the training data drew random numbers"), (
            inexact
        )
        assert "train_dataloader_kwargs={'num_workers': 1}" in inexact, inexact


@pytest.mark.parametrize("workers", [0, 2], ids=["in-the-main-process", "two-workers"])
def test_a_dataloader_that_a_second_train_call_reuses_is_set_up_once(workers):
    from pytorch_accelerated.trainer.data_position import SeededFetches

    dataset = Augmented()
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers)

    class ReusesItsDataloader(Trainer):
        def create_train_dataloader(self, batch_size, dataloader_kwargs):
            return loader

    model = torch.nn.Linear(4, 3)
    trainer = ReusesItsDataloader(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=()
    )
    for _ in range(2):
        trainer.train(dataset, num_epochs=1, per_device_batch_size=BATCH_SIZE)
        assert trainer._resume.train_data.replay_reason is None  # the second still skips, not replays
    if workers:  # seeded in the workers, wrapped once
        assert type(loader.dataset) is SeededFetches and loader.dataset.dataset is dataset
    else:  # fetched as plain PyTorch fetches
        assert loader.dataset is dataset and loader.collate_fn is torch.utils.data.default_collate
    assert type(loader.batch_sampler._batch_sampler) is torch.utils.data.BatchSampler


def test_datasets_that_cannot_draw_random_numbers_are_fetched_as_they_are():
    """A TensorDataset with the default collate, or a dataset declaring draws_random_numbers = False,
    costs nothing per batch: no seeded fetch is put in front of it."""

    class Declared(Augmented):
        draws_random_numbers = False

    for dataset in (make_tiny_dataset(NUM_SAMPLES), Declared()):
        trainer = run(dataset, num_epochs=1)
        assert trainer.train_dataloader.dataset is dataset
        assert trainer._resume.train_data.replay_reason is None  # still skipped at the sampler on resume


class UsersOwn(Dataset):
    """A user's own map-style dataset: ``(x[i], y[i])``, each sample flipped with probability 1/2
    drawn from ``augment``'s generator (none: plain); records what each load drew."""

    def __init__(self, augment: str | None = None, num_samples: int = NUM_SAMPLES):
        self.inputs, self.targets = make_tiny_dataset(num_samples).tensors
        self.augment = augment
        self.draws: list[tuple[int, bool]] = []

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        x = self.inputs[index]
        draw = {
            None: lambda: False,
            "torch": lambda: bool(torch.rand(()) < 0.5),
            "numpy": lambda: bool(np.random.rand() < 0.5),
            "python": lambda: random.random() < 0.5,
        }[self.augment]
        flip = draw()
        self.draws.append((index, flip))
        return (x.flip(-1) if flip else x), self.targets[index]


AUGMENTS = pytest.mark.parametrize(
    "augment", [None, "torch", "numpy", "python"], ids=["plain", "flip-torch", "flip-numpy", "flip-python"]
)


@AUGMENTS
@pytest.mark.parametrize("workers", [0, 2], ids=["in-the-main-process", "two-workers"])
def test_a_users_own_dataset_resumed_inside_an_epoch_ends_bitwise_equal(tmp_path, augment, workers):
    loader_kwargs = {"train_dataloader_kwargs": {"num_workers": workers}}
    expected = final_state(run(UsersOwn(augment), **loader_kwargs))
    run(UsersOwn(augment), [SaveThenStop(tmp_path / "state")], **loader_kwargs)
    scramble()
    resumed = run(UsersOwn(augment), resume_from=tmp_path / "state", **loader_kwargs)
    assert_bitwise_equal(final_state(resumed), expected)


@pytest.mark.parametrize("augment", ["torch", "numpy", "python"])
def test_main_process_augmentations_draw_what_plain_pytorch_draws(augment):
    """One process, num_workers=0: no generator is forked or seeded around a batch (that cost a fifth of
    an MLP step), so the dataset draws from the run's generators exactly as a plain DataLoader loop's does."""

    def draws_of(loop) -> list[tuple[int, bool]]:
        dataset = UsersOwn(augment)
        seed_everything(7)
        loop(dataset)
        return dataset.draws

    def plain(dataset):
        for _ in range(2):
            for _ in torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True):
                pass

    def with_the_trainer(dataset):
        with torch.random.fork_rng(devices=[]):
            model = torch.nn.Linear(4, 3)  # no dropout: the step draws nothing
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = Trainer(model, torch.nn.CrossEntropyLoss(), optimizer, callbacks=())
        trainer.train(dataset, num_epochs=2, per_device_batch_size=BATCH_SIZE)

    expected = draws_of(plain)
    assert len({flip for _, flip in expected}) == 2, "the flips should go both ways"
    assert draws_of(with_the_trainer) == expected, (
        "the Trainer's batches drew other numbers than a plain loop's"
    )


@AUGMENTS
def test_a_run_saved_with_workers_resumes_exactly_without_them(tmp_path, augment):
    """Workers seed each batch's fetch; so does the main process of a run resumed from their state."""
    with_workers = {"train_dataloader_kwargs": {"num_workers": 2}}
    expected = final_state(run(UsersOwn(augment), **with_workers))
    run(UsersOwn(augment), [SaveThenStop(tmp_path / "state")], **with_workers)
    scramble()
    in_the_main_process = {"train_dataloader_kwargs": {"num_workers": 0}}
    resumed = run(UsersOwn(augment), resume_from=tmp_path / "state", **in_the_main_process)
    assert_bitwise_equal(final_state(resumed), expected)


def test_resuming_in_workers_a_main_process_loaded_run_warns_once(tmp_path):
    run(UsersOwn("torch"), [SaveThenStop(tmp_path / "state")])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(UsersOwn("torch"), resume_from=tmp_path / "state", train_dataloader_kwargs={"num_workers": 2})
    messages = [str(w.message) for w in caught if "augmentations will differ" in str(w.message)]
    assert len(messages) == 1, [str(w.message) for w in caught]
    assert "loaded its batches in its main process" in messages[0] and "num_workers=0" in messages[0]


def test_a_state_saved_when_every_fetch_was_seeded_still_resumes_exactly(tmp_path):
    """Earlier versions seeded the fetches in the main process too (their states hold no word of it):
    a state of theirs (written by tests/core/seeded_fetches_state/make_state.py) is resumed with seeded
    fetches, ending where their uninterrupted run ended."""
    fixture = Path(__file__).parent / "seeded_fetches_state"
    shutil.copytree(fixture / "state", tmp_path / "state")
    scramble()
    resumed = run(UsersOwn("torch"), resume_from=tmp_path / "state")
    expected = torch.load(fixture / "uninterrupted.pt", weights_only=True)
    ended = {"weights": resumed.get_model().state_dict(), "optimizer": resumed.optimizer.state_dict()}
    assert_bitwise_equal(ended, expected)
