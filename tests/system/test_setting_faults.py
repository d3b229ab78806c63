"""Settings and scored runs that are not what they should be, as a scheduler sees them: exit code
and one line on stderr naming the key or the file (issue 22). No trained project is needed: each
run stops before it reads a model (tests/system/test_faults.py has the faults of a scoring run).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from factories import run_entry_point
from leadml import cli
from leadml.adapters.layout import SCORING_RUN_RECORD
from leadml.adapters.sinks import PART_FILE
from leadml.errors import LeadmlError
from leadml.scoring.pandas_engine import previous_columns
from leadml.stages.forecast import read_scored_columns

AS_OF = "2026-01-05"


def run(command: str, root: Path, *overrides: str) -> tuple[int, str, str]:
    """``leadml-<command> paths.root=<root> ...`` in this process, through its Hydra entry point."""
    main: Callable[[], None] = getattr(cli, command)
    return run_entry_point(main, [f"leadml-{command}", f"paths.root={root}", *overrides])


def failed_with(result: tuple[int, str, str], command: str, code: int, *named: str) -> str:
    """The run exited with ``code`` and one error line naming every one of ``named``; returns it."""
    exit_code, _, stderr = result
    assert "Traceback" not in stderr, stderr
    prefix = f"leadml-{command}: error: "
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert exit_code == code and len(lines) == 1, (exit_code, stderr)
    assert stderr.rstrip("\n").endswith(lines[0])  # the last thing printed
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def scored_partition(root: Path) -> Path:
    """A scored partition as leadml-score writes it (a part file and its run record)."""
    folder = root / "data" / "scored" / "synthetic" / f"as_of={AS_OF}"
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"lead_id": ["L1", "L2"], "probability": [0.7, 0.2], "tier": ["A", "C"]})
    frame.to_parquet(folder / PART_FILE, index=False)
    (folder / SCORING_RUN_RECORD).write_text('{"as_of": "2026-01-05", "thresholds": {"A": 0.5}}')
    return folder


def cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    ("command", "override", "expected"),
    [
        ("report", "report.as_of=2026-02-30", "report.as_of must be latest or YYYY-MM-DD, got '2026-02-30'"),
        (
            "forecast",
            "forecast.scored_as_of=notadate",
            "forecast.scored_as_of must be latest, null or YYYY-MM-DD, got 'notadate'",
        ),
        (
            "report",
            "report.settings.table_rows=abc",
            "report.settings.table_rows must be a whole number >= 1, got 'abc'",
        ),
        (
            "report",
            "report.settings.top_leads=-5",
            "report.settings.top_leads must be a whole number >= 0, got -5",
        ),
        (
            "score",
            "+score.foo=1",
            "unknown key score.foo: not a setting of conf/score.yaml (known score keys:",
        ),
        ("report", "+report.settings.top_lead=5", "unknown key report.settings.top_lead"),
        ("ingest", "data.name=../../../../escaped_dir", "data.name must be a plain name"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_key(
    tmp_path: Path, command: str, override: str, expected: str
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    failed_with(run(command, root, override), command, 1, expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["project"]  # nothing written beside it


# --------------------------------------------------------------------------- damaged scored runs
@pytest.mark.parametrize("damaged", [PART_FILE, SCORING_RUN_RECORD])
def test_a_truncated_file_of_a_scored_run_is_one_line_naming_it(tmp_path: Path, damaged: str) -> None:
    path = scored_partition(tmp_path) / damaged
    cut_short(path)
    line = failed_with(run("report", tmp_path), "report", 1, str(path), "damaged or cut short")
    assert "score that date again" in line


def test_the_capacity_plan_names_a_truncated_part_file(tmp_path: Path) -> None:
    path = scored_partition(tmp_path) / PART_FILE
    assert list(read_scored_columns(path.parent)["lead_id"]) == ["L1", "L2"]
    cut_short(path)
    with pytest.raises(LeadmlError, match="damaged or cut short") as error:
        read_scored_columns(path.parent)
    assert str(path) in str(error.value)


def test_a_truncated_earlier_run_read_for_the_trend_is_named(tmp_path: Path) -> None:
    path = scored_partition(tmp_path) / PART_FILE
    assert previous_columns([path])[:2] == ["lead_id", "probability"]
    cut_short(path)
    with pytest.raises(LeadmlError, match="damaged or cut short") as error:
        previous_columns([path])
    assert str(path) in str(error.value)
