"""MIGRATING.md's table, read here: every pytorch-accelerated 0.1.61 name in it resolves as its
status says, so that the document and the code cannot drift apart."""

import importlib
import re
from pathlib import Path

import pytest
import torch

from pytorch_accelerated.trainer import Trainer

MIGRATING = Path(__file__).resolve().parents[2] / "MIGRATING.md"
STATUSES = {"same", "kept", "error", "hook-error"}


def _rows() -> list[tuple[str, str, str, str]]:
    text = MIGRATING.read_text()
    table = text.split("<!-- names:start -->")[1].split("<!-- names:end -->")[0]
    rows = []
    for line in table.strip().splitlines()[2:]:  # past the header and its rule
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        name = re.fullmatch(r"`([\w.]+)`", cells[0]).group(1)
        rows.append((name, cells[1], cells[2], cells[3]))
    return rows


ROWS = _rows()


def _resolve(dotted: str):
    """Import the longest importable module prefix of ``dotted``, then read the rest as attributes."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            value = getattr(value, attribute)
        return value
    raise ModuleNotFoundError(dotted)


def _first_code(cell: str) -> str:
    return re.search(r"`([^`]+)`", cell).group(1)


def test_the_table_lists_every_documented_module_and_each_name_once():
    names = [name for name, *_ in ROWS]
    assert len(names) == len(set(names))
    assert {status for _, status, _, _ in ROWS} <= STATUSES
    modules = {name.split(".")[1] for name in names if name.count(".") >= 1}
    assert {"trainer", "callbacks", "tracking", "run_config", "schedulers", "finetuning", "utils"} <= modules
    assert all(difference for *_, difference in ROWS)


@pytest.mark.parametrize("name, here", [(n, h) for n, s, h, _ in ROWS if s == "same"])
def test_names_kept_as_aliases_are_the_object_named(name, here):
    old, new = _resolve(name), _resolve(_first_code(here))
    assert old is new or old == new, f"{name} is not {here}"


@pytest.mark.parametrize("name, here", [(n, h) for n, s, h, _ in ROWS if s == "kept"])
def test_names_kept_by_a_shim_import_and_their_successor_exists(name, here):
    assert _resolve(name) is not None
    assert _resolve(_first_code(here)) is not None


@pytest.mark.parametrize("name, here", [(n, h) for n, s, h, _ in ROWS if s == "error"])
def test_names_not_kept_raise_an_import_error_naming_the_successor(name, here):
    module_name, attribute = name.rsplit(".", 1)
    with pytest.raises(ImportError, match=re.escape(_first_code(here))):
        exec(f"from {module_name} import {attribute}", {})
    assert "MIGRATING.md" in str(pytest.raises(ImportError, _resolve, name).value)


@pytest.mark.parametrize("name, here", [(n, h) for n, s, h, _ in ROWS if s == "hook-error"])
def test_overriding_a_removed_hook_is_an_error_at_creation(name, here):
    hook = name.rsplit(".", 1)[1]
    assert not hasattr(Trainer, hook)
    subclass = type("OldStyleTrainer", (Trainer,), {hook: lambda self, *args, **kwargs: None})
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=rf"overrides {hook}.*{re.escape(_first_code(here))}"):
        subclass(model, torch.nn.MSELoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=())
