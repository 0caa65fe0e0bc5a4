"""The root README as a newcomer reads it: its quickstart code runs as shown, its links lead to
files of this repository, and the two commands' environments get torch the same way."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"


def section(text: str, heading: str) -> str:
    """The text under a ``## heading``, up to the next heading of that level."""
    return re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S).group(1)


def test_the_quickstart_code_runs_as_shown(tmp_path, monkeypatch, capsys):
    """The README's Quickstart block, saved as train.py and run as ``python train.py`` runs it
    (in this process: the suite's environment holds what the README installs)."""
    (code,) = re.findall(r"```python\n(.*?)```", section(README.read_text(), "Quickstart"), flags=re.S)
    script = tmp_path / "train.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script)])

    runpy.run_path(str(script), run_name="__main__")

    output = capsys.readouterr().out
    assert "Finished training run" in output
    test_loss = float(re.search(r"evaluation: eval_loss: ([0-9.]+)", output).group(1))
    assert test_loss < 1.0  # eight epochs learn the digits (about 0.15)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.py"]  # no download, no file written


def test_the_quickstart_imports_only_what_the_readme_says_it_needs():
    code = re.findall(r"```python\n(.*?)```", section(README.read_text(), "Quickstart"), flags=re.S)[0]
    modules = {match.split(".")[0] for match in re.findall(r"^(?:from|import) ([\w.]+)", code, flags=re.M)}
    assert modules == {"torch", "sklearn", "pytorch_accelerated"}
    # trainer-core alone
    assert "pytorch_accelerated.trainer" in code and "pytorch_accelerated.callbacks" not in code
    assert "trainer-core scikit-learn" in section(README.read_text(), "Quickstart")


def test_the_first_screen_shows_the_two_commands():
    first_screen = "\n".join(README.read_text().splitlines()[:50])
    assert "hatch run quickstart" in first_screen and "hatch test" in first_screen


def test_the_readme_links_lead_to_files_of_this_repository():
    text = README.read_text()
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"\w+://", link)]
    assert "docs/architecture.md" in local and "CONTRIBUTING.md" in local
    for link in local:
        assert (REPO_ROOT / link).exists(), f"the README links {link}, which is not in the repository"
    assert "../" not in "".join(local)


def test_the_install_commands_name_existing_packages():
    install = section(README.read_text(), "Install")
    folders = set(re.findall(r"\./packages/([\w-]+)", install)) | set(
        re.findall(r"subdirectory=packages/([\w-]+)", install)
    )
    assert folders == {
        path.name for path in (REPO_ROOT / "packages").iterdir() if (path / "pyproject.toml").is_file()
    }
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    for name in folders:
        project = tomllib.loads((REPO_ROOT / "packages" / name / "pyproject.toml").read_text())["project"]
        assert project["name"] == name  # the registry name the README gives
        assert f"`{name}`" in install or f"pip install {name}" in install


def test_every_environment_installs_torch_the_same_way():
    """One torch for `hatch run quickstart` and `hatch test`: the same installer, the same requirement."""
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    environments = tomllib.loads((REPO_ROOT / "hatch.toml").read_text())["envs"]
    with_workspace = {name: env for name, env in environments.items() if "workspace" in env}
    assert {"default", "hatch-test"} <= set(with_workspace)
    for name, env in with_workspace.items():
        assert env.get("installer") == "uv", f"hatch.toml's {name} environment does not install with uv"
        requirements = env.get("dependencies", []) + env.get("extra-dependencies", [])
        torch = [
            requirement for requirement in requirements if "torch" in requirement and "TORCH" in requirement
        ]
        assert torch == ["{env:TRAINER_TORCH_REQUIREMENT:torch}"], f"{name}: {requirements}"
