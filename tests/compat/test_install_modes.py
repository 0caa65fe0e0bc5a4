"""``from pytorch_accelerated import Trainer`` with trainer-core installed, and the subpackages of
other distributions found beside it, in each way they can be installed: from wheels (into one
site directory, or into two), editable (hatchling's editable wheels put the project's ``src`` on
``sys.path`` with a ``.pth`` file) and mixed. The hatch workspace is the environment these tests
run in (see test_contract.py); `.ci/run` repeats the wheel and editable cases with pip in fresh
virtual environments.

Each case runs a fresh interpreter with ``-S`` (so this environment's own editable ``.pth``
files are not read) and only the site directories of the case added.
"""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"core": REPO / "packages/trainer-core", "callbacks": REPO / "packages/trainer-callbacks"}
# torch, accelerate and the rest of the dependencies, without this environment's .pth files
DEPENDENCIES = sysconfig.get_paths()["purelib"]

CHECK = r"""
import importlib.util, json, site, sys
for folder in sys.argv[2:]:
    site.addsitedir(folder)  # reads the folder's .pth files, as the interpreter does for site-packages
import pytorch_accelerated
assert "torch" not in sys.modules, "import pytorch_accelerated imported torch"
found = {name: getattr(importlib.util.find_spec("pytorch_accelerated." + name), "origin", None)
         for name in ("trainer", "callbacks", "schedulers", "metrics")}
if sys.argv[1] == "full":
    from pytorch_accelerated import Trainer
    from pytorch_accelerated.callbacks import EarlyStoppingCallback, LogMetricsCallback
    import pytorch_accelerated.trainer as core
    assert Trainer is core.Trainer
print(json.dumps({"init": pytorch_accelerated.__file__, **found}))
"""


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    built = {}
    for key, project in PACKAGES.items():
        name = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from hatchling.build import build_wheel; print(build_wheel({str(out)!r}))",
            ],
            cwd=project,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        built[key] = out / name
    return built


def _install_wheel(wheel: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:  # a pure-Python wheel installs by unpacking
        archive.extractall(folder)
    return folder


def _install_editable(key: str, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / f"_{key}_editable.pth").write_text(f"{PACKAGES[key] / 'src'}\n")
    return folder


def _check(folders: list[Path], mode: str = "paths") -> dict:
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHECK, mode, *map(str, folders)],
        env={**os.environ, "PYTHONPATH": DEPENDENCIES, "OMP_NUM_THREADS": "1"},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


def _under(path: str | None, folder: Path) -> bool:
    return path is not None and Path(path).is_relative_to(folder)


def test_wheels_in_one_site_directory(wheels, tmp_path):
    site_dir = tmp_path / "site"
    for wheel in wheels.values():
        _install_wheel(wheel, site_dir)
    found = _check([site_dir], mode="full")
    assert (
        _under(found["init"], site_dir)
        and _under(found["callbacks"], site_dir)
        and _under(found["trainer"], site_dir)
    )
    assert found["metrics"] is None  # not installed: nothing leaks in from the repository


def test_wheels_in_two_site_directories_the_plugin_first_on_the_path(wheels, tmp_path):
    callbacks_dir = _install_wheel(wheels["callbacks"], tmp_path / "user")
    core_dir = _install_wheel(wheels["core"], tmp_path / "venv")
    found = _check([callbacks_dir, core_dir])
    assert _under(found["init"], core_dir)
    assert _under(found["callbacks"], callbacks_dir) and _under(found["schedulers"], callbacks_dir)


def test_editable_installs(tmp_path):
    site_dir = tmp_path / "site"
    for key in PACKAGES:
        _install_editable(key, site_dir)
    found = _check([site_dir], mode="full")
    assert _under(found["init"], PACKAGES["core"] / "src")
    assert _under(found["callbacks"], PACKAGES["callbacks"] / "src")
    assert found["metrics"] is None


@pytest.mark.parametrize("editable", ["core", "callbacks"])
def test_one_editable_and_one_from_a_wheel(wheels, tmp_path, editable):
    site_dir = tmp_path / "site"
    other = "callbacks" if editable == "core" else "core"
    _install_wheel(wheels[other], site_dir)
    _install_editable(editable, site_dir)
    found = _check([site_dir])
    owner = {"core": "init", "callbacks": "callbacks"}
    assert _under(found[owner[editable]], PACKAGES[editable] / "src")
    assert _under(found[owner[other]], site_dir)


CORE_ALONE = r"""
import site, sys
site.addsitedir(sys.argv[1])
import pytorch_accelerated
from pytorch_accelerated.trainer import LossTracker, remove_padding  # kept in trainer-core: they import
try:
    from pytorch_accelerated.trainer import LimitBatchesCallback
except ImportError as error:
    print("trainer:", error)
try:
    pytorch_accelerated.callbacks
except AttributeError as error:
    print("package:", error)
"""


def test_with_core_alone_0161_plugin_names_say_which_package_to_install(tmp_path):
    """With trainer-core alone, 0.1.61's plugin names say which package to install."""
    site_dir = _install_editable("core", tmp_path / "site")
    result = subprocess.run(
        [sys.executable, "-S", "-c", CORE_ALONE, str(site_dir)],
        env={**os.environ, "PYTHONPATH": DEPENDENCIES, "OMP_NUM_THREADS": "1"},
        check=True,
        capture_output=True,
        text=True,
    )
    trainer_line, package_line = result.stdout.splitlines()
    assert trainer_line.startswith("trainer: pytorch_accelerated.trainer.LimitBatchesCallback (pytorch-accel")
    assert "pip install trainer-callbacks, then import it from pytorch_accelerated.callbacks" in trainer_line
    assert package_line.endswith("callbacks is not installed: pip install trainer-callbacks")
