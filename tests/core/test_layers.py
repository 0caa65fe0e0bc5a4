"""trainer-core's layers, one way only (docs/architecture.md draws them): leaves import no module above
them and never the Trainer, not even for types; collaborators take the parts they need; trainer.py is on
top; and nothing outside trainer.py touches a private member of the Trainer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "packages/trainer-core/src/pytorch_accelerated/trainer"

LEAVES = {
    "_arguments",
    "_warnings",
    "safe_files",
    "running_loss",
    "run_history",
    "position",
    "accumulation",
    "random_state",
    "state_format",
    "async_saving",
    "data_position",
    "_data",
    "_checks",
    "_forward_inputs",
    "_removed_hooks",
    "_accelerate_state",
    "_sharding",
    "seeding",
    "run_config",
    "callbacks",
    "default_callbacks",
    "process_change",
}
COLLABORATORS = {
    "agreement",
    "checkpointing",
    "resuming",
    "warm_start",
    "_dataloaders",
    "dataloader_workers",
    "_preparation",
    "_prediction",
    "_evaluation",
    "_process_group",
    "sharded_state",
}
LAYERS = [LEAVES, COLLABORATORS, {"trainer"}, {"testing", "__init__"}]


def _layer_of(module: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if module in layer)


def _core_modules_imported_by(path: Path) -> set[str]:
    """Every trainer-core module ``path`` imports anywhere in it (type-checking and function-level imports
    included)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                imported.add(node.module.split(".")[0])
            else:
                imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "pytorch_accelerated.trainer."
        ):
            imported.add(node.module.split(".")[2])
    return imported


def test_every_core_module_has_a_layer():
    modules = {path.stem for path in CORE.glob("*.py")}
    unplaced = modules - set().union(*LAYERS)
    assert not unplaced, (
        f"place these modules in a layer here and in docs/architecture.md: {sorted(unplaced)}"
    )


@pytest.mark.parametrize("layer", range(len(LAYERS)), ids=["leaves", "collaborators", "trainer", "kit"])
def test_a_core_module_imports_nothing_above_its_layer(layer):
    wrong = {}
    for module in LAYERS[layer]:
        above = {
            imported
            for imported in _core_modules_imported_by(CORE / f"{module}.py")
            if _layer_of(imported) > layer
        }
        if above:
            wrong[module] = sorted(above)
    assert not wrong, f"modules importing a layer above their own (dependencies go one way): {wrong}"


def _private_trainer_accesses(path: Path) -> list[str]:
    """``trainer._x`` / ``self.trainer._x`` / ``trainer.<attr>._x`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            while isinstance(owner, ast.Attribute) and owner.attr != "trainer":
                owner = owner.value
            names_trainer = (isinstance(owner, ast.Name) and owner.id == "trainer") or (
                isinstance(owner, ast.Attribute) and owner.attr == "trainer"
            )
            if names_trainer:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_nothing_outside_trainer_py_touches_a_private_trainer_member():
    sources = [path for path in (REPO / "packages").rglob("*.py") if path != CORE / "trainer.py"]
    accesses = [access for path in sources for access in _private_trainer_accesses(path)]
    assert not accesses, f"private Trainer members read outside trainer.py (grow a public name): {accesses}"


def test_the_private_access_check_sees_one(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f(trainer, self):\n    return trainer._position, self.trainer.model._x,"
        " trainer.accelerator.state\n"
    )
    assert [access.split()[-1] for access in _private_trainer_accesses(probe)] == ["._position", "._x"]
