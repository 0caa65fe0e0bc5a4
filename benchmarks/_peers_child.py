"""One timed run of one workload through one training loop; started by ``benchmarks/peers.py``.

Runs in a fresh interpreter, so that import time and peak memory belong to this variant alone.
Only the standard library is imported before the clock starts. torch is imported first, with
``torch._dynamo``, which torch 2.x imports anyway when the first optimizer is made (about a
second): that is the baseline every variant pays. The framework is imported next (timed), then
the data and model are built (same seeds for every variant), then the training objects are set
up (timed apart) and the fit call is timed. The result is one JSON object written to
``--result-file``.

This file must import nothing from this repository: the pytorch-accelerated variant runs it in
an environment where ``pytorch_accelerated`` is the PyPI distribution, not ours.

With ``--interleave``, a hand loop (its own model, same initial weights) runs one step before each
training batch the variant loads (``_interleaving.InterleavedDataset``), and the result holds both
loops' step times; the ``hand`` variant then measures the method's own bias (A/A).

    python benchmarks/_peers_child.py --variant trainer --workload mlp --result-file out.json
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("hand", "trainer", "pytorch-accelerated", "lightning", "pytorch-accelerated-defaults")

#: The workloads: the model, the batch size, gradient accumulation, and whether a CSV logger runs.
WORKLOADS = {
    "mlp": {"model": "mlp", "batch_size": 32, "accumulation": 1, "logger": False},
    "cnn": {"model": "cnn", "batch_size": 128, "accumulation": 1, "logger": False},
    "mlp-accum-log": {"model": "mlp", "batch_size": 32, "accumulation": 4, "logger": True},
    # the logger's own cost: "mlp" with a CSV logger every 10 updates, against a hand loop that logs
    # nothing, so that its ratio over mlp's is the logging overhead (issue 14: within 1%)
    "mlp-log10": {
        "model": "mlp",
        "batch_size": 32,
        "accumulation": 1,
        "logger": True,
        "log_every": 10,
        "hand_logs": False,
    },
    # the most common data: a user's own map-style Dataset class (_user_dataset.py), plain and with a flip
    "mlp-user": {"model": "mlp", "batch_size": 32, "accumulation": 1, "logger": False, "user_dataset": True},
    "mlp-user-flip": {
        "model": "mlp",
        "batch_size": 32,
        "accumulation": 1,
        "logger": False,
        "user_dataset": True,
        "augment": "torch",
    },
}

#: Per-step training losses are logged every this many optimizer updates (Lightning's default).
LOG_EVERY_N_UPDATES = 50
LEARNING_RATE = 1e-3


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


# ---------------------------------------------------------------------- models and data


def build_model(name: str):
    from torch import nn

    if name == "mlp":
        # The seed README's MNIST MLP (as in examples/quickstart_synthetic.py).
        class MNISTModel(nn.Module):
            def __init__(self):
                super().__init__()
                self.main = nn.Sequential(
                    nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
                )

            def forward(self, input):
                return self.main(input.view(input.shape[0], -1))

        return MNISTModel()
    if name == "cnn":
        # A small CIFAR-sized CNN: three conv blocks and a linear head (~0.1 M parameters).
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 10),
        )
    raise ValueError(name)


def make_dataset(model: str, num_samples: int, seed: int):
    """Noisy copies of ten fixed class prototypes (28x28x1 for the MLP, 32x32x3 for the CNN)."""
    import torch
    from torch.utils.data import TensorDataset

    shape = (1, 28, 28) if model == "mlp" else (3, 32, 32)
    prototypes = torch.rand(10, *shape, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (num_samples,), generator=generator)
    images = prototypes[labels] + 1.5 * torch.randn(num_samples, *shape, generator=generator)
    return TensorDataset(images, labels)


def mean_loss(model, dataset, batch_size: int) -> float:
    """The model's mean cross-entropy on ``dataset``: the same check for every variant."""
    import torch
    from torch.nn.functional import cross_entropy

    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            inputs, targets = dataset[start : start + batch_size]
            total += cross_entropy(model(inputs), targets, reduction="sum").item()
    return total / len(dataset)


# ---------------------------------------------------------------------- the variants
# Each ``setup_*`` builds the training objects and returns a function that runs the fit.


def import_hand(logger: bool) -> None:
    """Nothing beyond torch (and the standard library's csv, imported with the script)."""


def setup_hand(model, train_dataset, eval_dataset, spec, num_epochs, log_dir):
    """The careful hand-written loop (``_interleaving.HandLoop``): the loss stays on the device and
    is read once per epoch (and once per logged update); the same accumulation and logging as the
    Trainer's."""
    import torch
    from torch.utils.data import DataLoader

    from _interleaving import HandLoop

    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    log_path = Path(log_dir) / "metrics.csv" if spec["logger"] else None

    def fit():
        hand = HandLoop(
            model,
            optimizer,
            train_dataset,
            spec["batch_size"],
            spec["accumulation"],
            log_path,
            LOG_EVERY_N_UPDATES,
        )
        eval_dl = DataLoader(eval_dataset, batch_size=spec["batch_size"])
        for _ in range(num_epochs):
            hand.start_epoch()
            for _ in range(hand.num_batches):
                hand.train_step()
            model.eval()
            eval_total, eval_count = torch.zeros(()), 0
            with torch.no_grad():
                for inputs, targets in eval_dl:
                    eval_total += hand.loss_func(model(inputs), targets) * targets.size(0)
                    eval_count += targets.size(0)
            hand.write_row(
                train_loss_epoch=hand.epoch_train_loss(), eval_loss_epoch=eval_total.item() / eval_count
            )
        hand.close()

    return fit


def import_trainer(logger: bool) -> None:
    import pytorch_accelerated.trainer  # noqa: F401

    if logger:
        import pytorch_accelerated.callbacks  # noqa: F401


def setup_trainer(model, train_dataset, eval_dataset, spec, num_epochs, log_dir):
    """This repository's Trainer with its default callbacks (progress bar and printed metrics
    included), plus CSVLoggerCallback for the logger workload."""
    import torch
    from torch import nn

    from pytorch_accelerated.trainer import DEFAULT_CALLBACKS, Trainer

    callbacks = DEFAULT_CALLBACKS
    if spec["logger"]:
        from pytorch_accelerated.callbacks import CSVLoggerCallback

        csv_path = Path(log_dir) / "metrics.csv"
        callbacks = (
            *DEFAULT_CALLBACKS,
            CSVLoggerCallback(csv_path, log_every_n_steps=spec.get("log_every", LOG_EVERY_N_UPDATES)),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    trainer = Trainer(model, loss_func=nn.CrossEntropyLoss(), optimizer=optimizer, callbacks=callbacks)

    def fit():
        trainer.train(
            train_dataset,
            num_epochs=num_epochs,
            eval_dataset=eval_dataset,
            per_device_batch_size=spec["batch_size"],
            gradient_accumulation_steps=spec["accumulation"],
        )

    return fit


def import_pytorch_accelerated(logger: bool) -> None:
    import pytorch_accelerated  # noqa: F401  (its __init__ imports the trainer and seeds every RNG)


def setup_pytorch_accelerated(model, train_dataset, eval_dataset, spec, num_epochs, log_dir, num_workers=0):
    """pytorch-accelerated (PyPI) with its default callbacks; its loaders get ``num_workers=0``
    (like every other variant) unless ``num_workers`` is None (its default: os.cpu_count())."""
    import torch
    from torch import nn

    from pytorch_accelerated import Trainer
    from pytorch_accelerated.callbacks import TrainerCallback
    from pytorch_accelerated.trainer import DEFAULT_CALLBACKS

    class CSVLoggerCallback(TrainerCallback):
        """A minimal CSV logger against pytorch-accelerated's callback API (it ships none): the
        epoch losses once per epoch, and the training loss of every 50th optimizer update."""

        def __init__(self, path, log_every_n_updates):
            self.path, self.every = path, log_every_n_updates
            self.file = self.writer = None
            self.batches = 0
            self.window_loss = None

        def on_training_run_start(self, trainer, **kwargs):
            self.file = open(self.path, "w", newline="", encoding="utf-8")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["epoch", "step", "train_loss_step", "train_loss_epoch", "eval_loss_epoch"])

        def on_train_step_end(self, trainer, batch_output, **kwargs):
            accumulation = trainer.run_config.gradient_accumulation_steps
            self.batches += 1
            update = -(-self.batches // accumulation)
            if update % self.every == 0:
                # pytorch-accelerated has already divided the loss by the accumulation steps.
                loss = batch_output["loss"].detach()
                self.window_loss = loss if self.window_loss is None else self.window_loss + loss
                if self.batches % accumulation == 0:
                    self.writer.writerow(
                        [trainer.run_history.current_epoch, update, self.window_loss.item(), "", ""]
                    )
                    self.file.flush()
                    self.window_loss = None

        def on_training_run_epoch_end(self, trainer, **kwargs):
            history = trainer.run_history
            row = [history.current_epoch, self.batches // trainer.run_config.gradient_accumulation_steps, ""]
            row += [history.get_latest_metric(name) for name in ("train_loss_epoch", "eval_loss_epoch")]
            self.writer.writerow(row)
            self.file.flush()

        def on_training_run_end(self, trainer, **kwargs):
            self.file.close()

    callbacks = DEFAULT_CALLBACKS
    if spec["logger"]:
        callbacks = (
            *DEFAULT_CALLBACKS,
            CSVLoggerCallback(Path(log_dir) / "metrics.csv", LOG_EVERY_N_UPDATES),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    trainer = Trainer(model, loss_func=nn.CrossEntropyLoss(), optimizer=optimizer, callbacks=callbacks)
    loader_kwargs = None if num_workers is None else {"num_workers": num_workers}

    def fit():
        trainer.train(
            train_dataset=train_dataset,
            num_epochs=num_epochs,
            eval_dataset=eval_dataset,
            per_device_batch_size=spec["batch_size"],
            gradient_accumulation_steps=spec["accumulation"],
            train_dataloader_kwargs=loader_kwargs,
            eval_dataloader_kwargs=loader_kwargs,
        )

    return fit


def setup_pytorch_accelerated_defaults(*args):
    return setup_pytorch_accelerated(*args, num_workers=None)


def import_lightning(logger: bool) -> None:
    import lightning  # noqa: F401


def setup_lightning(model, train_dataset, eval_dataset, spec, num_epochs, log_dir):
    """Lightning: a LightningModule around the same model, logging its epoch losses with
    ``self.log`` (and the step loss to CSVLogger for the logger workload); its default
    callbacks and progress bar, with checkpointing and the model summary off."""
    import lightning as L
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    log_steps = spec["logger"]

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model
            self.loss_func = nn.CrossEntropyLoss()

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            loss = self.loss_func(self.model(inputs), targets)
            self.log("train_loss", loss, on_step=log_steps, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            inputs, targets = batch
            self.log("eval_loss", self.loss_func(self.model(inputs), targets), on_epoch=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)

    logger = False
    if spec["logger"]:
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(save_dir=log_dir, name="lightning")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=num_epochs,
        accumulate_grad_batches=spec["accumulation"],
        log_every_n_steps=LOG_EVERY_N_UPDATES,
        enable_progress_bar=True,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=log_dir,
    )
    module = Module()

    def fit():
        train_dl = DataLoader(train_dataset, batch_size=spec["batch_size"], shuffle=True)
        eval_dl = DataLoader(eval_dataset, batch_size=spec["batch_size"])
        trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=eval_dl)

    return fit


# ---------------------------------------------------------------------- the run

INTERLEAVED_WARM_UP_STEPS = {"mlp": 50, "cnn": 3}  # left out: allocator and caches warming up


def interleaved_with_a_hand_loop(train_dataset, model, spec, log_dir):
    """``train_dataset``, running a step of a hand loop (on a copy of ``model``) before each batch."""
    import torch

    from _interleaving import HandLoop, InterleavedDataset

    hand_model = build_model(spec["model"])
    hand_model.load_state_dict(model.state_dict())
    log_path = (
        Path(log_dir) / "hand-interleaved.csv" if spec["logger"] and spec.get("hand_logs", True) else None
    )
    optimizer = torch.optim.Adam(hand_model.parameters(), lr=LEARNING_RATE)
    hand = HandLoop(
        hand_model,
        optimizer,
        train_dataset,
        spec["batch_size"],
        spec["accumulation"],
        log_path,
        LOG_EVERY_N_UPDATES,
    )
    return InterleavedDataset(train_dataset, hand)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--num-train-samples", type=int, required=True)
    parser.add_argument("--num-epochs", type=int, default=2)
    parser.add_argument("--result-file", required=True)
    parser.add_argument(
        "--interleave", action="store_true", help="time the training steps against a hand loop's, interleaved"
    )
    args = parser.parse_args(argv)
    spec = WORKLOADS[args.workload]
    suffix = args.variant.replace("-", "_")

    start = time.perf_counter()
    import torch
    import torch._dynamo  # noqa: F401  (torch imports it anyway, at the first optimizer made)

    torch_import_s = time.perf_counter() - start
    torch.set_num_threads(1)
    start = time.perf_counter()
    globals()[f"import_{suffix.removesuffix('_defaults')}"](spec["logger"])
    import_s = time.perf_counter() - start

    # pytorch-accelerated seeds every RNG when imported: seed after the imports, for everyone.
    train_dataset = make_dataset(spec["model"], args.num_train_samples, seed=1)
    eval_dataset = eval_tensors = make_dataset(spec["model"], args.num_train_samples // 6, seed=2)
    if spec.get("user_dataset"):
        from _user_dataset import user_dataset  # imports torch: after the clock

        train_dataset = user_dataset(train_dataset, augment=spec.get("augment"))
        eval_dataset = user_dataset(eval_dataset)
    torch.manual_seed(0)
    model = build_model(spec["model"])
    rss_before_setup = peak_rss_mib()

    with tempfile.TemporaryDirectory() as log_dir:
        if args.interleave:
            train_dataset = interleaved_with_a_hand_loop(train_dataset, model, spec, log_dir)
        start = time.perf_counter()
        fit = globals()[f"setup_{suffix}"](model, train_dataset, eval_dataset, spec, args.num_epochs, log_dir)
        setup_s = time.perf_counter() - start
        torch.manual_seed(0)  # the shuffling order: the same for every variant
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fit()
        fit_s, fit_cpu_s = time.perf_counter() - start_wall, time.process_time() - start_cpu
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        logged_rows = None
        if spec["logger"]:
            csv_files = list(Path(log_dir).rglob("*.csv"))
            logged_rows = sum(len(path.read_text().splitlines()) - 1 for path in csv_files)

    num_batches = -(-len(train_dataset) // spec["batch_size"])
    result = {
        "variant": args.variant,
        "workload": args.workload,
        "python": sys.executable,
        "torch": torch.__version__,
        "torch_import_s": torch_import_s,
        "import_s": import_s,
        "setup_s": setup_s,
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "train_steps": num_batches * args.num_epochs,
        "step_ms": 1000 * fit_s / (num_batches * args.num_epochs),
        "rss_before_setup_mib": rss_before_setup,
        "peak_rss_mib": peak_rss_mib(),
        "final_eval_loss": mean_loss(model, eval_tensors, 512),
        "logged_rows": logged_rows,
        "num_threads": torch.get_num_threads(),
        # Diagnostics of the fit call: page faults, and how often the process was preempted.
        "fit_minor_faults": usage_after.ru_minflt - usage_before.ru_minflt,
        "fit_involuntary_switches": usage_after.ru_nivcsw - usage_before.ru_nivcsw,
        "fit_system_s": usage_after.ru_stime - usage_before.ru_stime,
    }
    if args.interleave:
        from _interleaving import summarize  # imports torch: never before the clock starts

        result["interleaved"] = summarize(
            *train_dataset.step_times(skip=INTERLEAVED_WARM_UP_STEPS[spec["model"]])
        )
    Path(args.result_file).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
