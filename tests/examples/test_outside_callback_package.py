"""outside_callback_package/: a callback package written as someone outside this repository would
write it. Its own tests (made with the core's test kit) run here against the core of this checkout;
.ci/run also builds it and tests the installed wheel in a fresh environment with trainer-core alone."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import re
import zipfile
from pathlib import Path

import pytest

import pytorch_accelerated.trainer as core

PACKAGE = Path(__file__).resolve().parents[2] / "outside_callback_package"


def test_it_depends_on_trainer_core_only_and_owns_no_part_of_the_namespace():
    pyproject = (PACKAGE / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)\]", pyproject, flags=re.M | re.S).group(1)
    assert re.findall(r'"([^"]+)"', dependencies) == ["trainer-core>=0.2,<1"]
    assert not (PACKAGE / "src" / "pytorch_accelerated").exists()
    assert (PACKAGE / "src" / "trainer_callback_gradnorm" / "__init__.py").is_file()


def test_it_imports_only_the_public_interface_of_the_core():
    allowed_modules = {"pytorch_accelerated.trainer", "pytorch_accelerated.trainer.testing"}
    for source_file in PACKAGE.rglob("*.py"):
        tree = ast.parse(source_file.read_text(), filename=str(source_file))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("pytorch_accelerated")
            ):
                assert node.module in allowed_modules, f"{source_file} imports {node.module}"
                if node.module == "pytorch_accelerated.trainer":
                    for alias in node.names:
                        assert alias.name in core.__all__, (
                            f"{source_file} imports {alias.name}, not in the core's __all__"
                        )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("pytorch_accelerated") or alias.name in allowed_modules


def test_its_own_tests_pass_against_this_core(tmp_path):
    """Its tests, run the way its README says (its own pytest configuration; not this repository's
    conftest), with its source on the path in place of an installed wheel."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE / "src"), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(PACKAGE / "tests"),
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    assert f"rootdir: {PACKAGE}" in output
    assert " passed" in output and " skipped" not in output and "failed" not in output


def test_it_builds_a_wheel_of_its_own_package(tmp_path):
    pytest.importorskip(
        "hatchling",
        reason=(
            "hatchling (its build backend) is not installed in this environment; .ci/run builds the "
            "package with `python -m build` in a fresh environment instead"
        ),
    )
    build = "import sys, hatchling.build as backend; print(backend.build_wheel(sys.argv[1]))"
    completed = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path)], cwd=PACKAGE, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    wheel = tmp_path / completed.stdout.strip().splitlines()[-1]

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
    assert "trainer_callback_gradnorm/__init__.py" in names
    assert not any(name.startswith("pytorch_accelerated/") for name in names)
    requirements = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [line for line in requirements if "extra ==" not in line] == [
        "Requires-Dist: trainer-core<1,>=0.2"
    ]
