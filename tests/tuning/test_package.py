"""trainer-tuning is a plug-in package like the others: the dependency rule's test covers it."""

import tomllib
from pathlib import Path

from tests.core import test_contract

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "packages" / "trainer-tuning"


def test_it_builds_on_the_core_public_interface_only():
    sources = list(PACKAGE.rglob("*.py"))
    assert any(path.name == "lr_finder.py" for path in sources)
    imports = [
        name for source in sources for module, names in test_contract._core_imports(source) for name in names
    ]
    assert "Trainer" in imports and set(imports) <= set(test_contract.PUBLIC_NAMES)
    test_contract.test_plugin_packages_import_only_the_public_interface_of_the_core()


def test_its_metadata_pins_the_core_range_and_not_torch():
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert "trainer-core>=0.3,<1" in project["dependencies"]
    assert not any(dep.startswith("torch") for dep in project["dependencies"])
    assert not (PACKAGE / "src" / "pytorch_accelerated" / "__init__.py").exists()
    assert (PACKAGE / "src" / "pytorch_accelerated" / "tuning" / "py.typed").exists()
    assert "trainer-tuning" in (REPO / "hatch.toml").read_text()
