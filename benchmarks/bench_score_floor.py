"""Benchmark: `leadml-score` on the default data against a hand-written floor script (issue 21).

The floor (``floor`` below, run as ``bench_score_floor.py floor``) does the nightly job's work
on the default data in as little code as it can: it loads the champion, reads the raw source
files (``data/raw/synthetic/*.parquet``), applies the CRM contracts' rules that decide which rows
and values count (missing markers, trimmed ids, ISO 8601 timestamps with or without an offset,
"in the future" against now, category spellings and synonyms, allowed values, ranges, duplicate
keys kept most complete, outcomes and activities of unknown leads, leads whose only outcome rows
were rejected) and computes the champion's features of the leads open as of the run date
(``latest``: the day after the data's last timestamp) in one DuckDB session, with the definitions
of ``leadml.data.features`` (windows, recency weights, velocity, days since, seniority, e-mail
domain, firmographics). Then LightGBM's own ``predict(pred_contrib=True)`` (exact TreeSHAP:
contributions and, by their sum, the margin), the champion's calibration, percentile, tier and
expected value, and one Parquet file of the scored leads with every contribution.

It leaves out what leadml does beyond that: quarantine files, the manifest and the reuse check,
bucketing, the model-input check, drift (PSI), reasons in words, groups and sub-scores, the trend
against the previous partition, the run record and MLflow tracking. Where it is looser than the
contracts, no row of the default data is concerned: text is trimmed of ASCII whitespace only
(Python's ``str.strip`` also trims Unicode spaces), repeated event ids are found as written (not
trimmed), the extra lead columns are the default data config's (``browser``, ``campaign_code``) and
DuckDB's cast reads the timestamps (pandas' ISO 8601 parser in leadml; both read the four shapes
of this data, and reject its broken values).

The model comes from the registry either way, so loading is on both sides:
``--loader leadml`` (the default) uses leadml's own loader (``tracking.production_model`` and
``tracking.load_scorer``, as ``leadml-score`` does); ``--loader state`` reads the champion's
artifact location from the registry's SQLite tables and reads its saved state
(``artifacts/leadml_state``, :func:`leadml.modelling.scorer_state.read_scorer_state`) without
MLflow's model loading.

The measurement runs, alternating, ``leadml-score`` (``make score``) with ingestion (forced by
spoiling the ``ingest_fingerprint`` of ``data/scoring/synthetic/interim/manifest.json``, so
``ingest_unless_unchanged`` ingests again), ``leadml-score`` with the ingestion reused, and the
floor with each loader, each in a fresh process under ``/usr/bin/time`` (wall time and peak
resident memory), ``--repeats`` times; medians go to benchmarks/RESULTS.md. Before timing, the
floor's features are compared with leadml's for the same date (``check`` alone).

    .venv/bin/python benchmarks/bench_score_floor.py [--repeats 3]
    .venv/bin/python benchmarks/bench_score_floor.py floor [--loader leadml|state] [--explainer fast]
    .venv/bin/python benchmarks/bench_score_floor.py check

Needs the trained default project (``make train``) and duckdb (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# only the standard library up here: the floor's subprocess pays for what it imports, nothing more

ROOT = Path(__file__).resolve().parents[1]
RAW_DIR = ROOT / "data" / "raw" / "synthetic"
DATA_CONFIG = ROOT / "conf" / "data" / "synthetic.yaml"
TIERS_CONFIG = ROOT / "conf" / "tiers" / "probability.yaml"
SCORING_INTERIM = ROOT / "data" / "scoring" / "synthetic" / "interim"
SCORED = ROOT / "data" / "scored" / "synthetic"
FLOOR_OUTPUT = ROOT / "data" / "bench" / "score-floor"
REGISTRY = ROOT / "mlflow.db"
REGISTERED_MODEL = "leadml-synthetic"
BEGIN, END = "<!-- score-floor:begin -->", "<!-- score-floor:end -->"
DAY_S = 86_400
FORCED = "spoilt by benchmarks/bench_score_floor.py: ingest again"


# --------------------------------------------------------------------------- the floor: the model
def load_champion(loader: str) -> Any:
    """The champion's ``LeadScorer`` from the registry in ``mlflow.db`` (see the module docstring)."""
    if loader == "leadml":
        import mlflow

        from leadml.adapters import tracking

        mlflow.set_tracking_uri(f"sqlite:///{REGISTRY}")
        model_uri, _ = tracking.production_model(REGISTERED_MODEL)
        return tracking.load_scorer(model_uri)
    from leadml.modelling.scorer_state import read_scorer_state

    with sqlite3.connect(f"file:{REGISTRY}?mode=ro", uri=True) as registry:
        row = registry.execute(
            "select v.storage_location from registered_model_aliases a join model_versions v "
            "on v.name = a.name and v.version = a.version where a.name = ? and a.alias = 'champion'",
            (REGISTERED_MODEL,),
        ).fetchone()
    if row is None:
        sys.exit(f"no champion of {REGISTERED_MODEL} in {REGISTRY}: run make train")
    return read_scorer_state(Path(row[0].removeprefix("file://")) / "artifacts" / "leadml_state")


# --------------------------------------------------------------------------- the floor: SQL
def _text(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _texts(values: Iterable[str]) -> str:
    """A SQL list literal, for ``list_contains``."""
    return "[" + ", ".join(_text(v) for v in values) + "]"


def _respelt(token: str, synonyms: Mapping[str, str]) -> str:
    """SQL: the column ``token`` mapped through ``synonyms`` ({spelling: canonical})."""
    pairs = ", ".join(f"{_text(k)}: {_text(v)}" for k, v in sorted(synonyms.items()) if k != v)
    return f"coalesce(map_extract_value(MAP {{{pairs}}}, {token}), {token})" if pairs else token


class Rules:
    """The contract settings the floor's SQL needs: markers, spellings, allowed values, seniority."""

    def __init__(self, markers: Sequence[str], free_domains: Sequence[str]) -> None:
        from leadml.data import schema as s
        from leadml.data.contracts import DEFAULT_MISSING_MARKERS, DEFAULT_SYNONYMS, squashed_spellings
        from leadml.data.features import SENIORITY_RULES

        self.markers = sorted({m.strip().casefold() for m in (*DEFAULT_MISSING_MARKERS, *markers)})
        self.free_domains = sorted(free_domains)
        self.statuses, self.types, self.pages = s.STATUSES, s.ACTIVITY_TYPES, s.PAGE_CATEGORIES
        self.synonyms = {
            column: dict(DEFAULT_SYNONYMS.get(column, {}))
            for column in (s.SOURCE, s.COUNTRY, s.INDUSTRY, s.STATUS, s.ACTIVITY_TYPE, s.PAGE_CATEGORY)
        }
        # closed categories also take their values written without the separator ("pageview")
        for column, allowed in (
            (s.STATUS, s.STATUSES), (s.ACTIVITY_TYPE, s.ACTIVITY_TYPES), (s.PAGE_CATEGORY, s.PAGE_CATEGORIES)
        ):  # fmt: skip
            self.synonyms[column] = {**squashed_spellings(allowed), **self.synonyms[column]}
        # RE2 has no look-behind: "president" not after "vice " or "vice-" is tested on its own
        president = "|(?<!vice )(?<!vice-)president"
        self.seniority = [(level, pattern.replace(president, "")) for level, pattern in SENIORITY_RULES]
        if any("(?<" in pattern for _, pattern in self.seniority):
            raise SystemExit("leadml's seniority rules changed: update bench_score_floor.py")

    def macros(self) -> list[str]:
        whitespace = _text(" \t\n\x0b\x0c\r")  # str.strip's ASCII whitespace, as characters
        return [
            f"CREATE MACRO stripped(x) AS trim(CAST(x AS VARCHAR), {whitespace})",
            f"CREATE MACRO cleaned(x) AS CASE WHEN list_contains({_texts(self.markers)}, lower(stripped(x))) "
            "THEN NULL ELSE stripped(x) END",
            r"CREATE MACRO token(x) AS trim(regexp_replace(lower(cleaned(x)), '[\s\-.]+', '_', 'g'), '_')",
            "CREATE MACRO parsed(x) AS try_cast(cleaned(x) AS TIMESTAMPTZ)",
            "CREATE MACRO seconds(ts) AS CAST(floor(epoch_us(ts) / 1000000.0) AS BIGINT)",
            "CREATE MACRO number(x) AS CASE WHEN isnan(CAST(x AS DOUBLE)) THEN NULL "
            "ELSE CAST(x AS DOUBLE) END",
            "CREATE MACRO unreal(x) AS coalesce(isinf(x), false)",
            "CREATE MACRO untimely(ts, now_us) AS coalesce(epoch_us(ts) > now_us OR ts < TIMESTAMPTZ "
            "'1900-01-01 00:00:00+00', false)",
        ]

    def seniority_sql(self, title: str) -> str:
        """SQL of ``features.seniority_from_title`` of the text column ``title``."""
        text = rf"regexp_replace(lower({title}), '[_/,&]', ' ', 'g')"
        cases = []
        for level, pattern in self.seniority:
            test = f"regexp_matches({text}, {_text(pattern)})"
            if level == "c_level":
                alone = rf"regexp_replace({text}, 'vice[ -]president', 'vice_', 'g')"
                test = rf"({test} OR regexp_matches({alone}, '\bpresident\b'))"
            cases.append(f"WHEN {test} THEN {_text(level)}")
        return (
            f"CASE WHEN coalesce(stripped({text}), '') = '' THEN 'unknown' {' '.join(cases)} ELSE 'other' END"
        )


def contract_tables(con: Any, rules: Rules, raw_dir: Path, now_us: int) -> None:
    """accounts_ok, leads_ok, outcomes_ok and activities_ok: the accepted rows, typed."""

    def source(table: str) -> str:
        return f"read_parquet({_text(str(raw_dir / f'{table}.parquet'))}, file_row_number = true)"

    syn = rules.synonyms
    con.execute(f"""
        CREATE TEMP TABLE accounts_ok AS
        WITH typed AS (
            SELECT file_row_number AS pos, cleaned(account_id) AS account_id,
                   cleaned(company_name) AS company_name, token(industry) AS industry,
                   number(employees) AS employees, number(annual_revenue) AS annual_revenue,
                   token(country) AS country, number(founded_year) AS founded_year
            FROM {source("accounts")})
        SELECT pos, account_id, {_respelt("industry", syn["industry"])} AS industry,
               {_respelt("country", syn["country"])} AS country, employees, annual_revenue, founded_year,
               (account_id IS NOT NULL)::INT + (company_name IS NOT NULL)::INT + (industry IS NOT NULL)::INT
               + (employees IS NOT NULL)::INT + (annual_revenue IS NOT NULL)::INT
               + (country IS NOT NULL)::INT + (founded_year IS NOT NULL)::INT AS filled
        FROM typed
        WHERE account_id IS NOT NULL AND NOT coalesce(employees < 0 OR employees <> floor(employees)
              OR annual_revenue < 0 OR founded_year < 1800 OR founded_year <> floor(founded_year), false)
              AND NOT unreal(employees) AND NOT unreal(annual_revenue) AND NOT unreal(founded_year)
        QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY filled DESC, pos) = 1
    """)  # fmt: skip
    con.execute(f"""
        CREATE TEMP TABLE leads_valid AS
        WITH typed AS (
            SELECT file_row_number AS pos, cleaned(lead_id) AS lead_id, parsed(created_at) AS created_at,
                   cleaned(account_id) AS account_id, token(source) AS source, token(owner) AS owner,
                   cleaned(job_title) AS job_title, token(country) AS country,
                   cleaned(first_name) AS first_name, cleaned(last_name) AS last_name,
                   cleaned(email) AS email, cleaned(phone) AS phone,
                   number(estimated_deal_value) AS estimated_deal_value,
                   token(browser) AS browser, token(campaign_code) AS campaign_code
            FROM {source("leads")})
        SELECT pos, lead_id, created_at, seconds(created_at) AS created_s, account_id,
               {_respelt("source", syn["source"])} AS source,
               {_respelt("country", syn["country"])} AS country,
               job_title, email, estimated_deal_value, browser, campaign_code,
               (lead_id IS NOT NULL)::INT + (created_at IS NOT NULL)::INT + (account_id IS NOT NULL)::INT
               + (source IS NOT NULL)::INT + (owner IS NOT NULL)::INT + (job_title IS NOT NULL)::INT
               + (country IS NOT NULL)::INT + (first_name IS NOT NULL)::INT + (last_name IS NOT NULL)::INT
               + (email IS NOT NULL)::INT + (phone IS NOT NULL)::INT
               + (estimated_deal_value IS NOT NULL)::INT + (browser IS NOT NULL)::INT
               + (campaign_code IS NOT NULL)::INT AS filled
        FROM typed
        WHERE lead_id IS NOT NULL AND created_at IS NOT NULL AND NOT untimely(created_at, {now_us})
              AND NOT coalesce(estimated_deal_value < 0, false) AND NOT unreal(estimated_deal_value)
        QUALIFY row_number() OVER (PARTITION BY lead_id ORDER BY filled DESC, pos) = 1
    """)  # fmt: skip
    # outcomes: value rules, then the row rules on the rows whose values passed, then duplicates
    con.execute(f"""
        CREATE TEMP TABLE outcomes_all AS
        WITH typed AS (
            SELECT file_row_number AS pos, stripped(lead_id) AS raw_lead_id, cleaned(lead_id) AS lead_id,
                   token(status) AS status, cleaned(closed_at) AS closed_text,
                   parsed(closed_at) AS closed_at, number(deal_value) AS deal_value
            FROM {source("outcomes")}),
        respelt AS (SELECT * REPLACE ({_respelt("status", syn["status"])} AS status) FROM typed),
        checked AS (
            SELECT t.*, l.created_at AS lead_created_at, l.lead_id IS NOT NULL AS known_lead,
                   t.lead_id IS NULL OR t.status IS NULL
                   OR NOT list_contains({_texts(rules.statuses)}, t.status)
                   OR (t.closed_text IS NOT NULL AND t.closed_at IS NULL) OR untimely(t.closed_at, {now_us})
                   OR coalesce(t.deal_value < 0, false) OR unreal(t.deal_value) AS value_bad
            FROM respelt t LEFT JOIN leads_valid l ON l.lead_id = t.lead_id)
        SELECT pos, raw_lead_id, lead_id, status, closed_at, seconds(closed_at) AS closed_s,
               value_bad OR NOT known_lead OR (status IN ('won', 'lost') AND closed_at IS NULL)
               OR (status = 'open' AND closed_at IS NOT NULL)
               OR coalesce(closed_at < lead_created_at, false) AS bad,
               (lead_id IS NOT NULL)::INT + (status IS NOT NULL)::INT + (closed_at IS NOT NULL)::INT
               + (deal_value IS NOT NULL)::INT AS filled
        FROM checked
    """)  # fmt: skip
    con.execute("""
        CREATE TEMP TABLE outcomes_ok AS
        SELECT lead_id, status, closed_at, closed_s FROM outcomes_all WHERE NOT bad
        QUALIFY row_number() OVER (PARTITION BY lead_id ORDER BY filled DESC, pos) = 1
    """)
    # a lead whose only outcome rows were rejected is rejected too; one without any is open
    con.execute("""
        CREATE TEMP TABLE leads_ok AS
        SELECT * FROM leads_valid
        WHERE lead_id IN (SELECT lead_id FROM outcomes_ok)
           OR lead_id NOT IN (SELECT raw_lead_id FROM outcomes_all WHERE raw_lead_id IS NOT NULL)
    """)
    # activities (two million rows): the work per value is done once per distinct value (types, pages,
    # lead ids, each joined back); DuckDB's cast to TIMESTAMPTZ trims whitespace itself, and a
    # required timestamp that is a missing marker is rejected whether read as missing or unparseable
    con.execute(f"""
        CREATE TEMP TABLE activity_kinds AS
        SELECT raw, CASE WHEN list_contains({_texts(rules.types)}, value) THEN value END AS value
        FROM (SELECT raw, {_respelt("value", syn["activity_type"])} AS value
              FROM (SELECT raw, token(raw) AS value
                    FROM (SELECT DISTINCT activity_type AS raw FROM {source("activities")})))
    """)  # fmt: skip
    con.execute(f"""
        CREATE TEMP TABLE activity_pages AS
        SELECT raw, CASE WHEN list_contains({_texts(rules.pages)}, value) THEN value END AS value,
               value IS NOT NULL AND NOT list_contains({_texts(rules.pages)}, value) AS bad
        FROM (SELECT raw, {_respelt("value", syn["page_category"])} AS value
              FROM (SELECT raw, token(raw) AS value
                    FROM (SELECT DISTINCT page_category AS raw FROM {source("activities")})))
    """)  # fmt: skip
    # the lead ids as written that name an accepted lead: the others' rows are rejected
    con.execute(f"""
        CREATE TEMP TABLE activity_leads AS
        SELECT raw, lead_id FROM (SELECT raw, cleaned(raw) AS lead_id
                                  FROM (SELECT DISTINCT lead_id AS raw FROM {source("activities")}))
        WHERE lead_id IN (SELECT lead_id FROM leads_ok)
    """)  # fmt: skip
    con.execute(f"""
        CREATE TEMP TABLE activities_valid AS
        SELECT * FROM (
            SELECT a.file_row_number AS pos, a.event_id, l.lead_id,
                   try_cast(a.timestamp AS TIMESTAMPTZ) AS ts, k.value AS activity_type,
                   p.value AS page_category, coalesce(p.bad, false) AS page_bad
            FROM {source("activities")} a
            JOIN activity_leads l ON l.raw = a.lead_id
            JOIN activity_kinds k ON k.raw = a.activity_type
            LEFT JOIN activity_pages p ON p.raw = a.page_category)
        WHERE ts IS NOT NULL AND NOT untimely(ts, {now_us}) AND activity_type IS NOT NULL AND NOT page_bad
    """)  # fmt: skip
    # a repeated event id keeps its most complete row (event id, lead, time and type are all there)
    con.execute("""
        CREATE TEMP TABLE repeated_events AS
        SELECT event_id FROM activities_valid WHERE event_id IS NOT NULL GROUP BY event_id HAVING count(*) > 1
    """)
    losers = """
        SELECT pos FROM activities_valid JOIN repeated_events USING (event_id)
        WHERE cleaned(event_id) IS NOT NULL
        QUALIFY row_number() OVER (
            PARTITION BY cleaned(event_id) ORDER BY (page_category IS NOT NULL)::INT DESC, pos) > 1
    """
    repeated = con.execute("SELECT count(*) FROM repeated_events").fetchall()[0][0]
    con.execute(f"""
        CREATE TEMP TABLE activities_ok AS
        SELECT lead_id, seconds(ts) AS time_s, epoch_us(ts) AS ts_us, activity_type, page_category
        FROM activities_valid {f"WHERE pos NOT IN ({losers})" if repeated else ""}
    """)


def latest_us(con: Any) -> int:
    """The data's last timestamp (microseconds): of the accepted leads, outcomes and activities."""
    return con.execute("""
        SELECT greatest((SELECT max(epoch_us(created_at)) FROM leads_ok),
                        (SELECT max(epoch_us(closed_at)) FROM outcomes_ok
                         WHERE lead_id IN (SELECT lead_id FROM leads_ok)),
                        (SELECT max(ts_us) FROM activities_ok))
    """).fetchall()[0][0]


def feature_sql(rules: Rules, settings: Mapping[str, Any], t: int, year: int) -> tuple[str, str]:
    """SQL of the features as of ``t`` (seconds) of every lead open then (``open_lead_features``):
    one row per open lead (its row number, static and whole-activity features), and one row per
    (open lead, channel) with that channel's counts, recency-weighted count and last event."""
    from leadml.data import schema as s

    channels = [*s.ACTIVITY_TYPES, *(f"page_{c}" for c in s.PAGE_CATEGORIES)]
    windows = sorted(int(w) for w in settings["windows_days"])
    half_life = float(settings["half_life_days"])
    recent, baseline = int(settings["velocity_recent_days"]), int(settings["velocity_baseline_days"])
    lookback = max(*windows, recent + baseline, half_life * 20)  # features.RECENCY_HALF_LIVES
    age, day = f"({t} - time_s)", float(DAY_S)
    common = f"""
        WITH open_leads AS (
            SELECT row_number() OVER (ORDER BY l.lead_id) - 1 AS row, l.*
            FROM leads_ok l LEFT JOIN outcomes_ok o USING (lead_id)
            WHERE l.created_s < {t} AND NOT coalesce(o.closed_s <= {t}, false)),
        events AS (
            SELECT o.row, a.time_s, a.activity_type, a.page_category
            FROM activities_ok a JOIN open_leads o USING (lead_id) WHERE a.time_s < {t})"""
    per_lead = ", ".join(
        [
            *(f"count(*) FILTER (WHERE {age} <= {w * DAY_S})::DOUBLE AS n_events_{w}d" for w in windows),
            f"count(*) FILTER (WHERE {age} <= {recent * DAY_S}) / {float(recent)} - count(*) FILTER "
            f"(WHERE {age} > {recent * DAY_S} AND {age} <= {(recent + baseline) * DAY_S}) "
            f"/ {float(baseline)} AS engagement_velocity",
            f"({t} - max(time_s)) / {day} AS days_since_last_activity",
            f"({t} - min(time_s)) / {day} AS days_since_first_activity",
        ]
    )
    activity = [f"n_events_{w}d" for w in windows]
    filled = [f"coalesce(a.{n}, 0.0) AS {n}" for n in [*activity, "engagement_velocity"]]
    filled += ["a.days_since_last_activity", "a.days_since_first_activity"]
    free = _texts(rules.free_domains)
    domain = r"nullif(regexp_extract(lower(stripped(l.email)), '@([^@\s]+)$', 1), '')"
    leads = f"""{common},
        activity AS (SELECT row, {per_lead} FROM events GROUP BY row)
        SELECT l.lead_id, l.source, l.country, l.browser, l.campaign_code,
               {rules.seniority_sql("l.job_title")} AS seniority,
               CASE WHEN {domain} IS NULL THEN NULL WHEN list_contains({free}, {domain}) THEN 0.0 ELSE 1.0 END
                   AS corporate_email,
               c.industry, c.country AS company_country, c.employees, c.annual_revenue,
               l.estimated_deal_value, ({t} - l.created_s) / {day} AS lead_age_days,
               {year} - c.founded_year AS company_age_years,
               CASE WHEN c.employees > 0 THEN c.annual_revenue / c.employees END AS revenue_per_employee,
               {", ".join(filled)}
        FROM open_leads l LEFT JOIN accounts_ok c USING (account_id) LEFT JOIN activity a USING (row)
        ORDER BY l.row
    """
    weight = f"pow(2.0, -({age} / {day}) / {half_life})"
    per_channel = f"""{common},
        channel_events AS (
            SELECT row, time_s, activity_type AS channel FROM events
            UNION ALL
            SELECT row, time_s, 'page_' || page_category FROM events
            WHERE activity_type = 'page_view' AND page_category IS NOT NULL)
        SELECT row, list_position({_texts(channels)}, channel) - 1 AS channel,
               {", ".join(f"count(*) FILTER (WHERE {age} <= {w * DAY_S})::DOUBLE AS n_{w}" for w in windows)},
               coalesce(sum({weight}) FILTER (WHERE time_s >= {t - int(lookback * DAY_S)}), 0.0) AS rw,
               ({t} - max(time_s)) / {day} AS last
        FROM channel_events GROUP BY row, channel
    """
    return leads, per_channel


def floor_features(scorer: Any, raw_dir: Path, now_us: int) -> tuple[Any, int]:
    """(the open leads' features as an Arrow table, the run date in seconds) from the raw files.

    The per-channel figures come out of DuckDB one row per (lead, channel) and are laid into
    their columns here (zero counts, and no "days since", where a lead has no such event).
    """
    import duckdb
    import numpy as np
    import pyarrow as pa
    import yaml

    from leadml.data import schema as s

    data = yaml.safe_load(DATA_CONFIG.read_text())
    if data.get("timezone", "UTC") != "UTC" or data.get("reference_time") is not None:
        raise SystemExit("the floor reads naive timestamps as UTC and 'now' as the future's edge")
    settings = scorer.feature_settings
    rules = Rules(data.get("missing_markers") or (), settings["free_email_domains"])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for macro in rules.macros():
        con.execute(macro)
    contract_tables(con, rules, raw_dir, now_us)
    t = (latest_us(con) // (DAY_S * 1_000_000) + 1) * DAY_S  # score.as_of=latest: the next midnight
    leads_sql, channels_sql = feature_sql(rules, settings, t, time.gmtime(t).tm_year)
    table = con.sql(leads_sql).to_arrow_table()
    per_channel = con.sql(channels_sql).to_arrow_table()
    rows = per_channel.column("row").to_numpy()
    channel = per_channel.column("channel").to_numpy()
    channels = [*s.ACTIVITY_TYPES, *(f"page_{c}" for c in s.PAGE_CATEGORIES)]
    windows = sorted(int(w) for w in settings["windows_days"])
    figures = [(f"n_{w}", "n_{c}_" + f"{w}d", 0.0) for w in windows]
    figures += [("rw", "rw_{c}", 0.0), ("last", "days_since_last_{c}", np.nan)]
    for source, name, empty in figures:
        values = np.full((table.num_rows, len(channels)), empty)
        values[rows, channel] = per_channel.column(source).to_numpy()
        for c, label in enumerate(channels):
            table = table.append_column(name.format(c=label), pa.array(values[:, c]))
    return table, t


def model_matrix(features: Any, scorer: Any) -> Any:
    """The model's columns in training order as LightGBM's float matrix: category codes or NaN."""
    import numpy as np

    categories = scorer.model.categories
    matrix = np.empty((features.num_rows, len(scorer.feature_names)), dtype=np.float64)
    for j, name in enumerate(scorer.feature_names):
        column = features.column(name)
        if name in categories:
            codes = {value: float(code) for code, value in enumerate(categories[name])}
            matrix[:, j] = [codes.get(value, np.nan) for value in column.to_pylist()]
        else:
            matrix[:, j] = column.to_numpy(zero_copy_only=False)
    return matrix


def floor(args: argparse.Namespace) -> None:
    """The floor: load, read and validate, features, predict, explain, write; its phases as JSON."""
    started = time.perf_counter()
    now_us = time.time_ns() // 1000
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        phases[name] = round(time.perf_counter() - started - sum(phases.values()), 3)

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    lap("imports")
    scorer = load_champion(args.loader)
    lap("model")
    features, t = floor_features(scorer, args.raw_dir, now_us)
    lap("read+contracts+features")
    booster, model, matrix = scorer.model.booster, scorer.model, model_matrix(features, scorer)
    if args.explainer == "fast":  # leadml's compiled TreeSHAP: the same numbers (for comparison only)
        contributions = scorer.tree_explainer().shap_values(matrix) * model.margin_scale
    else:
        contributions = (
            booster.predict(matrix, pred_contrib=True, num_iteration=model.best_iteration)
            * model.margin_scale
        )
    margin = contributions.sum(axis=1)
    probability = scorer.calibrator.predict_proba(margin)
    lap("predict+explain")
    tiers = yaml.safe_load(TIERS_CONFIG.read_text())
    tier = np.full(len(probability), tiers["floor_tier"], dtype=object)
    for name, minimum in sorted(tiers["thresholds"].items(), key=lambda item: item[1]):
        tier[probability >= minimum] = name
    ordered = np.sort(probability)
    percentile = 100.0 * np.searchsorted(ordered, probability, side="right") / len(ordered)
    deal_value = features.column("estimated_deal_value").to_numpy(zero_copy_only=False)
    as_of = pa.array(np.full(len(probability), t * 1_000_000, dtype=np.int64), pa.timestamp("us", tz="UTC"))
    table = pa.table(
        {
            "lead_id": features.column("lead_id"),
            "as_of": as_of,
            "probability": probability,
            "margin": margin,
            "percentile": percentile,
            "tier": pa.array(tier.tolist(), pa.string()),
            "expected_value": probability * deal_value,
            "base_value": contributions[:, -1],
            **{f"contribution:{name}": contributions[:, j] for j, name in enumerate(scorer.feature_names)},
        }
    )
    partition = args.out / f"as_of={time.strftime('%Y-%m-%d', time.gmtime(t))}"
    partition.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, partition / "part-0.parquet")
    lap("write")
    print(json.dumps({"leads": table.num_rows, "as_of": t, "output": str(partition), "phases": phases}))


# --------------------------------------------------------------------------- features agreement
def leadml_features(scorer: Any, as_of_s: int) -> Any:
    """The features leadml-score computes as of ``as_of_s`` from its validated copy (CrmOpenLeads)."""
    import pandas as pd

    from leadml.data.features import FeatureSettings
    from leadml.scoring.pandas_engine import CrmOpenLeads

    as_of = pd.Timestamp(as_of_s, unit="s", tz="UTC")
    open_leads = CrmOpenLeads(SCORING_INTERIM, as_of, FeatureSettings.from_mapping(scorer.feature_settings))
    with tempfile.TemporaryDirectory(prefix="score-floor-") as work:
        open_leads.split(Path(work) / "run", 1)
        features, _ = open_leads.features(0)
    return features


def compare_features(floor_table: Any, theirs: Any, names: Sequence[str], categorical: Iterable[str]) -> dict:
    """Per feature: equal exactly, or the largest absolute and relative difference (and rows)."""
    import numpy as np
    import pandas as pd

    ours = floor_table.to_pandas().set_index("lead_id")
    theirs = theirs.set_index("lead_id")
    report: dict[str, Any] = {
        "floor_leads": len(ours),
        "leadml_leads": len(theirs),
        "only_floor": sorted(set(ours.index) - set(theirs.index))[:5],
        "only_leadml": sorted(set(theirs.index) - set(ours.index))[:5],
        "columns": {},
    }
    common = ours.index.intersection(theirs.index)
    ours, theirs = ours.loc[common], theirs.loc[common]
    for name in names:
        mine, other = ours[name], theirs[name]
        if name in set(categorical):
            a = mine.astype(object).where(mine.notna(), None).to_numpy()
            b = other.astype(object).where(other.notna(), None).astype(object).to_numpy()
            differ = int(sum(x != y for x, y in zip(a, b, strict=True)))
            report["columns"][name] = {"kind": "categorical", "rows_differing": differ}
            continue
        a = pd.to_numeric(mine, errors="coerce").to_numpy(dtype=np.float64)
        b = pd.to_numeric(other, errors="coerce").to_numpy(dtype=np.float64)
        both_missing = np.isnan(a) & np.isnan(b)
        exact = (a == b) | both_missing
        one_missing = np.isnan(a) ^ np.isnan(b)
        diff = np.where(exact | one_missing, 0.0, np.abs(a - b))
        scale = np.maximum(np.abs(b), 1e-300)
        report["columns"][name] = {
            "kind": "numeric",
            "rows_differing": int((~exact).sum()),
            "missing_in_one": int(one_missing.sum()),
            "max_abs": float(diff.max(initial=0.0)),
            "max_rel": float((diff / scale).max(initial=0.0)),
        }
    return report


def compare_scores(floor_partition: Path) -> dict[str, Any] | None:
    """The floor's probabilities, margins and tiers against leadml-score's partition of that date."""
    import numpy as np
    import pandas as pd

    theirs_path = SCORED / floor_partition.name / "part-0.parquet"
    if not theirs_path.exists():
        return None
    ours = pd.read_parquet(floor_partition / "part-0.parquet").set_index("lead_id")
    theirs = pd.read_parquet(theirs_path).set_index("lead_id")
    common = ours.index.intersection(theirs.index)
    ours, theirs = ours.loc[common], theirs.loc[common]
    return {
        "leads": len(common),
        "probability_max_abs": float(np.abs(ours["probability"] - theirs["probability"]).max()),
        "margin_max_abs": float(np.abs(ours["margin"] - theirs["margin"]).max()),
        "base_value_max_abs": float(np.abs(ours["base_value"] - theirs["base_value"]).max()),
        "tiers_differing": int((ours["tier"] != theirs["tier"]).sum()),
    }


def check(loader: str = "state", quiet: bool = False) -> dict[str, Any]:
    """The floor's features against leadml's for the same date (``leadml_features``)."""
    scorer = load_champion(loader)
    features, t = floor_features(scorer, RAW_DIR, time.time_ns() // 1000)
    theirs = leadml_features(scorer, t)
    report = compare_features(features, theirs, scorer.feature_names, scorer.model.categories)
    report["as_of"] = time.strftime("%Y-%m-%d", time.gmtime(t))
    if not quiet:
        for name, figures in report["columns"].items():
            if figures["rows_differing"]:
                print(f"  {name}: {figures}")
    return report


def _families(names: Iterable[str]) -> str:
    """Feature names shortened to their families: ``rw_* (16)``."""
    counts: dict[str, int] = {}
    for name in names:
        family = name.split("_")[0] + "_*" if name.startswith(("n_", "rw_", "days_since_")) else name
        family = "days_since_*" if family == "days_*" else family
        counts[family] = counts.get(family, 0) + 1
    return ", ".join(f"{family} ({n})" if n > 1 else family for family, n in counts.items())


def agreement_sentence(report: Mapping[str, Any], scores: Mapping[str, Any] | None) -> str:
    """What the features check found, in one paragraph for RESULTS.md and the console."""
    columns = report["columns"]
    exact = [n for n, f in columns.items() if f["rows_differing"] == 0]
    inexact = {n: f for n, f in columns.items() if f["rows_differing"]}
    same = not report["only_floor"] and not report["only_leadml"]
    text = (
        f"Features as of {report['as_of']} (`bench_score_floor.py check`: the floor's DuckDB features "
        "against `CrmOpenLeads.features`, what `leadml-score` computes from its validated copy): the "
        f"floor's {report['floor_leads']:,} open leads {'are' if same else 'are not'} leadml's "
        f"{report['leadml_leads']:,}; {len(exact)} of {len(columns)} features equal in every row "
        f"({_families(exact)})"
    )
    if inexact:
        categorical = [n for n, f in inexact.items() if f["kind"] == "categorical"]
        missing = sum(f.get("missing_in_one", 0) for f in inexact.values())
        worst = max(f.get("max_rel", 0.0) for f in inexact.values())
        rows = max(f["rows_differing"] for f in inexact.values())
        text += (
            f"; {_families(inexact)} differ in up to {rows:,} rows by at most {worst:.1e} relative "
            f"({missing} values missing on one side only, {len(categorical)} categorical columns)"
        )
        if all(name.startswith("rw_") for name in inexact):
            text += (
                ": float rounding of the recency-weighted sums, which DuckDB adds up in another (and "
                "run to run varying) order than numpy's bincount, with pow(2, x) for numpy's exp2"
            )
    if scores:
        text += (
            f". The floor's scores against `leadml-score`'s partition of that date: probability within "
            f"{scores['probability_max_abs']:.1e}, margin within {scores['margin_max_abs']:.1e}, "
            f"{scores['tiers_differing']} tiers differing of {scores['leads']:,}"
        )
    return text + "."


# --------------------------------------------------------------------------- the measurement
def timed_run(command: list[str], env: Mapping[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak resident GB, stdout) of ``command`` in a fresh process."""
    with tempfile.NamedTemporaryFile(prefix="score-floor-time-", suffix=".txt") as report:
        if Path("/usr/bin/time").exists():
            wrapped = ["/usr/bin/time", "-f", "%M", "-o", report.name, *command]
        else:  # a fresh Python whose only child is the command reports the child's peak
            probe = (
                "import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); "
                "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
                "sys.exit(r.returncode)"
            )
            wrapped = [sys.executable, "-c", probe, report.name, *command]
        started = time.perf_counter()
        done = subprocess.run(wrapped, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        peak_kb = float(Path(report.name).read_text().split()[-1])
    return wall, peak_kb / 2**20, done.stdout


def force_ingestion() -> None:
    """Spoil the scoring copy's ingest fingerprint, so the next leadml-score ingests again."""
    manifest = SCORING_INTERIM / "manifest.json"
    record = json.loads(manifest.read_text())
    record["ingest_fingerprint"] = FORCED
    manifest.write_text(json.dumps(record, indent=2))


def score_command() -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "leadml-score")]


def floor_command(loader: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "floor", "--loader", loader]


PROGRAMS = {
    "leadml-score, ingestion": "ingest",
    "leadml-score, ingestion reused": "reused",
    "floor, leadml's loader": "leadml",
    "floor, registry state": "state",
}


def measure(repeats: int) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[dict[str, float]]]]:
    """Every program ``repeats`` times, alternating (the order rotates by one each round)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in PROGRAMS}
    phases: dict[str, list[dict[str, float]]] = {"leadml": [], "state": []}
    names = list(PROGRAMS)
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            kind = PROGRAMS[name]
            if kind == "ingest":
                force_ingestion()
            command = score_command() if kind in ("ingest", "reused") else floor_command(kind)
            wall, peak, out = timed_run(command)
            if kind in ("ingest", "reused") and ("sources unchanged" in out) != (kind == "reused"):
                sys.exit(f"{name}: expected {'a reused' if kind == 'reused' else 'a new'} ingestion:\n{out}")
            if kind in phases:
                phases[kind].append(json.loads(out.strip().splitlines()[-1])["phases"])
            runs[name].append((wall, peak))
            print(f"round {round_ + 1}: {name}: {wall:.2f} s, {peak:.2f} GB", flush=True)
    return runs, phases


def _median_phases(records: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in records) for key in records[0]} if records else {}


def write_results(
    runs: Mapping[str, list[tuple[float, float]]],
    phases: Mapping[str, list[dict[str, float]]],
    agreement: str,
    command: str,
) -> list[str]:
    from bench_features import machine, replace_section

    wall = {name: statistics.median(w for w, _ in values) for name, values in runs.items()}
    peak = {name: statistics.median(p for _, p in values) for name, values in runs.items()}
    floor_name = "floor, leadml's loader"
    strict_name = "floor, registry state"
    rows = []
    for name in PROGRAMS:
        walls = ", ".join(f"{w:.1f}" for w, _ in runs[name])
        peaks = ", ".join(f"{p:.2f}" for _, p in runs[name])
        rows.append(
            f"| {name} | {wall[name]:.1f} s | {walls} | {peak[name]:.2f} GB | {peaks} | "
            f"{wall[name] / wall[floor_name]:.2f}x | {wall[name] / wall[strict_name]:.2f}x | "
            f"{peak[name] / peak[floor_name]:.2f}x | {peak[name] / peak[strict_name]:.2f}x |"
        )
    phase_lines = [
        f"{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in _median_phases(phases[kind]).items())
        for label, kind in ((floor_name, "leadml"), (strict_name, "state"))
    ]
    lines = [
        BEGIN,
        "## `leadml-score` on the default data against a floor script (issue 21)",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}. Command: `{command}`: `leadml-score` "
        "(`make score`, default config, as of `latest`) with ingestion (forced by spoiling the scoring "
        "copy's `ingest_fingerprint`) and with the ingestion reused, and the floor "
        "(`bench_score_floor.py floor`: the raw files read, the contracts' rules and the champion's "
        "features in one DuckDB session, LightGBM's `pred_contrib`, calibration, percentile, tier, one "
        "Parquet file) with leadml's model loader and with the champion's saved state read straight "
        "from the registry, alternating, each in a fresh process under `/usr/bin/time`; medians of "
        f"{len(next(iter(runs.values())))} rounds.",
        "",
        "| program | wall (median) | runs (s) | peak RSS (median) | runs (GB) | wall / floor | "
        "wall / floor (state) | RSS / floor | RSS / floor (state) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Floor phases (median seconds): " + "; ".join(phase_lines) + ".",
        "",
        agreement,
        END,
    ]
    replace_section("\n".join(lines), BEGIN, END)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what")
    floor_parser = sub.add_parser("floor", help="the floor alone (what the measurement times)")
    floor_parser.add_argument("--loader", choices=["leadml", "state"], default="leadml")
    floor_parser.add_argument(
        "--explainer",
        choices=["lightgbm", "fast"],
        default="lightgbm",
        help="lightgbm: the booster's pred_contrib (the floor); fast: leadml's TreeSHAP, same numbers",
    )
    floor_parser.add_argument("--raw-dir", type=Path, default=RAW_DIR)
    floor_parser.add_argument("--out", type=Path, default=FLOOR_OUTPUT)
    sub.add_parser("check", help="the floor's features against leadml's for the same date")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-check", action="store_true", help="measure without the features check")
    args = parser.parse_args()
    if args.what == "floor":
        floor(args)
        return
    if args.what == "check":
        report = check()
        partition = FLOOR_OUTPUT / f"as_of={report['as_of']}"
        scores = compare_scores(partition) if partition.exists() else None
        print(agreement_sentence(report, scores))
        return
    agreement = "Features not compared in this run (--skip-check)."
    report = None if args.skip_check else check(quiet=True)
    runs, phases = measure(args.repeats)
    if report is not None:
        scores = compare_scores(FLOOR_OUTPUT / f"as_of={report['as_of']}")
        agreement = agreement_sentence(report, scores)
    command = ".venv/bin/python benchmarks/bench_score_floor.py" + "".join(f" {a}" for a in sys.argv[1:])
    print("\n".join(write_results(runs, phases, agreement, command)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
