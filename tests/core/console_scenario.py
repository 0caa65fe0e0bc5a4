"""A short training run whose console output ``test_default_callbacks.py`` reads back, written
to a file or to a terminal (a pty) by the test that starts it::

    python tests/core/console_scenario.py

Two epochs of the tiny model with the default callbacks, the progress bar redrawn (or, in a
file, a line written) at every update, and a dozen metrics recorded every epoch.
"""

from __future__ import annotations

import torch

from pytorch_accelerated.trainer import (
    MoveModulesToDeviceCallback,
    PrintMetricsCallback,
    ProgressBarCallback,
    TerminateOnNaNCallback,
    Trainer,
    TrainerCallback,
)
from pytorch_accelerated.trainer.testing import make_tiny_dataset, make_tiny_model

NUM_EXTRA_METRICS = 12


class ManyMetrics(TrainerCallback):
    def on_train_epoch_end(self, trainer, **kwargs):
        for index in range(NUM_EXTRA_METRICS):
            trainer.run_history.update_metric(f"some_metric_with_a_long_name_{index}", index / 7)


def main() -> None:
    torch.manual_seed(0)
    model = make_tiny_model()
    callbacks = [
        MoveModulesToDeviceCallback(),
        TerminateOnNaNCallback(),
        PrintMetricsCallback(),
        ProgressBarCallback(refresh_interval_s=0.0, file_refresh_interval_s=0.0),
        ManyMetrics(),
    ]
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=callbacks
    )
    trainer.train(
        make_tiny_dataset(64),
        num_epochs=2,
        eval_dataset=make_tiny_dataset(16, seed=1),
        per_device_batch_size=8,
    )


if __name__ == "__main__":
    main()
