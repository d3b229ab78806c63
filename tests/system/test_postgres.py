"""PostgreSQL as the warehouse source and as the score sink, on a real throwaway server.

The server comes from the session fixture ``postgres_url`` (tests/conftest.py, tests/postgres.py):
initdb into a temporary folder, a free port on 127.0.0.1; the tests skip on a machine without
the server binaries. SQL names from config are checked on SQLite and PostgreSQL alike: a name
that is not a plain identifier is refused with its config key, and nothing in the database changes.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from omegaconf import OmegaConf

import postgres
from factories import REPO, before_experiment, local_tracking, project_config, under_experiment
from leadml.adapters import sinks
from leadml.adapters.layout import read_interim
from leadml.adapters.sources import engine_url, fingerprint_source, read_source
from leadml.cli import run_features, run_generate, run_ingest, run_score, run_train
from leadml.data import schema as s
from leadml.data.contracts import REASON, SOURCE_ROW
from leadml.errors import LeadmlError, ScoreTableError
from leadml.stages.ingest import IngestSummary, ingest_stage
from leadml.stages.score import ScoreResult

# the pipeline's project: smaller than SMALL_PROJECT, still enough for a promoted champion
SIZE = {"synthetic.n_leads": 3000}
PASSWORD, PASSWORD_VARIABLE = "s3cret-pw", "LEADML_TEST_PG_PASSWORD"
MALICIOUS = ["leads; DROP TABLE outcomes; --", 'x" OR 1=1 --']
TIMESTAMPS = {s.LEADS: s.CREATED_AT, s.OUTCOMES: s.CLOSED_AT, s.ACTIVITIES: s.TIMESTAMP}


# --------------------------------------------------------------------------- helpers
def copy_rows(table, connection, keys, rows) -> int:  # type: ignore[no-untyped-def]
    """pandas ``to_sql`` method: PostgreSQL's COPY (names quoted by psycopg), far quicker than INSERTs."""
    from psycopg import sql

    name = sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)
    columns = sql.SQL(", ").join(map(sql.Identifier, keys))
    count = 0
    with (
        connection.connection.cursor() as cursor,
        cursor.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(name, columns)) as copy,
    ):
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


def load(url: str, frames: dict[str, pd.DataFrame], schema: str | None = None) -> None:
    engine = sa.create_engine(url)
    try:
        method = copy_rows if engine.dialect.name == "postgresql" else None
        for name, frame in frames.items():
            frame.to_sql(name, engine, schema=schema, index=False, method=method)
    finally:
        engine.dispose()


def query(url: str, statement: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return pd.read_sql_query(sa.text(statement), connection)
    finally:
        engine.dispose()


def inventory(url: str) -> dict[str, int]:
    """Every table of every user schema with its row count: what an injection would change."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            schemas = [
                name
                for name in inspector.get_schema_names()
                if name not in ("information_schema", "pg_catalog", "pg_toast")
            ]
            counts = {}
            for schema in schemas:
                for table in inspector.get_table_names(schema=schema):
                    counted = sa.select(sa.func.count()).select_from(sa.table(table, schema=schema))
                    counts[f"{schema}.{table}"] = connection.execute(counted).scalar_one()
            return counts
    finally:
        engine.dispose()


def fresh_database(postgres_url: str) -> str:
    """A new empty database on the session's server (CREATE DATABASE is quick: a copy of template1)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {name}"))  # a name made here, not from config
    finally:
        engine.dispose()
    return sa.engine.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)


def small_crm() -> dict[str, pd.DataFrame]:
    created = pd.Series(pd.to_datetime(["2024-01-01 09:00", "2024-01-02 09:30"], utc=True))
    return {
        s.ACCOUNTS: pd.DataFrame({s.ACCOUNT_ID: ["A1"], s.COMPANY_NAME: ["Acme"], s.EMPLOYEES: [12]}),
        s.LEADS: pd.DataFrame({s.LEAD_ID: ["L1", "L2"], s.CREATED_AT: created, s.ACCOUNT_ID: ["A1", "A1"]}),
        s.OUTCOMES: pd.DataFrame({s.LEAD_ID: ["L1"], s.STATUS: ["won"], s.CLOSED_AT: created[:1]}),
        s.ACTIVITIES: pd.DataFrame({s.EVENT_ID: ["E1"], s.LEAD_ID: ["L1"], s.TIMESTAMP: created[:1]}),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a database holding a small CRM (accounts, leads, outcomes, activities), on either backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    else:
        url = fresh_database(request.getfixturevalue("postgres_url"))
    load(url, small_crm())
    return url


def test_without_the_server_binaries_the_cluster_is_unavailable_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the ``postgres_url`` fixture turns into a skip on a machine without PostgreSQL."""
    monkeypatch.setattr(postgres, "server_binaries", lambda: None)
    with pytest.raises(postgres.ClusterUnavailable, match=r"server binaries .* not found .*make system-deps"):
        postgres.postgres_cluster().__enter__()


# --------------------------------------------------------------------------- names from config
@pytest.mark.parametrize("name", MALICIOUS)
@pytest.mark.parametrize("key", ["table", "schema"])
def test_a_source_name_that_is_not_plain_is_refused_and_nothing_changes(
    database: str, name: str, key: str, tmp_path: Path
) -> None:
    before = inventory(database)
    spec = {"format": "sql", "url": database, "table": s.LEADS, key: name}
    with pytest.raises(LeadmlError) as error:
        read_source(spec)
    assert str(error.value).startswith(f"source.{key}: {name!r} is not a plain SQL name")
    with pytest.raises(LeadmlError) as error:
        fingerprint_source(spec)
    assert f"{name!r} is not a plain SQL name" in str(error.value)
    data = {
        "name": "crm",
        "kind": "crm",
        "tables": {table: {"url": database, "table": table} for table in s.CRM_TABLES},
    }
    data["tables"][s.LEADS][key] = name
    with pytest.raises(LeadmlError) as error:
        ingest_stage(data, tmp_path / "interim")
    assert str(error.value).startswith(f"data.tables.leads.{key}: {name!r} is not a plain SQL name")
    assert not (tmp_path / "interim").exists()
    assert inventory(database) == before


@pytest.mark.parametrize("name", MALICIOUS)
def test_a_score_table_or_column_that_is_not_plain_is_refused_and_nothing_changes(
    database: str, name: str, tmp_path: Path
) -> None:
    before = inventory(database)
    frame = pd.DataFrame({s.LEAD_ID: ["L1"], s.AS_OF: [pd.Timestamp("2025-12-01", tz="UTC")], "tier": ["A"]})
    with pytest.raises(LeadmlError, match=r"^score\.sql\.table: .* is not a plain SQL name") as error:
        sinks.upsert_frames(database, name, [frame])
    assert repr(name) in str(error.value)
    with pytest.raises(LeadmlError, match=r"^score column: .* is not a plain SQL name"):
        sinks.upsert_frames(database, "lead_scores", [frame.rename(columns={"tier": name})])
    # the nightly job refuses before it loads a model or reads a row (Hydra override, quoted)
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    overrides = [f"score.sql.url='{database}'", f"score.sql.table='{quoted}'"]
    with pytest.raises(LeadmlError, match=r"^score\.sql\.table: .* is not a plain SQL name"):
        run_score(project_config(tmp_path, "score", overrides))
    assert inventory(database) == before


def test_plain_names_are_quoted_so_case_and_reserved_words_work(database: str) -> None:
    """``Order`` and ``select`` only work quoted: SQLAlchemy quotes them, the case stays as written."""
    frame = pd.DataFrame({s.LEAD_ID: ["L1", "L2"], "Select": [1.5, None]})
    load(database, {"Order": frame})
    read = read_source({"url": database, "table": "Order"})
    assert read[s.LEAD_ID].tolist() == ["L1", "L2"]
    assert read["Select"].iloc[0] == 1.5 and pd.isna(read["Select"].iloc[1])
    if database.startswith("postgresql"):  # case-sensitive there (SQLite ignores the case of names)
        with pytest.raises(LeadmlError, match="table order not found"):
            read_source({"url": database, "table": "order"})
    scores = pd.DataFrame(
        {s.LEAD_ID: ["L1"], s.AS_OF: [pd.Timestamp("2025-12-01", tz="UTC")], "select": [0.5]}
    )
    assert sinks.upsert_frames(database, "LeadScores", [scores]) == 1
    assert "public.LeadScores" in inventory(database) or "main.LeadScores" in inventory(database)
    stored = read_source({"url": database, "table": "LeadScores"})
    assert stored[[s.LEAD_ID, "select"]].to_dict("records") == [{s.LEAD_ID: "L1", "select": 0.5}]


def test_values_are_bound_and_every_type_round_trips(database: str) -> None:
    """Upsert by (lead_id, as_of): text with quotes, floats with NaN, ints, booleans, timestamps."""
    tricky = "O'Brien\"); DROP TABLE outcomes; --"
    as_of = pd.Timestamp("2025-12-01", tz="UTC")
    first = pd.DataFrame({
        s.LEAD_ID: [tricky, "L2", "Łódź ☃"],
        s.AS_OF: [as_of] * 3,
        "probability": [0.25, np.nan, 1e-12],
        "rank": np.array([3, 1, 2], dtype="int64"),
        "hot": [True, False, True],
        "reason": ["50% of visits on 'pricing'", None, "x::text %s :name"],
        "scored_at": pd.to_datetime(["2025-12-01 08:30:00.123456+01:00"] * 3).tz_convert("Europe/Berlin"),
    })  # fmt: skip
    before = inventory(database)
    assert sinks.upsert_frames(database, "lead_scores", [first]) == 3
    changed = first.assign(probability=[0.5, 0.75, np.nan])
    assert sinks.upsert_frames(database, "lead_scores", [changed.iloc[:2], changed.iloc[2:]]) == 3
    later = first.assign(**{s.AS_OF: pd.Timestamp("2025-12-15", tz="UTC")})
    assert sinks.upsert_frames(database, "lead_scores", [later]) == 3
    after = inventory(database)
    assert {k: v for k, v in after.items() if not k.endswith(".lead_scores")} == before
    stored = read_source({"url": database, "table": "lead_scores"}).sort_values([s.AS_OF, "rank"])
    assert len(stored) == 6 and not stored.duplicated([s.LEAD_ID, s.AS_OF]).any()
    assert stored[s.AS_OF].tolist() == ["2025-12-01"] * 3 + ["2025-12-15"] * 3
    updated = stored[stored[s.AS_OF] == "2025-12-01"].set_index("rank").sort_index()
    assert updated[s.LEAD_ID].tolist() == ["L2", "Łódź ☃", tricky]
    np.testing.assert_allclose(updated["probability"].astype(float), [0.75, np.nan, 0.5])
    assert updated["hot"].astype(bool).tolist() == [False, True, True]
    assert updated["reason"].tolist()[1:] == ["x::text %s :name", "50% of visits on 'pricing'"]
    assert pd.isna(updated["reason"].iloc[0])
    scored_at = pd.to_datetime(updated["scored_at"], utc=True)  # SQLite keeps UTC text
    assert (scored_at == pd.Timestamp("2025-12-01 07:30:00.123456", tz="UTC")).all()


# --------------------------------------------------------------------------- PostgreSQL only
def test_a_query_source_runs_as_written_and_a_bare_postgresql_url_uses_psycopg(postgres_url: str) -> None:
    url = fresh_database(postgres_url)
    load(url, small_crm())
    bare = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    assert engine_url(bare).startswith("postgresql+psycopg://")
    sql = (
        "SELECT lead_id, created_at::text AS created FROM leads WHERE lead_id LIKE 'L%' ORDER BY lead_id DESC"
    )
    frame = read_source({"url": bare, "query": sql})
    assert frame["lead_id"].tolist() == ["L2", "L1"]
    assert frame["created"].tolist() == ["2024-01-02 09:30:00+00", "2024-01-01 09:00:00+00"]
    typed = read_source({"url": url, "table": s.LEADS})
    assert isinstance(typed[s.CREATED_AT].dtype, pd.DatetimeTZDtype)  # timestamptz comes back aware, in UTC
    assert typed[s.CREATED_AT].tolist() == small_crm()[s.LEADS][s.CREATED_AT].tolist()


def test_warehouse_column_types_become_the_values_the_contracts_expect(postgres_url: str) -> None:
    """numeric, timestamp without time zone (read in data.timezone), date, smallint, bigint ids."""
    url = fresh_database(postgres_url)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for statement in (
            "CREATE TABLE accounts (account_id text, employees integer, annual_revenue numeric(14, 2), "
            "founded_year smallint)",
            "INSERT INTO accounts VALUES ('A1', 12, 1500000.50, 2001), ('A2', NULL, NULL, NULL)",
            "CREATE TABLE leads (lead_id text, created_at timestamp, account_id text, "
            "estimated_deal_value numeric(12, 2), source text)",
            "INSERT INTO leads VALUES ('L1', '2024-01-01 09:00', 'A1', 1000.25, 'PPC'), "
            "('L2', '2024-01-02 10:00', 'A2', NULL, 'Referral')",
            "CREATE TABLE outcomes (lead_id text, status text, closed_at date, deal_value numeric)",
            "INSERT INTO outcomes VALUES ('L1', 'won', '2024-03-01', 5000.5)",
            'CREATE TABLE activities (event_id bigint, lead_id text, "timestamp" timestamptz, '
            "activity_type text)",
            "INSERT INTO activities VALUES (1, 'L1', '2024-01-05 10:00+02', 'page_view')",
        ):
            connection.execute(sa.text(statement))
    engine.dispose()
    data = {
        "name": "typed",
        "kind": "crm",
        "timezone": "Europe/Berlin",
        "reference_time": "2025-01-01T00:00:00Z",
        "tables": {table: {"url": url, "table": table} for table in s.CRM_TABLES},
    }
    with tempfile.TemporaryDirectory() as folder:
        ingest_stage(data, Path(folder))
        tables = read_interim(Path(folder), s.CRM_TABLES)
    accounts, leads = tables[s.ACCOUNTS], tables[s.LEADS]
    assert accounts[s.ANNUAL_REVENUE].iloc[0] == 1500000.5 and pd.isna(accounts[s.ANNUAL_REVENUE].iloc[1])
    assert accounts[s.FOUNDED_YEAR].iloc[0] == 2001
    assert leads[s.CREATED_AT].tolist() == [pd.Timestamp("2024-01-01 08:00", tz="UTC"),
                                            pd.Timestamp("2024-01-02 09:00", tz="UTC")]  # fmt: skip
    assert leads[s.ESTIMATED_DEAL_VALUE].iloc[0] == 1000.25
    assert tables[s.OUTCOMES][s.CLOSED_AT].iloc[0] == pd.Timestamp("2024-02-29 23:00", tz="UTC")
    assert tables[s.ACTIVITIES][s.TIMESTAMP].tolist() == [pd.Timestamp("2024-01-05 08:00", tz="UTC")]


def test_a_missing_table_or_schema_names_it(postgres_url: str) -> None:
    with pytest.raises(LeadmlError, match=r"^table nowhere\.leads not found in postgresql\+psycopg://"):
        read_source({"url": postgres_url, "schema": "nowhere", "table": "leads"})


def _types(url: str, table: str) -> dict[str, str]:
    found = query(
        url, f"select column_name, data_type from information_schema.columns where table_name = '{table}'"
    )
    return dict(zip(found["column_name"], found["data_type"], strict=True))


def test_a_score_table_made_before_an_experiment_gains_its_columns(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As tests/unit/test_score_table.py on SQLite: the arm columns are added, nullable, in one line."""
    url = fresh_database(postgres_url)
    sinks.upsert_frames(url, "lead_scores", [before_experiment()])
    with caplog.at_level("INFO", logger="leadml.adapters.sinks"):
        assert sinks.upsert_frames(url, "lead_scores", [under_experiment(before_experiment())]) == 3
    added = [r.getMessage() for r in caplog.records if "added nullable column" in r.getMessage()]
    assert len(added) == 1 and "arm_challenger_probability FLOAT" in added[0]
    types = _types(url, "lead_scores")
    assert types[s.ARM] == types[s.EXPERIMENT] == types["arm_champion_tier"] == "text"
    assert types["arm_champion_probability"] == "double precision"
    rows = query(url, "select * from lead_scores order by lead_id")
    assert rows[s.ARM].tolist() == ["champion", "challenger", "challenger"]
    assert rows["tier"].tolist() == ["A", s.HIDDEN_TIER, "C"] and pd.isna(rows["probability"].iloc[1])


def test_a_score_column_of_another_type_stops_the_run_with_exit_code_10(postgres_url: str) -> None:
    url = fresh_database(postgres_url)
    sinks.upsert_frames(url, "lead_scores", [before_experiment()])
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("alter table lead_scores add column arm_champion_probability integer"))
    finally:
        engine.dispose()
    types, rows = _types(url, "lead_scores"), query(url, "select * from lead_scores order by lead_id")
    with pytest.raises(ScoreTableError) as error:
        sinks.upsert_frames(url, "lead_scores", [under_experiment(before_experiment())])
    assert error.value.exit_code == 10
    message = str(error.value)
    assert message.startswith("score table lead_scores in postgresql+psycopg://")
    assert ": column arm_champion_probability is INTEGER, which cannot hold the scores' FLOAT" in message
    assert _types(url, "lead_scores") == types  # no column added (arm, experiment...)
    pd.testing.assert_frame_equal(query(url, "select * from lead_scores order by lead_id"), rows)


# --------------------------------------------------------------------------- the whole pipeline
def config(root: Path, stage: str, overrides: list[str] | tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return project_config(root, stage, overrides, SIZE)


@dataclass(frozen=True)
class Warehouse:
    root: Path
    url: str
    overrides: list[str]  # the config folder and data=pg_crm
    ingested: IngestSummary  # leadml-ingest's summary of the PostgreSQL tables


def warehouse_tables(raw: Path) -> dict[str, pd.DataFrame]:
    """The generated CRM as a warehouse holds it: timestamps typed (timestamptz), NULL where unparseable."""
    frames = {table: pd.read_parquet(raw / f"{table}.parquet") for table in s.CRM_TABLES}
    for table, column in TIMESTAMPS.items():
        frames[table][column] = pd.to_datetime(
            frames[table][column], utc=True, format="ISO8601", errors="coerce"
        )
    return frames


def data_config(name: str, tables: dict[str, dict]) -> str:
    """The synthetic data config with other sources: a user's conf/data/<name>.yaml."""
    data = OmegaConf.load(REPO / "conf" / "data" / "synthetic.yaml")
    data.name, data.tables = name, tables
    data.reference_time = "2026-02-01T00:00:00Z"  # not the time of the run: both copies quarantine alike
    return OmegaConf.to_yaml(data)


@pytest.fixture(scope="module")
def warehouse(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """A small project whose CRM lives in PostgreSQL (schema crm), and a Parquet copy of the same tables.

    Data configs in a config folder of the project's own: ``pg_crm`` reads tables (activities from
    a mixed-case table, outcomes through a query), ``pq_crm`` the Parquet copy.
    """
    root = tmp_path_factory.mktemp("postgres")
    url = fresh_database(postgres_url)
    with local_tracking():
        run_generate(config(root, "generate"))
    frames = warehouse_tables(root / "data" / "raw" / "synthetic")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema("crm"))
    engine.dispose()
    names = {s.ACCOUNTS: "accounts", s.LEADS: "leads", s.OUTCOMES: "outcomes", s.ACTIVITIES: "WebActivity"}
    load(url, {names[table]: frame for table, frame in frames.items()}, schema="crm")
    configs = root / "my_configs" / "data"
    configs.mkdir(parents=True)
    # the password as the README suggests, from the environment (the test server trusts local users)
    in_config = sa.engine.make_url(url).set(password="PASSWORD").render_as_string(hide_password=False)
    in_config = in_config.replace("PASSWORD", f"${{oc.env:{PASSWORD_VARIABLE}}}")
    pg = {
        table: {"format": "sql", "url": in_config, "schema": "crm", "table": names[table]}
        for table in s.CRM_TABLES
    }
    pg[s.OUTCOMES] = {"format": "sql", "url": in_config, "query": "SELECT * FROM crm.outcomes"}
    (configs / "pg_crm.yaml").write_text(data_config("pg_crm", pg))
    copies = root / "warehouse_copy"
    copies.mkdir()
    for table, frame in frames.items():
        frame.to_parquet(copies / f"{table}.parquet", index=False)
    pq = {table: {"format": "parquet", "path": str(copies / f"{table}.parquet")} for table in s.CRM_TABLES}
    (configs / "pq_crm.yaml").write_text(data_config("pq_crm", pq))
    overrides = [f"hydra.searchpath=[file://{configs.parent}]", "data=pg_crm"]
    previous = os.environ.get(PASSWORD_VARIABLE)
    os.environ[PASSWORD_VARIABLE] = PASSWORD
    try:
        with local_tracking():
            ingested = run_ingest(config(root, "ingest", overrides))
        yield Warehouse(root, url, overrides, ingested)
    finally:
        if previous is None:
            os.environ.pop(PASSWORD_VARIABLE, None)
        else:
            os.environ[PASSWORD_VARIABLE] = previous


def test_crm_in_postgresql_ingests_like_its_parquet_copy(warehouse: Warehouse) -> None:
    """timestamptz, double precision, bigint (with NULLs) and text round-trip: the same validated tables."""
    root = warehouse.root
    with local_tracking():
        run_ingest(config(root, "ingest", [*warehouse.overrides[:1], "data=pq_crm"]))
    source = warehouse.ingested.tables[s.ACTIVITIES]["source"]
    assert source.startswith("sql table crm.WebActivity in postgresql+psycopg://leadml:***@127.0.0.1:")
    interim = root / "data" / "interim"
    pg, pq = (read_interim(interim / name, s.CRM_TABLES) for name in ("pg_crm", "pq_crm"))
    for table in s.CRM_TABLES:
        assert len(pg[table]) > 1000 or table == s.ACCOUNTS
        pd.testing.assert_frame_equal(pg[table], pq[table], obj=table)
        quarantined = [
            pd.read_parquet(interim / name / "quarantine" / f"{table}.parquet")
            for name in ("pg_crm", "pq_crm")
        ]
        pd.testing.assert_frame_equal(
            quarantined[0][[SOURCE_ROW, REASON]], quarantined[1][[SOURCE_ROW, REASON]]
        )


def test_train_and_score_from_postgresql_and_upsert_scores_into_it(
    warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    root, url, overrides = warehouse.root, warehouse.url, warehouse.overrides
    with_password = sa.engine.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    sink = [f"score.sql.url='{with_password}'", "score.sql.table=lead_scores"]
    with local_tracking():
        run_features(config(root, "features", overrides))
        printed = capsys.readouterr().out
        trained = run_train(config(root, "train", overrides))
        training = capsys.readouterr().out
        assert "prepare:" not in training  # the SQL fingerprints are stable: nothing rebuilt
        assert trained.promoted

        def score(as_of: str) -> tuple[ScoreResult, pd.DataFrame]:
            result = run_score(config(root, "score", [*overrides, *sink, f"score.as_of={as_of}"]))
            return result, pd.read_parquet(Path(result.output) / sinks.PART_FILE)

        first, frame = score("2025-12-01")
        assert first.sql_rows == len(frame) > 100
        victim = frame[s.LEAD_ID].iloc[0]
        engine = sa.create_engine(url)
        with engine.begin() as connection:  # a stale value the re-run must overwrite (DO UPDATE)
            table = sa.table("lead_scores", sa.column(s.LEAD_ID), sa.column("probability"))
            connection.execute(table.update().where(table.c.lead_id == victim).values(probability=-1.0))
        engine.dispose()
        _, frame_again = score("2025-12-01")
        _, frame_later = score("2025-12-15")
    counts = query(
        url, "SELECT as_of, count(*) AS n, count(DISTINCT lead_id) AS leads FROM lead_scores GROUP BY as_of"
    )
    counts = counts.set_index("as_of")
    assert counts.loc["2025-12-01"].tolist() == [len(frame_again)] * 2 == [len(frame)] * 2
    assert counts.loc["2025-12-15"].tolist() == [len(frame_later)] * 2
    stored = query(url, "SELECT * FROM lead_scores WHERE as_of = '2025-12-01'")
    merged = stored.merge(frame_again, on=s.LEAD_ID, suffixes=("", "_parquet"))
    assert len(merged) == len(frame) and merged.loc[merged[s.LEAD_ID] == victim, "probability"].item() >= 0
    np.testing.assert_allclose(merged["probability"], merged["probability_parquet"])
    for column in ("tier", "positive_reason_1", "model_version"):
        pd.testing.assert_series_equal(
            merged[column], merged[f"{column}_parquet"], check_names=False, check_dtype=False
        )
    types = query(
        url, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'lead_scores'"
    )
    types = dict(zip(types["column_name"], types["data_type"], strict=True))
    assert types["probability"] == "double precision" and types[s.LEAD_ID] == "text"
    assert types[s.AS_OF] == "character varying" and types["positive_reason_1"] == "text"
    keys = query(
        url,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'lead_scores'::regclass AND i.indisprimary",
    )
    assert sorted(keys["attname"]) == [s.AS_OF, s.LEAD_ID]
    # the password is in no output, manifest, MLflow param, artifact or store (only in the user's config)
    printed += training + capsys.readouterr().out
    assert PASSWORD not in printed
    for path in root.rglob("*"):
        if path.is_file() and "my_configs" not in path.parts:
            assert PASSWORD.encode() not in path.read_bytes(), path
