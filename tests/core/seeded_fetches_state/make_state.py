"""Writes this folder's fixture with the trainer-core of branch integ (commit 905baa3), whose fetches were
seeded around every batch also in the main process of one process: ``state/``, saved after 6 updates of
``test_resumable_data``'s run of ``UsersOwn("torch")`` (a random flip drawn from torch's generator), and
``uninterrupted.pt``, the weights and optimizer state that run ends with uninterrupted.

    git archive 905baa3 packages/trainer-core/src | tar -x -C /tmp/oldcore
    PYTHONPATH=/tmp/oldcore/packages/trainer-core/src:. python tests/core/seeded_fetches_state/make_state.py
"""

import shutil
from pathlib import Path

import torch

import pytorch_accelerated.trainer as core
from tests.core.test_resumable_data import SaveThenStop, UsersOwn, run

HERE = Path(__file__).parent


def main() -> None:
    assert "/tmp/oldcore/" in core.__file__, f"run it with the earlier trainer-core, not {core.__file__}"
    uninterrupted = run(UsersOwn("torch"))
    torch.save(
        {
            "weights": uninterrupted.get_model().state_dict(),
            "optimizer": uninterrupted.optimizer.state_dict(),
        },
        HERE / "uninterrupted.pt",
    )
    shutil.rmtree(HERE / "state", ignore_errors=True)
    run(UsersOwn("torch"), [SaveThenStop(HERE / "state")])


if __name__ == "__main__":
    main()
