"""One process for ``test_faults.py``'s signal tests: a run with SaveTrainingStateCallback ends
in one of several ways, then the process sends itself SIGTERM, which must end it (the handlers
the callback installed are gone), unless the scenario says otherwise.

    python tests/callbacks/signal_scenario.py SCENARIO SAVE_DIR

``crash``: the run raises (the script catches it); ``two``: two callbacks, a normal end;
``twice``: the same callback's run events fire twice (as if listed twice), a normal end;
``twice-signalled``: the same, and SIGTERM is sent twice during training: the second one must
end the process as SIGTERM does (no RecursionError).
"""

from __future__ import annotations

import os
import signal
import sys

import torch

from pytorch_accelerated.callbacks import SaveTrainingStateCallback
from pytorch_accelerated.trainer import Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import make_tiny_dataset

from helpers import Crash, CrashAtUpdate  # beside this script


class AlsoRunsEventsOf(TrainerCallback):
    """Fires ``callback``'s run events a second time: what listing the same instance twice does."""

    def __init__(self, callback):
        self.callback = callback

    def on_training_run_start(self, trainer, **kwargs):
        self.callback.on_training_run_start(trainer, **kwargs)

    def on_training_run_end(self, trainer, **kwargs):
        self.callback.on_training_run_end(trainer, **kwargs)

    def on_training_run_error(self, trainer, error, **kwargs):
        self.callback.on_training_run_error(trainer, error, **kwargs)


class SignalsTwice(TrainerCallback):
    def on_train_step_end(self, trainer, **kwargs):
        if trainer.completed_update_steps == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)


def main(scenario: str, save_dir: str) -> None:
    handled = (signal.SIGTERM, signal.SIGINT)
    before = {number: signal.getsignal(number) for number in handled}
    saver = SaveTrainingStateCallback(save_dir, save_every_n_steps=2)
    callbacks = {
        "crash": [saver, CrashAtUpdate(2)],
        "two": [saver, SaveTrainingStateCallback(f"{save_dir}-2", save_every_n_steps=3)],
        "twice": [saver, AlsoRunsEventsOf(saver)],
        "twice-signalled": [saver, AlsoRunsEventsOf(saver), SignalsTwice()],
    }[scenario]
    model = torch.nn.Linear(4, 3)
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=callbacks
    )
    try:
        trainer.train(make_tiny_dataset(40), num_epochs=2, per_device_batch_size=8)
    except Crash:
        print("train() raised; caught", flush=True)
    after = {number: signal.getsignal(number) for number in handled}
    print("handlers restored" if after == before else f"handlers left behind: {after}", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("still running after SIGTERM", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
