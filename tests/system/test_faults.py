"""Faults of the nightly job, as a scheduler sees them: exit code and one line on stderr.

tests/stages/test_score.py already covers a run that dies while writing (in process), a second run
of a date refused while a lock holder runs, an interrupted swap, no champion (exit 2), an
unreachable tracking server (exit 6) and a schema mismatch (exit 5). Here: a real scorer
killed with SIGKILL in the middle of its partition and of its SQL upsert, two real scoring
processes of one date at once, corrupt, truncated and empty inputs, a day without open leads,
a deleted model version and outputs that cannot be written. The in-process runs go through
the same Hydra entry point as ``leadml-score`` (``cli.score``), so the exit code and message
are the ones a scheduler gets.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from factories import SMALL_PROJECT, local_tracking, run_entry_point
from leadml import cli
from leadml.adapters import sinks
from leadml.adapters.sinks import RunInProgressError
from leadml.data import schema as s
from leadml.errors import ContractError, LeadmlError, NoModelError

OVERRIDES: list[str] = []  # the shared project (conftest.trained_project): scoring needs no settings
MODEL = "leadml-synthetic"
LEADML_SCORE = Path(sys.executable).parent / "leadml-score"


@pytest.fixture
def root(project_copy) -> Iterator[Path]:
    """A copy of the shared trained project (data, store, artifacts), so a test may break it."""
    with local_tracking():
        yield project_copy("faults")


def leadml_score(root: Path, *overrides: str) -> tuple[int, str, str]:
    """``leadml-score paths.root=<root> ...`` in this process, through its Hydra entry point:
    (exit code, stdout, stderr)."""
    return run_entry_point(cli.score, ["leadml-score", f"paths.root={root}", *OVERRIDES, *overrides])


def failed_with(result: tuple[int, str, str], code: int, *named: str, command: str = "score") -> str:
    """The run of ``leadml-<command>`` exited with ``code`` and one error line naming every one of
    ``named``; returns it."""
    exit_code, _, stderr = result
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"leadml-{command}: error: ")]
    assert exit_code == code and len(lines) == 1, (exit_code, stderr)
    assert stderr.rstrip("\n").endswith(lines[0])  # the last thing printed
    for text in named:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def raw_path(root: Path, table: str) -> Path:
    return root / "data" / "raw" / "synthetic" / f"{table}.parquet"


def scored_base(root: Path) -> Path:
    return root / "data" / "scored" / "synthetic"


# --------------------------------------------------------------------------- killed and concurrent runs
# A real scoring process (the job as leadml-score runs it) that stops in the middle of its partition
# (after the first rows are in the staging file, before it is closed) or of its SQL upsert (rows sent,
# transaction open), says so by creating ``ready`` and waits there until ``go`` exists.
PAUSING_SCORER = r"""
import sys, time
from pathlib import Path

import pyarrow.parquet as pq
import sqlalchemy.engine

from leadml import cli

ready, go, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]


def pause():
    ready.touch()
    deadline = time.monotonic() + 600
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


if where == "partition":
    write_table = pq.ParquetWriter.write_table

    def paused_write(self, table, *args, **kwargs):
        write_table(self, table, *args, **kwargs)
        if ".tmp-" in str(self.where):
            pause()

    pq.ParquetWriter.write_table = paused_write
else:
    execute = sqlalchemy.engine.Connection.execute

    def paused_execute(self, statement, *args, **kwargs):
        result = execute(self, statement, *args, **kwargs)
        if str(statement).startswith("INSERT INTO lead_scores"):
            pause()
        return result

    sqlalchemy.engine.Connection.execute = paused_execute
sys.argv = ["leadml-score", *sys.argv[4:]]
cli.score()
"""


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}


@contextlib.contextmanager
def pausing_scorer(root: Path, where: str, *overrides: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A real scorer paused at ``where``; yields (process, go file). Killed when the block ends."""
    ready, go, log = root / "paused.ready", root / "paused.go", root / "paused.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", PAUSING_SCORER, str(ready), str(go), where,
             f"paths.root={root}", *OVERRIDES, *overrides],
            stdout=output, stderr=subprocess.STDOUT, env=_environment(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while not ready.exists():
                assert process.poll() is None, f"the scorer ended early:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"the scorer never paused:\n{log.read_text()}"
                time.sleep(0.1)
            yield process, go
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)


def sql_rows(database: Path) -> pd.DataFrame:
    with sqlite3.connect(database) as connection:
        assert connection.execute("pragma integrity_check").fetchone() == ("ok",)
        return pd.read_sql("select * from lead_scores", connection)


def visible_partition(base: Path) -> pd.DataFrame:
    """What a reader of the output folder sees: every Parquet file in it as one dataset (files and
    folders whose names start with "." or "_" are hidden from Arrow, Spark and DuckDB readers)."""
    return pd.read_parquet(base, partitioning=None).sort_values([s.AS_OF, s.LEAD_ID], ignore_index=True)


@pytest.mark.parametrize("where", ["partition", "sql"])
def test_a_scorer_killed_with_sigkill_while_writing_leaves_the_previous_output(
    root: Path, where: str
) -> None:
    database = root / "scores.db"
    sink = (f"score.sql.url=sqlite:///{database}", "score.sql.table=lead_scores")
    assert leadml_score(root, *sink)[0] == 0
    base = scored_base(root)
    (partition,) = sinks.written_partitions(base).values()
    before, stored_before = pd.read_parquet(partition), sql_rows(database)
    assert len(stored_before) == len(before) > 0

    with pausing_scorer(root, where, *sink) as (process, _):
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    # readers see the previous partition whole; what the killed run left is hidden from them
    assert list(sinks.written_partitions(base).values()) == [partition]
    pd.testing.assert_frame_equal(pd.read_parquet(partition), before)
    assert len(visible_partition(base)) == len(before)
    left = [path.name for path in base.iterdir() if not path.name.startswith(sinks.PARTITION_PREFIX)]
    assert all(name.startswith(".") for name in left), left
    if where == "partition":
        assert sinks.leftovers(base), "the scorer was not killed in the middle of its partition"
    stored = sql_rows(database)  # the open transaction was rolled back
    assert len(stored) == len(before) and not stored.duplicated([s.LEAD_ID, s.AS_OF]).any()

    assert leadml_score(root, *sink)[0] == 0  # the re-run clears up and completes
    pd.testing.assert_frame_equal(pd.read_parquet(partition), before)
    assert not sinks.leftovers(base)
    assert not list((root / "data" / "scoring" / "synthetic" / "work").iterdir())  # the dead run's files
    assert sorted(path.name for path in base.iterdir() if not path.name.startswith(".lock-")) == [
        partition.name
    ]
    seen = visible_partition(base)
    assert len(seen) == len(before) and not seen.duplicated([s.AS_OF, s.LEAD_ID]).any()
    stored = sql_rows(database)
    assert len(stored) == len(before) and not stored.duplicated([s.LEAD_ID, s.AS_OF]).any()


def test_two_real_runs_of_one_date_at_once_the_second_refuses(root: Path) -> None:
    assert leadml_score(root)[0] == 0
    base = scored_base(root)
    (partition,) = sinks.written_partitions(base).values()
    before = pd.read_parquet(partition)
    with pausing_scorer(root, "partition") as (first, go):
        second = subprocess.run(
            [str(LEADML_SCORE), f"paths.root={root}", *OVERRIDES],
            capture_output=True, text=True, env=_environment(), timeout=300, check=False,
        )  # fmt: skip
        assert second.returncode == RunInProgressError.exit_code == 7, second.stderr
        error = second.stderr.strip().splitlines()[-1]
        assert error.startswith("leadml-score: error: another run is scoring ")
        assert f"pid {first.pid}" in error and str(base) in error and "Traceback" not in second.stderr
        pd.testing.assert_frame_equal(pd.read_parquet(partition), before)  # the first is mid-write
        go.touch()
        assert first.wait(timeout=300) == 0
    after = pd.read_parquet(partition)  # the first run's rows, whole: nothing of the second
    pd.testing.assert_frame_equal(after, before)
    assert after[s.LEAD_ID].is_unique and not sinks.leftovers(base)


# --------------------------------------------------------------------------- broken inputs
def test_truncated_parquet_input_names_the_file(root: Path) -> None:
    leads = raw_path(root, s.LEADS)
    data = leads.read_bytes()
    leads.write_bytes(data[: len(data) // 2])
    failed_with(leadml_score(root), 1, f"parquet file {leads} cannot be read", "magic bytes not found")
    leads.write_bytes(b"")  # zero bytes: not a Parquet file at all
    failed_with(leadml_score(root), 1, f"parquet file {leads} cannot be read", "0 bytes")


def test_parquet_input_with_corrupt_bytes_names_the_file(root: Path) -> None:
    activities = raw_path(root, s.ACTIVITIES)
    data = bytearray(activities.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096  # footer intact, pages broken
    activities.write_bytes(bytes(data))
    failed_with(leadml_score(root), 1, f"parquet file {activities} cannot be read")


def _leads_csv(root: Path) -> tuple[Path, list[str]]:
    """The raw leads written as CSV (the export a CRM gives) and its lines."""
    path = root / "leads.csv"
    pd.read_parquet(raw_path(root, s.LEADS)).to_csv(path, index=False)
    return path, path.read_text().splitlines()


def _from_csv(path: Path) -> tuple[str, ...]:
    return ("data.tables.leads.format=csv", f"data.tables.leads.path={path}")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda line: line + ",surplus", "Expected 14 columns, got 15"),
        (lambda line: line.rsplit(",", 2)[0], "Expected 14 columns, got 12"),
        (lambda line: line.replace(",", ',"', 1), "Expected 14 columns, got"),  # a quote never closed
    ],
    ids=["extra field", "missing fields", "broken quote"],
)
def test_malformed_csv_input_names_the_file_and_line_but_not_the_values(root: Path, damage, expected) -> None:
    path, lines = _leads_csv(root)
    header, record = next(csv.reader([lines[0]])), next(csv.reader([lines[10]]))
    lines[10] = damage(lines[10])  # line 11 of the file
    path.write_text("\n".join(lines) + "\n")
    error = failed_with(
        leadml_score(root, *_from_csv(path)), 1, f"csv file {path} cannot be parsed", expected, "line 11"
    )
    for column in (s.EMAIL, s.PHONE):  # the broken record's personal data stays out of the logs
        assert record[header.index(column)] not in error


def test_an_empty_input_stops_with_the_contract_exit_code(root: Path) -> None:
    path, lines = _leads_csv(root)
    path.write_text(lines[0] + "\n")  # the header only
    failed_with(
        leadml_score(root, *_from_csv(path)),
        ContractError.exit_code,
        f"leads from csv file {path}",
        "no rows",
    )
    path.write_bytes(b"")  # zero bytes
    failed_with(leadml_score(root, *_from_csv(path)), ContractError.exit_code, f"csv file {path} is empty")
    leads = raw_path(root, s.LEADS)  # a Parquet file with the columns and no row
    pd.read_parquet(leads).head(0).to_parquet(leads, index=False)
    failed_with(leadml_score(root), ContractError.exit_code, f"leads from parquet file {leads}", "no rows")


def test_a_day_without_open_leads_says_so(root: Path) -> None:
    """Every lead closed (lost the day after it came in): nothing to score, and no partition written."""
    leads = pd.read_parquet(raw_path(root, s.LEADS)).drop_duplicates(s.LEAD_ID)
    created = pd.to_datetime(leads[s.CREATED_AT], utc=True, errors="coerce", format="ISO8601")
    closed = pd.DataFrame({
        s.LEAD_ID: leads[s.LEAD_ID],
        s.STATUS: "lost",
        s.CLOSED_AT: (created + pd.Timedelta(days=1)).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        s.DEAL_VALUE: float("nan"),
    })  # fmt: skip
    closed.to_parquet(raw_path(root, s.OUTCOMES), index=False)
    failed_with(leadml_score(root), 1, "no open leads as of ", "nothing to score")
    assert not sinks.written_partitions(scored_base(root))


# --------------------------------------------------------------------------- the model
def test_a_deleted_model_version_gives_exit_code_2(root: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    version = client.get_model_version_by_alias(MODEL, "champion").version
    client.delete_model_version(MODEL, version)
    failed_with(leadml_score(root), NoModelError.exit_code, f"no champion for {MODEL}")
    pinned = f"models:/{MODEL}/{version}"
    failed_with(
        leadml_score(root, f"score.model_uri={pinned}"), NoModelError.exit_code, f"cannot load model {pinned}"
    )


def test_model_files_gone_from_the_artifact_store_give_exit_code_2(root: Path) -> None:
    shutil.rmtree(root / "mlruns" / MODEL / "models")
    failed_with(leadml_score(root), NoModelError.exit_code, f"cannot load model models:/{MODEL}@champion")


# --------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("setting", ["score.output_dir", "score.work_dir", "score.interim_dir"])
def test_an_output_folder_that_cannot_be_written_is_named(root: Path, setting: str) -> None:
    """A folder under a regular file cannot be created, even by root (chmod alone does not stop root)."""
    blocker = root / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    failed_with(
        leadml_score(root, f"{setting}={blocker / 'out'}"), LeadmlError.exit_code, str(blocker / "out")
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only (chmod 555) folder anyway")
def test_a_read_only_scored_folder_is_named(root: Path) -> None:
    base = scored_base(root)
    base.mkdir(parents=True)
    base.chmod(0o555)
    try:
        failed_with(leadml_score(root), LeadmlError.exit_code, f"cannot write scores to {base}")
    finally:
        base.chmod(0o755)


# --------------------------------------------------------------------------- a full disk (tmpfs)
def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_a_full_disk_as_the_scores_folder_is_named(root: Path, full_disk: Path) -> None:
    base = full_disk / "scored"
    failed_with(
        leadml_score(root, f"score.output_dir={base}"), LeadmlError.exit_code, str(base), "no space left"
    )
    assert not sinks.leftovers(base)
    assert [name for name in files_under(base) if not name.startswith(".lock-")] == []


def leadml_report(root: Path, *overrides: str) -> tuple[int, str, str]:
    return run_entry_point(cli.report, ["leadml-report", f"paths.root={root}", *overrides])


def test_report_folders_that_cannot_be_written_are_named_and_outputs_share_one_mode(
    root: Path, full_disk: Path
) -> None:
    """A full disk and a path under a file: one line each, no half-written page left behind. The
    outputs that are written (HTML, ranked CSV, Parquet, run record) all get the umask's mode."""
    assert leadml_score(root)[0] == 0
    out = full_disk / "reports"
    failed_with(
        leadml_report(root, f"report.output_dir={out}"), 1, str(out), "no space left", command="report"
    )
    assert files_under(out) == []
    under_a_file = root / "not-a-folder" / "x"
    under_a_file.parent.write_text("a file where a folder should be\n")
    failed_with(
        leadml_report(root, f"report.output_dir={under_a_file}"), 1, str(under_a_file), command="report"
    )

    code, stdout, _ = leadml_report(root)
    assert code == 0, stdout
    expected = 0o666 & ~current_umask()
    partition = sinks.find_partition(scored_base(root), None)
    written = [
        *(root / "reports" / "synthetic").glob("leads-*.*"),
        *partition.glob("part-*.parquet"),
        partition / "_scoring_run.json",
    ]
    assert {path.suffix for path in written} >= {".html", ".csv", ".parquet", ".json"}
    assert {path.name: oct(path.stat().st_mode & 0o777) for path in written} == {
        path.name: oct(expected) for path in written
    }


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_train_run_whose_model_report_cannot_be_written_registers_nothing(
    root: Path, full_disk: Path
) -> None:
    from mlflow import MlflowClient

    reports = full_disk / "reports"
    settings = [f"{key}={value}" for key, value in SMALL_PROJECT.items()]
    result = run_entry_point(
        cli.train, ["leadml-train", f"paths.root={root}", *settings, "prepare=never", f"report_dir={reports}"]
    )
    failed_with(result, 1, str(reports), "no space left", command="train")
    assert files_under(reports) == []  # no .model-v2.html.partial
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert [str(version.version) for version in versions] == ["1"]  # the shared project's, still champion
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
