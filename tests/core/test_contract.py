"""The contract plug-in packages build on: pinned names and signatures, the namespace, the import rule.

Changing anything pinned here is a deliberate, versioned act: bump trainer-core's version and
record the change in packages/trainer-core/CHANGELOG.md.
"""

import ast
import inspect
from pathlib import Path

import pytorch_accelerated.trainer as core
from pytorch_accelerated.trainer import EVENT_SYNONYMS, TRAINER_EVENTS, Trainer, TrainerCallback
from pytorch_accelerated.trainer.testing import run_tiny_training

REPO = Path(__file__).resolve().parents[2]

TRAINER_METHODS = {
    "train": (
        "(self, train_dataset, num_epochs, eval_dataset=None, per_device_batch_size=8,"
        " max_num_train_steps=None, gradient_accumulation_steps=1, gradient_clip_value=None,"
        " gradient_clip_norm=None, create_scheduler_fn=None, collate_fn=None, train_dataloader_kwargs=None,"
        " eval_dataloader_kwargs=None, reset_run_history=True, resume_from=None)"
    ),
    "evaluate": (
        "(self, dataset=None, per_device_batch_size=None, dataloader_kwargs=None, collate_fn=None,"
        " metric_prefix='')"
    ),
    "predict": "(self, dataset, per_device_batch_size=8, collate_fn=None, dataloader_kwargs=None)",
    "create_accelerator": "(self)",
    "create_train_dataloader": "(self, batch_size, dataloader_kwargs)",
    "create_eval_dataloader": "(self, batch_size, dataloader_kwargs)",
    "create_scheduler": "(self)",
    "training_run_start": "(self)",
    "train_epoch_start": "(self)",
    "calculate_train_batch_loss": "(self, batch)",
    "backward_step": "(self, loss)",
    "clip_gradients": "(self)",
    "optimizer_step": "(self)",
    "scheduler_step": "(self)",
    "optimizer_zero_grad": "(self)",
    "train_epoch_end": "(self)",
    "eval_epoch_start": "(self)",
    "calculate_eval_batch_loss": "(self, batch)",
    "eval_epoch_end": "(self)",
    "training_run_epoch_end": "(self)",
    "training_run_end": "(self)",
    "evaluation_run_start": "(self)",
    "evaluation_run_end": "(self)",
    "calculate_batch_predictions": "(self, batch)",
    "save_checkpoint": "(self, save_path, checkpoint_kwargs=None, save_optimizer=True, save_scheduler=True)",
    "load_checkpoint": "(self, checkpoint_path, load_optimizer=True, load_scheduler=True)",
    "save_training_state": "(self, save_dir, checkpoint_kwargs=None, *, asynchronous=False)",
    "load_training_state": "(self, state_dir)",
    "get_model": "(self, keep_torch_compile=True)",
    "print": "(self, *args, **kwargs)",
    "gather": "(self, tensor)",
    "gather_for_metrics": "(self, data)",
    "reduce": "(self, tensor, reduction='sum')",
    "any_process": "(self, flag)",
    "num_real_samples": "(self, batch_size)",
    "request_epoch_end": "(self)",
    "wait_for_everyone": "(self)",
    "recorded_metric_names": "(self)",
    "evaluation_metric_names": "(self, name)",
}
CALLBACK_EVENTS = {
    "on_init_end": "(self, trainer, **kwargs)",
    "on_training_run_start": "(self, trainer, **kwargs)",
    "on_train_epoch_start": "(self, trainer, **kwargs)",
    "on_train_step_start": "(self, trainer, **kwargs)",
    "on_train_step_end": "(self, trainer, batch, batch_output, **kwargs)",
    "on_before_optimizer_step": "(self, trainer, optimizer, **kwargs)",
    "on_optimizer_step_end": "(self, trainer, optimizer, **kwargs)",
    "on_train_epoch_end": "(self, trainer, **kwargs)",
    "on_eval_epoch_start": "(self, trainer, **kwargs)",
    "on_eval_step_start": "(self, trainer, **kwargs)",
    "on_eval_step_end": "(self, trainer, batch, batch_output, **kwargs)",
    "on_eval_epoch_end": "(self, trainer, **kwargs)",
    "on_training_run_epoch_end": "(self, trainer, **kwargs)",
    "on_training_run_end": "(self, trainer, **kwargs)",
    "on_evaluation_run_start": "(self, trainer, **kwargs)",
    "on_evaluation_run_end": "(self, trainer, **kwargs)",
    "on_stop_training_error": "(self, trainer, stop_training_error, **kwargs)",
    "on_save_point": "(self, trainer, point, **kwargs)",
    "on_training_run_error": "(self, trainer, error, **kwargs)",
}
# TrainerCallback's public methods that are not events.
CALLBACK_METHODS = {
    "recorded_metric_names": "(self, trainer)",
    "state_dict": "(self)",
    "load_state_dict": "(self, state_dict)",
}
# The founding README's event names, each fired as the event it names here.
SYNONYMS = {
    "on_train_run_begin": "on_training_run_start",
    "on_train_run_end": "on_training_run_end",
    "on_train_epoch_begin": "on_train_epoch_start",
    "on_train_step_begin": "on_train_step_start",
    "on_eval_epoch_begin": "on_eval_epoch_start",
    "on_eval_step_begin": "on_eval_step_start",
}
INIT = (
    "(self, model, loss_func, optimizer, callbacks=(<class"
    " 'pytorch_accelerated.trainer.default_callbacks.MoveModulesToDeviceCallback'>, <class"
    " 'pytorch_accelerated.trainer.default_callbacks.TerminateOnNaNCallback'>, <class"
    " 'pytorch_accelerated.trainer.default_callbacks.PrintMetricsCallback'>, <class"
    " 'pytorch_accelerated.trainer.default_callbacks.ProgressBarCallback'>), run_history=None,"
    " accelerator_kwargs=None)"
)

PUBLIC_NAMES = [
    "Trainer",
    "TrainerCallback",
    "CallbackHandler",
    "StopTrainingError",
    "TRAINER_EVENTS",
    "EVENT_SYNONYMS",
    "TrainerPlaceholderValues",
    "TrainerRunConfig",
    "RunHistory",
    "InMemoryRunHistory",
    "MetricRecord",
    "RunPosition",
    "RunningLoss",
    "CheckpointError",
    "atomic_torch_save",
    "safe_torch_load",
    "check_plain_data",
    "find_latest_training_state",
    "list_training_states",
    "remove_training_state",
    "DEFAULT_CALLBACKS",
    "MoveModulesToDeviceCallback",
    "TerminateOnNaNCallback",
    "PrintMetricsCallback",
    "ProgressBarCallback",
    "format_metric_value",
    "seed_everything",
    "raised_on_every_process",
    "testing",
]


def _bare_signature(function) -> str:
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty))


def test_public_names_are_pinned_and_importable():
    assert core.__all__ == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        assert getattr(core, name) is not None


def test_trainer_constructor_is_pinned():
    assert _bare_signature(Trainer.__init__) == INIT


def test_trainer_hooks_and_methods_are_pinned():
    public = {
        name: _bare_signature(value)
        for name, value in vars(Trainer).items()
        if callable(value) and not name.startswith("_")
    }
    assert public == TRAINER_METHODS


def test_callback_events_are_pinned_in_order():
    assert list(TRAINER_EVENTS) == list(CALLBACK_EVENTS)
    assert {
        name: _bare_signature(getattr(TrainerCallback, name)) for name in TRAINER_EVENTS
    } == CALLBACK_EVENTS


def test_callback_methods_beyond_the_events_are_pinned():
    public = {
        name: _bare_signature(value)
        for name, value in vars(TrainerCallback).items()
        if callable(value) and not name.startswith(("_", "on_"))
    }
    assert public == CALLBACK_METHODS


def test_event_synonyms_are_pinned():
    assert EVENT_SYNONYMS == SYNONYMS
    assert set(SYNONYMS.values()) <= set(TRAINER_EVENTS)


def test_each_synonym_fires_with_its_events_arguments_in_the_same_order():
    """Each synonym fires with the arguments of its event in the same order."""
    calls = []

    def recorder(name):
        def record(self, trainer, *args, **kwargs):
            calls.append((name, args, sorted(kwargs)))

        return record

    # one callback under the founding names, one under today's: the two must see the same calls
    Founding = type("Founding", (TrainerCallback,), {name: recorder(name) for name in SYNONYMS})
    Current = type("Current", (TrainerCallback,), {name: recorder(name) for name in SYNONYMS.values()})
    run_tiny_training(callbacks=[Founding(), Current()], num_epochs=2)

    founding = [(SYNONYMS[name], args, kwargs) for name, args, kwargs in calls if name in SYNONYMS]
    current = [call for call in calls if call[0] not in SYNONYMS]
    assert founding == current
    assert {name for name, _, _ in current} == set(SYNONYMS.values())
    for event in ("on_train_step_start", "on_eval_step_start"):
        assert sum(name == event for name, _, _ in current) > 2


def test_every_event_accepts_future_keyword_arguments():
    for name in TRAINER_EVENTS:
        kinds = [p.kind for p in inspect.signature(getattr(TrainerCallback, name)).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD in kinds, name


def test_only_trainer_core_ships_the_namespace_init_and_all_are_typed():
    """Only trainer-core ships the shared package ``__init__``, and every subpackage is typed."""
    for package in (REPO / "packages").iterdir():
        namespace = package / "src" / "pytorch_accelerated"
        if namespace.exists():
            ships_init = (namespace / "__init__.py").exists()
            assert ships_init == (package.name == "trainer-core"), (
                f"{package.name}: pytorch_accelerated/__init__.py"
            )
            for subpackage in namespace.iterdir():
                if subpackage.is_dir() and subpackage.name != "__pycache__":
                    assert (subpackage / "py.typed").exists(), f"{subpackage} has no py.typed"
                elif package.name != "trainer-core":
                    assert subpackage.is_dir(), (
                        f"{package.name} writes the module {subpackage.name} into pytorch_accelerated"
                    )


def test_the_shared_package_init_only_extends_its_path_and_exports_lazily():
    init = REPO / "packages/trainer-core/src/pytorch_accelerated/__init__.py"
    tree = ast.parse(init.read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"os", "sys", "importlib", "importlib.metadata", "import_module", "version", None}
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
    }
    assert assigned == {"__path__", "_LAZY_EXPORTS", "__all__"}


def test_importing_the_namespace_is_light_and_exports_0161s_names():
    """Importing ``pytorch_accelerated`` imports nothing heavy and exports 0.1.61's names."""
    import subprocess
    import sys

    code = (
        "import sys, pytorch_accelerated as p; assert not {'torch', 'accelerate',"
        " 'pytorch_accelerated.trainer'} & set(sys.modules), 'imported eagerly'; from pytorch_accelerated"
        " import Trainer, TrainerPlaceholderValues, notebook_launcher; import pytorch_accelerated.trainer as"
        " core, accelerate; assert Trainer is core.Trainer and TrainerPlaceholderValues is"
        " core.TrainerPlaceholderValues; assert notebook_launcher is accelerate.notebook_launcher and"
        " p.__version__ == core.__version__; assert sorted(p.__all__) == ['Trainer',"
        " 'TrainerPlaceholderValues', 'notebook_launcher']; import pytorch_accelerated.callbacks,"
        " pytorch_accelerated.metrics"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_two_distributions_write_into_the_same_subpackage():
    owners = {}
    for package in (REPO / "packages").iterdir():
        namespace = package / "src" / "pytorch_accelerated"
        for subpackage in namespace.iterdir() if namespace.exists() else ():
            if subpackage.name == "__pycache__":
                continue
            assert subpackage.name not in owners, (
                f"{subpackage.name} is in {owners.get(subpackage.name)} and {package.name}"
            )
            owners[subpackage.name] = package.name


def _core_imports(source_file: Path):
    tree = ast.parse(source_file.read_text(), filename=str(source_file))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("pytorch_accelerated.trainer")
        ):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pytorch_accelerated.trainer"):
                    yield alias.name, []


def test_plugin_packages_import_only_the_public_interface_of_the_core():
    allowed_modules = {"pytorch_accelerated.trainer", "pytorch_accelerated.trainer.testing"}
    for package in (REPO / "packages").iterdir():
        if package.name == "trainer-core":
            continue
        for source_file in package.rglob("*.py"):
            for module, names in _core_imports(source_file):
                assert module in allowed_modules, f"{source_file} imports the private module {module}"
                for name in names:
                    assert not name.startswith("_"), f"{source_file} imports the private name {name}"
                    if module == "pytorch_accelerated.trainer":
                        assert name in PUBLIC_NAMES, (
                            f"{source_file} imports {name}, not in the core's __all__"
                        )


def test_importing_the_core_seeds_nothing():
    import subprocess
    import sys

    code = (
        "import random, torch; torch.manual_seed(123); random.seed(123); "
        "a = (torch.rand(1).item(), random.random()); torch.manual_seed(123); random.seed(123); "
        "import pytorch_accelerated.trainer; b = (torch.rand(1).item(), random.random()); "
        "assert a == b, (a, b)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
