"""pytorch-accelerated 0.1.61's names read the way its users wrote them: the modules that
``import pytorch_accelerated`` made attributes, and the names its modules re-exported from each other
(MIGRATING.md's table, checked by test_migrating.py, lists each one; trainer-core installed alone is
in test_install_modes.py)."""

import subprocess
import sys

from pytorch_accelerated.callbacks import LimitBatchesCallback, LogMetricsCallback, PrintProgressCallback


def test_import_pytorch_accelerated_gives_0161s_modules_as_attributes_without_importing_torch():
    code = (
        "import sys, pytorch_accelerated as p\n"
        "assert 'torch' not in sys.modules, 'imported torch eagerly'\n"
        "from pytorch_accelerated.trainer import Trainer\n"
        "assert p.trainer.Trainer is Trainer and p.tracking.LossTracker and p.run_config.TrainerRunConfig\n"
        "assert p.utils.remove_padding and p.callbacks.EarlyStoppingCallback\n"
        "assert p.__all__ == ['Trainer', 'TrainerPlaceholderValues', 'notebook_launcher']\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_trainer_module_re_exports_0161s_callbacks_and_helpers():
    import pytorch_accelerated.trainer as trainer_module
    from pytorch_accelerated.trainer import LimitBatchesCallback as from_trainer
    from pytorch_accelerated.trainer import LossTracker, remove_padding, worker_init_fn
    from pytorch_accelerated import tracking, utils

    assert from_trainer is LimitBatchesCallback
    assert trainer_module.LogMetricsCallback is LogMetricsCallback
    assert trainer_module.PrintProgressCallback is PrintProgressCallback
    assert LossTracker is tracking.LossTracker
    assert (remove_padding, worker_init_fn) == (utils.remove_padding, utils.worker_init_fn)
    assert "LossTracker" not in trainer_module.__all__, "0.1.61's names, not the interface plug-ins build on"
