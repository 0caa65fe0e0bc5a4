"""upstream_tests_0161.md, the record of pytorch-accelerated 0.1.61's own tests run here: one row per
test of its 118, and every test of this project it names as covering a behaviour exists."""

import re
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORD = Path(__file__).parent / "upstream_tests_0161.md"


def _rows() -> list[list[str]]:
    lines = [line for line in RECORD.read_text().splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_the_record_has_a_row_per_upstream_test_and_each_failures_reason():
    """The record has one row per upstream test and a reason for each that does not pass."""
    rows = _rows()
    assert len(rows) == 118 and len({row[0] for row in rows}) == 118
    assert Counter(row[1] for row in rows) == {
        "passes": 31,
        "fails": 51,
        "not collected": 36,
    }, "update the counts in the record's table and in MIGRATING.md with the rows"
    assert all(reason for _, status, reason in rows if status != "passes")


def test_every_test_of_this_project_the_record_names_exists():
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", RECORD.read_text()))
    assert named
    for path, test in sorted(named):
        assert f"def {test}(" in (REPO / path).read_text(), f"{path}::{test} is named in {RECORD.name}"
