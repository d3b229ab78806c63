"""Small typed CRM tables for tests, shaped like the output of ingestion."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s

BASE = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday on the snapshot grid for cadence 7


def at(days: float) -> pd.Timestamp:
    """BASE plus a number of days (fractions allowed)."""
    return BASE + pd.to_timedelta(days, unit="D")


def accounts_table(rows: Sequence[dict] | None = None) -> pd.DataFrame:
    default = [
        {
            s.ACCOUNT_ID: "A1",
            s.COMPANY_NAME: "Acme",
            s.INDUSTRY: "software",
            s.EMPLOYEES: 250,
            s.ANNUAL_REVENUE: 4.0e7,
            s.COUNTRY: "us",
            s.FOUNDED_YEAR: 2005,
        },
        {
            s.ACCOUNT_ID: "A2",
            s.COMPANY_NAME: "Globex",
            s.INDUSTRY: "retail",
            s.EMPLOYEES: 12,
            s.ANNUAL_REVENUE: 1.5e6,
            s.COUNTRY: "de",
            s.FOUNDED_YEAR: 2019,
        },
    ]
    return pd.DataFrame(rows if rows is not None else default)


def leads_table(rows: Sequence[dict]) -> pd.DataFrame:
    base = {
        s.ACCOUNT_ID: "A1",
        s.SOURCE: "web_organic",
        s.OWNER: "rep_01",
        s.JOB_TITLE: "Director of IT",
        s.COUNTRY: "us",
        s.FIRST_NAME: "Ada",
        s.LAST_NAME: "Lovelace",
        s.EMAIL: "ada@acme.com",
        s.PHONE: "+1 555 0100",
        s.ESTIMATED_DEAL_VALUE: 10_000.0,
    }
    frame = pd.DataFrame([{**base, **row} for row in rows])
    frame[s.CREATED_AT] = pd.to_datetime(frame[s.CREATED_AT], utc=True).dt.as_unit("ns")
    return frame


def outcomes_table(rows: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[s.LEAD_ID, s.STATUS, s.CLOSED_AT, s.DEAL_VALUE])
    frame[s.CLOSED_AT] = pd.to_datetime(frame[s.CLOSED_AT], utc=True).dt.as_unit("ns")
    frame[s.DEAL_VALUE] = frame[s.DEAL_VALUE].astype("float64")
    return frame


def activities_table(rows: Sequence[tuple]) -> pd.DataFrame:
    """Rows of (lead_id, timestamp, activity_type, page_category or None)."""
    frame = pd.DataFrame(rows, columns=[s.LEAD_ID, s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY])
    frame.insert(0, s.EVENT_ID, [f"E{i}" for i in range(len(frame))])
    frame[s.TIMESTAMP] = pd.to_datetime(frame[s.TIMESTAMP], utc=True).dt.as_unit("ns")
    return frame


def tables(leads: pd.DataFrame, outcomes: pd.DataFrame, activities: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {s.ACCOUNTS: accounts_table(), s.LEADS: leads, s.OUTCOMES: outcomes, s.ACTIVITIES: activities}


@contextlib.contextmanager
def local_tracking() -> Iterator[None]:
    """Inside, runs use the project's own SQLite store whatever ``MLFLOW_TRACKING_URI`` says."""
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield
    finally:  # mlflow.set_tracking_uri exports the URI it is given: that one must not leak out
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


# a project small enough to train in well under a minute, with a gate that always promotes
SMALL_PROJECT: dict[str, Any] = {
    "synthetic.n_leads": 5000,
    "synthetic.start": "2024-07-01",
    "synthetic.end": "2026-01-01",
    "evaluation.bootstrap": 10,
    "evaluation.shap_rows": 200,
    "guards.leakage_max_rows": 20000,
    "model.n_estimators": 80,
    "model.learning_rate": 0.1,
    "model.early_stopping_rounds": 20,
    # a short model search: the configured settings and two more trials
    "selection.trials": 3,
    "promotion.min_roc_auc": 0.5,
    "promotion.max_ece": 1.0,
    "promotion.min_gain_over_logreg": -1.0,
    "promotion.min_gain_over_points": -1.0,
}


def project_config(
    root: Any, name: str, overrides: Sequence[str] = (), changes: Mapping[str, Any] | None = None
) -> Any:
    """Config ``name`` of a small project under ``root``: SMALL_PROJECT, ``changes``, ``overrides``."""
    from hydra import compose, initialize_config_dir

    from leadml.cli import CONFIG_DIR

    settings = {**SMALL_PROJECT, **(changes or {})}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, [f"paths.root={root}", *(f"{k}={v}" for k, v in settings.items()), *overrides])


def train_project(config_for: Callable[[str], Any]) -> None:
    """generate, ingest, features and train, each with ``config_for(stage)``: a champion to score."""
    from leadml.cli import run_features, run_generate, run_ingest, run_train

    for stage, run in (
        ("generate", run_generate),
        ("ingest", run_ingest),
        ("features", run_features),
        ("train", run_train),
    ):
        run(config_for(stage))


def copy_project(trained: Any, target: Any) -> None:
    """Copy a trained project's data, artifacts and SQLite store into ``target`` (so a test may
    break or re-score it) and point the copied store at the copied artifacts."""
    from pathlib import Path

    trained, target = Path(trained), Path(target)
    for name in ("data", "mlruns"):
        shutil.copytree(trained / name, target / name)
    shutil.copy(trained / "mlflow.db", target / "mlflow.db")
    with sqlite3.connect(target / "mlflow.db") as connection:  # the store names the original folder
        for table, column in (
            ("experiments", "artifact_location"),
            ("runs", "artifact_uri"),
            ("model_versions", "source"),
            ("model_versions", "storage_location"),
            ("logged_models", "artifact_location"),
        ):
            with contextlib.suppress(sqlite3.OperationalError):  # a column this MLflow version lacks
                connection.execute(
                    f"update {table} set {column} = replace({column}, ?, ?)", (str(trained), str(target))
                )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the kernel's choice, released at once)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def flat_leads(
    n: int,
    seed: int = 0,
    rates: tuple[float, float] = (0.2, 0.2),
    signal: float = 1.0,
    event: float = 0.5,
) -> pd.DataFrame:
    """One row per lead in order (a flat table's snapshots): two numbers and a channel carry
    ``signal`` (the event channel adds ``event`` to the log-odds), a noise column carries none, and
    the base rate moves from ``rates[0]`` to ``rates[1]`` over the rows."""
    from scipy.special import expit, logit

    rng = np.random.default_rng(seed)
    progress = np.arange(n) / n
    x1, x2, noise = rng.normal(size=(3, n))
    channel = rng.choice(["web", "event", "partner"], n, p=[0.5, 0.3, 0.2])
    intercept = logit(rates[0]) + progress * (logit(rates[1]) - logit(rates[0]))
    margin = intercept + signal * (1.0 * x1 + 0.6 * x2 + np.where(channel == "event", event, 0.0))
    return pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i:05d}" for i in range(n)],
            s.ORDER_KEY: np.arange(n, dtype="float64"),
            s.LABEL: (rng.random(n) < expit(margin)).astype("int8"),
            "x1": x1,
            "x2": x2,
            "noise": noise,
            "channel": pd.Categorical(channel),
        }
    )


def run_entry_point(main: Callable[[], None], argv: list[str]) -> tuple[int, str, str]:
    """An entry point (``leadml.cli.train`` ...) run in this process as from the shell with ``argv``:
    (exit code, stdout, stderr)."""
    saved_argv, out, err = sys.argv, io.StringIO(), io.StringIO()
    handlers, level = logging.root.handlers[:], logging.root.level
    sys.argv = argv
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:  # the entry point configures logging on the captured stream: put the test's back
        sys.argv = saved_argv
        logging.root.handlers[:] = handlers
        logging.root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


def user_configs(root: Any, data_config: str, name: str = "my_leads") -> Any:
    """A config folder of the user's own under ``root`` (found with ``hydra.searchpath``) holding
    ``data/<name>.yaml``; returns the folder."""
    folder = root / "my_configs"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / f"{name}.yaml").write_text(data_config)
    return folder


# a quick training run (bounded by trials, so the same choice under any load) and a gate that
# promotes any model that works: for tests of the journey, not of the model
LENIENT_GATE = [
    "promotion.min_roc_auc=0.5",
    "promotion.max_ece=1.0",
    "promotion.min_gain_over_logreg=-1.0",
    "promotion.min_gain_over_points=-1.0",
]
QUICK = ["selection.trials=3", "selection.seconds=0", "evaluation.bootstrap=20", "evaluation.shap_rows=100"]


# --------------------------------------------------------------------------- the README's flat example
REPO = Path(__file__).resolve().parents[1]  # the project's folder: README.md, conf/, notebooks/
README = REPO / "README.md"
PUBLIC = REPO.parent / "shared" / "data" / "public"


def readme_flat_config() -> str:
    """The YAML block that follows "For example `conf/data/my_leads.yaml`:" in the README."""
    text = README.read_text()
    start = text.index("For example `conf/data/my_leads.yaml`:")
    match = re.compile(r"```yaml\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return match.group(1)


def exported_leads(n: int = 2000, seed: int = 3) -> pd.DataFrame:
    """A CRM export as a user brings it: Won, Lost and still open leads, one row each."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n)
    won = rng.random(n) < 1 / (1 + np.exp(-(visits - 4)))
    status = np.where(won, "Won", "Lost")
    still_open = rng.random(n) < 0.11
    status = np.where(still_open, rng.choice(["Open", "In progress"], n), status)
    return pd.DataFrame(
        {
            "Lead ID": [f"L-{i:05d}" for i in range(n)],
            "Created Date": pd.date_range("2024-01-01", periods=n, freq="4h").strftime("%Y-%m-%d %H:%M"),
            "Status": status,
            "Sales Notes": np.where(won, "signed", "no answer"),
            "Deal Size": np.where(won, rng.integers(1000, 9000, n), 0),
            "Source": rng.choice(["Web", "Referral", "Event"], n),
            "Industry": rng.choice(["Retail", "Software", "Banking"], n),
            "Country": rng.choice(["US", "DE", "FR"], n),
            "Employees": rng.integers(1, 5000, n),
            "Web Visits": visits,
            "Email": [f"person{i}@example.com" for i in range(n)],
            "Phone": [f"+1 555 {i:07d}" for i in range(n)],
        }
    )


def readme_project(root: Path, leads: pd.DataFrame) -> list[str]:
    """``root`` set up as the README says (the export at exports/leads.csv, the config in a folder
    of the user's own); the overrides that find it. The caller changes into ``root``."""
    (root / "exports").mkdir()
    leads.to_csv(root / "exports" / "leads.csv", index=False)
    folder = user_configs(root, readme_flat_config())
    return [f"hydra.searchpath=[file://{folder}]", "data=my_leads", f"paths.root={root}"]


def assert_batches_ingest_as_whole_tables(
    raw: Mapping[str, pd.DataFrame], contracts: Any, settings: Any, batch_rows: int, folder: Path
) -> None:
    """``ingest_crm_streamed`` over ``raw`` cut into batches of ``batch_rows`` gives what ``ingest_crm``
    gives for the whole tables: the same accepted rows and dtypes (read back from the written files),
    the same quarantine row for row, the same reports; or the same one-line error."""
    from leadml.adapters.layout import dictionary_encoded
    from leadml.adapters.streamed_ingest import ingest_crm_streamed
    from leadml.data.ingest import ingest_crm
    from leadml.errors import LeadmlError

    def reader(frame: pd.DataFrame) -> Callable[[], Iterator[pd.DataFrame]]:
        return lambda: (
            frame.iloc[start : start + batch_rows] for start in range(0, max(len(frame), 1), batch_rows)
        )

    outputs = {table: folder / f"{table}.parquet" for table in s.CRM_TABLES}
    quarantines = {table: folder / "quarantine" / f"{table}.parquet" for table in s.CRM_TABLES}

    def streamed_ingestion() -> Any:
        readers = {table: reader(frame) for table, frame in raw.items()}
        spill = folder / "spill"
        return ingest_crm_streamed(
            readers, contracts, settings, outputs=outputs, quarantines=quarantines, spill_dir=spill
        )

    try:
        whole = ingest_crm(raw, contracts, settings, enforce_bad_share=False)
    except LeadmlError as error:
        with contextlib.suppress(LeadmlError):
            streamed_ingestion()
            raise AssertionError(f"the whole tables stop with {error!s}; the batches went through") from None
        return
    streamed = streamed_ingestion()
    assert not (folder / "spill").exists()
    for table in s.CRM_TABLES:  # each compared as the in-memory path wrote it (a Parquet round trip)
        written = folder / "whole" / f"{table}.parquet"
        written.parent.mkdir(exist_ok=True)
        dictionary_encoded(table, whole.tables[table]).to_parquet(written, index=False)
        streamed_table, whole_table = pd.read_parquet(outputs[table]), pd.read_parquet(written)
        assert _categorical(streamed_table) == _categorical(whole_table), table
        pd.testing.assert_frame_equal(
            _used_categories(streamed_table), _used_categories(whole_table), obj=table
        )
        whole.quarantines[table].to_parquet(written, index=False)
        pd.testing.assert_frame_equal(
            pd.read_parquet(quarantines[table]), pd.read_parquet(written), obj=f"quarantine of {table}"
        )
        expected = {**whole.reports[table].to_dict(), "quarantine_path": None}
        assert {**streamed.reports[table].to_dict(), "quarantine_path": None} == expected, table
        assert streamed.output_rows[table] == len(whole.tables[table]), table


def _categorical(frame: pd.DataFrame) -> list[str]:
    return [str(column) for column, dtype in frame.dtypes.items() if isinstance(dtype, pd.CategoricalDtype)]


def _used_categories(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with only the categories its rows use, as text: a category no row uses is not data
    (and a Parquet file keeps no dictionary for a column whose every value is null)."""
    return frame.assign(
        **{column: frame[column].astype("object").astype("str") for column in _categorical(frame)}
    )


def sheet_snapshots(n: int = 6000, seed: int = 0) -> pd.DataFrame:
    """Conversion rises with visits and seniority; the sheet below rewards both."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3.0, n).astype("float64")
    visits[rng.random(n) < 0.05] = np.nan
    seniority = rng.choice(["c_level", "vp", "manager", "individual"], n, p=[0.1, 0.2, 0.3, 0.4])
    margin = -2.5 + 0.25 * np.nan_to_num(visits) + np.where(np.isin(seniority, ["c_level", "vp"]), 1.0, 0.0)
    return pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i}" for i in range(n)],
            s.LABEL: (rng.random(n) < 1 / (1 + np.exp(-margin))).astype("int8"),
            "visits": visits,
            "seniority": pd.Categorical(seniority),
            "noise": rng.normal(size=n),
        }
    )


# scored rows for the SQL sink's tests (tests/unit/test_score_table.py, tests/system/test_postgres.py)
SINK_AS_OF = pd.Timestamp("2025-12-01", tz="UTC")


def before_experiment(leads: int = 3) -> pd.DataFrame:
    """Rows as a run without an experiment writes them."""
    return pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i}" for i in range(leads)],
            s.AS_OF: [SINK_AS_OF] * leads,
            "probability": np.linspace(0.1, 0.3, leads),
            "tier": ["A", "B", "C"][:leads],
        }
    )


def under_experiment(frame: pd.DataFrame) -> pd.DataFrame:
    """The same leads scored under a two-arm experiment with a holdout-like blank probability."""
    arms = ["champion", "challenger", "challenger"][: len(frame)]
    return frame.assign(
        probability=[0.5, np.nan, 0.25][: len(frame)],
        tier=["A", s.HIDDEN_TIER, "C"][: len(frame)],
        **{
            s.ARM: arms,
            s.EXPERIMENT: "champion_challenger",
            s.arm_column("champion", "probability"): [0.5, 0.4, 0.3][: len(frame)],
            s.arm_column("challenger", "probability"): [0.45, 0.2, 0.25][: len(frame)],
            s.arm_column("champion", "tier"): ["A", "B", "C"][: len(frame)],
        },
    )
