"""The SQL sink's table grows with the scores: an experiment's columns are added to a table made before it.

SQLite here (a file per test); the same checks on PostgreSQL are in tests/system/test_postgres.py.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import before_experiment, under_experiment
from leadml.adapters import sinks
from leadml.data import schema as s
from leadml.errors import ScoreTableError


def columns(database: Path) -> dict[str, str]:
    with sqlite3.connect(database) as connection:
        return {row[1]: row[2] for row in connection.execute("pragma table_info(lead_scores)")}


def stored(database: Path) -> pd.DataFrame:
    with sqlite3.connect(database) as connection:
        return pd.read_sql("select * from lead_scores order by lead_id", connection)


def test_a_table_made_before_an_experiment_gains_its_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "scores.db"
    url = f"sqlite:///{database}"
    first = before_experiment()
    assert sinks.upsert_frames(url, "lead_scores", [first]) == 3
    assert set(columns(database)) == {s.LEAD_ID, s.AS_OF, "probability", "tier"}
    later = first.assign(**{s.LEAD_ID: ["L7", "L8", "L9"], s.AS_OF: pd.Timestamp("2025-12-02", tz="UTC")})
    with caplog.at_level(logging.INFO, logger="leadml.adapters.sinks"):
        assert (
            sinks.upsert_frames(url, "lead_scores", [under_experiment(first), under_experiment(later)]) == 6
        )
    added = [r.getMessage() for r in caplog.records if "added nullable column" in r.getMessage()]
    assert len(added) == 1  # one line naming every column it added, with its type
    assert "arm TEXT" in added[0] and "arm_champion_probability FLOAT" in added[0]
    kinds = columns(database)
    assert kinds[s.ARM] == kinds[s.EXPERIMENT] == kinds["arm_champion_tier"] == "TEXT"
    assert kinds["arm_champion_probability"] == kinds["arm_challenger_probability"] == "FLOAT"
    rows = stored(database)
    assert len(rows) == 6 and rows[s.ARM].tolist() == ["champion", "challenger", "challenger"] * 2
    np.testing.assert_allclose(rows["arm_challenger_probability"].iloc[:3], [0.45, 0.2, 0.25])
    assert pd.isna(rows["probability"].iloc[1]) and rows["tier"].iloc[1] == s.HIDDEN_TIER
    # a run without the experiment afterwards writes into the wider table: its columns stay empty
    again = before_experiment().assign(**{s.AS_OF: pd.Timestamp("2025-12-03", tz="UTC")})
    with caplog.at_level(logging.INFO, logger="leadml.adapters.sinks"):
        caplog.clear()
        assert sinks.upsert_frames(url, "lead_scores", [again]) == 3
    assert not any("added" in r.getMessage() for r in caplog.records)
    assert stored(database).query("as_of == '2025-12-03'")[s.ARM].isna().all()


@pytest.mark.parametrize(
    ("column", "declared"),
    [("arm_champion_probability", "INTEGER"), (s.ARM, "BIGINT"), ("tier", "BOOLEAN")],
)
def test_a_column_of_a_type_that_cannot_hold_the_scores_stops_the_run_and_loses_nothing(
    tmp_path: Path, column: str, declared: str
) -> None:
    database = tmp_path / "scores.db"
    url = f"sqlite:///{database}"
    sinks.upsert_frames(url, "lead_scores", [before_experiment()])
    with sqlite3.connect(database) as connection:
        if column in columns(database):
            connection.execute("drop table lead_scores")
            connection.execute(
                f"create table lead_scores (lead_id TEXT, as_of VARCHAR(10), probability FLOAT, {column} "
                f"{declared}, primary key (lead_id, as_of))"
            )
            connection.execute("insert into lead_scores values ('L0', '2025-12-01', 0.1, 1)")
        else:
            connection.execute(f"alter table lead_scores add column {column} {declared}")
    table_before, rows_before = columns(database), stored(database)
    with pytest.raises(ScoreTableError) as error:
        sinks.upsert_frames(url, "lead_scores", [under_experiment(before_experiment())])
    message = str(error.value)
    assert error.value.exit_code == 10 and "\n" not in message
    assert message.startswith(
        f"score table lead_scores in sqlite:///{database}: column {column} is {declared}"
    )
    assert "score.sql.table" in message
    assert columns(database) == table_before  # no column added
    pd.testing.assert_frame_equal(stored(database), rows_before)  # no row changed


def test_a_table_without_the_key_columns_is_not_a_score_table(tmp_path: Path) -> None:
    database = tmp_path / "scores.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table lead_scores (id TEXT primary key, probability FLOAT)")
    with pytest.raises(ScoreTableError, match=r"has no column lead_id: not a leadml score table"):
        sinks.upsert_frames(f"sqlite:///{database}", "lead_scores", [before_experiment()])
    assert set(columns(database)) == {"id", "probability"}
