"""Nightly scoring on Spark (``leadml-score score.engine=spark``): the pandas engine's figures, in tasks.

Spark reads the open leads and splits them into buckets by a hash of the lead id. Where
they come from mirrors the pandas engine's :class:`~leadml.scoring.pandas_engine.OpenLeads`: the CRM
tables (:class:`CrmSparkLeads`: the leads that may be open on the run date with their
outcome, cogrouped with their earlier activities; accounts are broadcast) or a flat
table's open rows (:class:`FlatSparkLeads`: ``open_<table>.parquet``, one row per lead).
Each bucket is one ``applyInArrow`` call that runs the *same* pandas code as the pandas
engine: :func:`leadml.data.features.open_lead_features` or
:func:`leadml.data.features.flat_open_features` on the bucket's rows, then
:func:`leadml.scoring.scores.score_leads` with the registered :class:`~leadml.modelling.scorer.LeadScorer`
(probability, exact reasons, sub-scores, expected value). Every one of those figures
depends on its own lead only, so a bucket computes it exactly as the whole table would.

What depends on all of today's leads is done once, globally: the percentile and the
tier thresholds (``capacity`` shares are quantiles of today's probabilities) from the
collected probabilities, the trend from a join with the previous partition, and the
model-input check and drift (PSI) from small per-bucket summaries. A second pass
(``mapInArrow``) applies them with the pandas engine's own functions, and the result
replaces ``as_of=YYYY-MM-DD/`` atomically as ``part-<i>.parquet`` files, like
:func:`leadml.adapters.sinks.write_partition`.

Arrow UDFs (not pandas UDFs) carry the data: each task converts Arrow to pandas with
pyarrow itself, so PySpark's own pandas conversion, which does not yet fully support
pandas 3, is never on the path of a figure. The output directory and the interim
tables must be on a file system that the driver and every executor see (local disk
with ``local[*]``; a shared mount on a cluster).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leadml.adapters import sinks
from leadml.adapters.layout import MANIFEST
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, flat_open_features, open_lead_features
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.drift import column_kind
from leadml.modelling.scorer import PROBABILITY, LeadScorer
from leadml.scoring.experiment import ArmModels, side_column
from leadml.scoring.model_input import deal_values
from leadml.scoring.pandas_engine import (
    PREVIOUS,
    PREVIOUS_PREFIX,
    BucketSummaries,
    CrmOpenLeads,
    Finish,
    FlatOpenLeads,
    OpenLeads,
    ScoringOutcome,
    arm_finish,
    bucket_summary,
    finish_rows,
    movement_words_of,
    previous_columns,
    probe,
    score_bucket,
    scores_bucket,
)
from leadml.scoring.scores import TierSettings, TrendSettings

# pyspark is imported inside functions, and below for type checking only: only score.engine=spark needs it
if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

logger = logging.getLogger(__name__)

BUCKET = "_bucket"
SIDE = "_side"  # per-bucket summary rows (pickled), tagged apart from the scored rows
OUTCOME = "_outcome_"  # prefix of the outcome columns joined onto the leads
ACTIVITY_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY)
OUTCOME_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.STATUS, s.CLOSED_AT)
PART_PREFIX = "part-"
MICROS = 1_000_000
# PySpark 4 warns on many calls that pandas >= 3 is not fully supported; the engine converts
# Arrow to pandas itself (see the module docstring), so the warning is noise here.
PANDAS3_WARNING = "PySpark does not yet fully support pandas"
# The JVM logs errors only: its INFO and WARN lines would bury the job's summary. Spark's own logger
# is named with the root's level, or PySpark (a "shell" to Spark) announces a level change on stderr.
LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
logger.spark.name = org.apache.spark
logger.spark.level = error
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


# --------------------------------------------------------------------------- session
@dataclass(frozen=True)
class SparkSettings:
    """``score.spark`` in ``conf/score.yaml``."""

    master: str = "local[*]"
    app_name: str = "leadml-score"
    driver_memory: str = "2g"
    # shuffle partitions; also the number of lead buckets unless ``buckets`` is set
    shuffle_partitions: int = 8
    buckets: int | None = None
    # Parquet files per partition; 1 gives part-0.parquet, exactly the pandas engine's layout
    output_files: int = 1
    # interpreter of the Python workers (null: this one; on a cluster, the same path on every node)
    python: str | None = None
    # further Spark settings, passed as they are (e.g. spark.executor.memory)
    conf: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shuffle_partitions < 1 or self.output_files < 1 or (self.buckets or 1) < 1:
            raise LeadmlError("score.spark: shuffle_partitions, buckets and output_files must be at least 1")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> SparkSettings:
        values = known_settings(cls, mapping, "score.spark")
        return cls(**{k: v for k, v in values.items() if v is not None})

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")

    def spark_conf(self) -> dict[str, str]:
        """Every setting the session starts with; why each is there is said beside it."""
        conf = {
            "spark.master": self.master,
            "spark.app.name": self.app_name,
            "spark.driver.memory": self.driver_memory,  # read when the JVM starts, so set here
            # tasks must import leadml, pandas 3 and LightGBM: run them on this project's interpreter
            "spark.pyspark.python": self.python or sys.executable,
            "spark.pyspark.driver.python": sys.executable,
            # timestamps are instants in UTC everywhere (the engine compares epoch micros anyway)
            "spark.sql.session.timeZone": "UTC",
            # Parquet timestamps as INT64 micros adjusted to UTC (the pandas engine's type), not INT96
            "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
            "spark.sql.execution.arrow.pyspark.enabled": "true",
            "spark.sql.execution.arrow.useLargeVarTypes": "false",
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions),
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
        }
        if self.is_local:  # nothing outside this machine needs to reach the driver
            conf |= {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
        return conf | {key: str(value) for key, value in self.conf.items()}


def start_session(settings: SparkSettings) -> SparkSession:
    """A Spark session for scoring (local by default); the caller stops it.

    A session already running in this process (a notebook's) is returned as it is: Spark
    reads master, memory and interpreter only when a session starts.
    """
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise LeadmlError("score.engine=spark needs Java 17 or later (java on PATH or JAVA_HOME)")
    session_class = _session_class()
    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    conf = settings.spark_conf()
    os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    # the workers' own warning filter (they run PySpark's pandas checks too), after any set already
    ignore = f"ignore:{PANDAS3_WARNING}:FutureWarning"
    if ignore not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), ignore]))
    if settings.is_local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf.setdefault("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_quiet_log4j2()}")
    builder = session_class.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    logger.info("Spark %s session on %s", spark.version, spark.sparkContext.master)
    return spark


@contextlib.contextmanager
def spark_session(settings: SparkSettings) -> Iterator[SparkSession]:
    """:func:`start_session`, stopped on the way out unless it was running before."""
    owned = _session_class().getActiveSession() is None
    spark = start_session(settings)
    try:
        yield spark
    finally:
        if owned:
            spark.stop()


def _session_class() -> type[SparkSession]:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise LeadmlError("score.engine=spark needs pyspark (pip install -c constraints.txt -e .)") from None
    return SparkSession


def _quiet_log4j2() -> str:
    """The JVM's log configuration (:data:`LOG4J2`), written once to the temporary folder."""
    path = Path(tempfile.gettempdir()) / "leadml-spark-log4j2.properties"
    if not path.exists() or path.read_text() != LOG4J2:
        path.write_text(LOG4J2)
    return str(path)


# --------------------------------------------------------------------------- reading
def _read(spark: SparkSession, tables_dir: Path, table: str) -> DataFrame:
    if not (tables_dir / MANIFEST).exists():
        raise LeadmlError(f"no ingested data in {tables_dir} (run leadml-ingest, or make ingest, first)")
    return spark.read.parquet(_uri(tables_dir / f"{table}.parquet"))


def _inputs(
    spark: SparkSession, tables_dir: Path, as_of: pd.Timestamp, buckets: int
) -> tuple[DataFrame, DataFrame, pd.DataFrame]:
    """Leads that may be open at ``as_of`` (with their outcome), their activities before it, and
    the accounts, with a bucket column on the first two.

    The filters keep a superset (a second's slack either way): the exact rules are applied
    in each bucket by ``open_lead_features`` itself, so they cannot drift from the pandas engine.
    """
    from pyspark.sql import functions as F

    t = _micros(as_of)
    leads = _read(spark, tables_dir, s.LEADS)
    outcomes = _read(spark, tables_dir, s.OUTCOMES).select(
        *[F.col(c).alias(OUTCOME + c) for c in OUTCOME_COLUMNS]
    )
    created, closed = F.unix_micros(s.CREATED_AT), F.unix_micros(OUTCOME + s.CLOSED_AT)
    candidates = (
        leads.where(F.col(s.CREATED_AT).isNull() | (created < t + MICROS))
        .join(outcomes, F.col(s.LEAD_ID) == F.col(OUTCOME + s.LEAD_ID), "left")
        .where(F.col(OUTCOME + s.CLOSED_AT).isNull() | (closed >= t))
    )
    activities = (
        _read(spark, tables_dir, s.ACTIVITIES)
        .select(*ACTIVITY_COLUMNS)
        .where(F.unix_micros(s.TIMESTAMP) < t + MICROS)
        .join(candidates.select(s.LEAD_ID), on=s.LEAD_ID, how="left_semi")
    )
    bucket = _bucket(buckets)
    accounts = _read(spark, tables_dir, s.ACCOUNTS).toArrow().to_pandas()
    return candidates.withColumn(BUCKET, bucket), activities.withColumn(BUCKET, bucket), accounts


def _uri(path: Path) -> str:
    """A local path for Spark, not percent-encoded (``Path.as_uri`` turns ``as_of=`` into ``as_of%3D``,
    which Hadoop keeps as it is)."""
    return f"file://{path.resolve()}"


def _micros(as_of: pd.Timestamp) -> int:
    return int((as_of - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1))


def _bucket(buckets: int) -> Column:
    """The bucket of each row: a hash of its lead id (Spark's xxhash64) modulo ``buckets``."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.col(s.LEAD_ID)), F.lit(buckets))


# --------------------------------------------------------------------------- sources of open leads
class SparkOpenLeads(Protocol):
    """Where a Spark run's open leads come from (the Spark side of
    :class:`leadml.scoring.pandas_engine.OpenLeads`).

    On the driver, :meth:`bucketed` reads them as DataFrames with a bucket column (one, or
    two to cogroup) and returns itself with what the tasks need; that copy goes to every
    executor in the broadcast, and :meth:`features` turns one bucket's Arrow tables into
    the features (and deal values) the pandas engine builds for the same leads.
    """

    source: Path  # named in messages
    has_deal_value: bool

    def bucketed(self, spark: SparkSession, buckets: int) -> tuple[list[DataFrame], SparkOpenLeads]: ...

    def features(self, tables: tuple[pa.Table, ...]) -> tuple[pd.DataFrame, pd.Series | None]: ...


@dataclass(frozen=True)
class CrmSparkLeads:
    """The CRM tables (:class:`leadml.scoring.pandas_engine.CrmOpenLeads`): leads that may be open at
    ``as_of`` with their outcome, cogrouped with their earlier activities; features as of ``as_of``
    (``open_lead_features``), deal values from the leads table."""

    source: Path
    as_of: pd.Timestamp
    settings: FeatureSettings
    # set by bucketed, for the tasks: the accounts (broadcast whole) and the leads table's columns
    accounts: pd.DataFrame | None = None
    lead_columns: tuple[str, ...] = ()
    has_deal_value: bool = False

    def bucketed(self, spark: SparkSession, buckets: int) -> tuple[list[DataFrame], CrmSparkLeads]:
        leads, activities, accounts = _inputs(spark, self.source, self.as_of, buckets)
        lead_columns = tuple(c for c in leads.columns if c != BUCKET and not c.startswith(OUTCOME))
        ready = replace(
            self,
            accounts=accounts,
            lead_columns=lead_columns,
            has_deal_value=s.ESTIMATED_DEAL_VALUE in lead_columns,
        )
        return [leads, activities], ready

    def features(self, tables: tuple[pa.Table, ...]) -> tuple[pd.DataFrame, pd.Series | None]:
        leads, activities = tables
        joined = leads.to_pandas().sort_values(s.LEAD_ID, kind="stable", ignore_index=True)
        outcomes = joined.loc[joined[OUTCOME + s.LEAD_ID].notna(), [OUTCOME + c for c in OUTCOME_COLUMNS]]
        frames = {
            s.LEADS: joined[list(self.lead_columns)],
            s.ACCOUNTS: self.accounts,
            s.OUTCOMES: outcomes.rename(columns=lambda c: c.removeprefix(OUTCOME)),
            s.ACTIVITIES: activities.select(list(ACTIVITY_COLUMNS)).to_pandas(),
        }
        features = open_lead_features(frames, self.as_of, self.settings)
        deal_value = deal_values(frames[s.LEADS], features[s.LEAD_ID]) if self.has_deal_value else None
        return features, deal_value


@dataclass(frozen=True)
class FlatSparkLeads:
    """A flat table's open leads (:class:`leadml.scoring.pandas_engine.FlatOpenLeads`,
    ``open_<table>.parquet``): their columns are the features as they are (``flat_open_features``);
    no deal value.

    Each bucket's rows are cast back to the file's own Arrow schema (pandas metadata included)
    before pandas sees them, so a category column is a category, as in the pandas engine's
    buckets, not the plain text Spark reads it as.
    """

    source: Path
    personal: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    schema: pa.Schema | None = None  # the file's, set by bucketed
    has_deal_value: bool = False

    def bucketed(self, spark: SparkSession, buckets: int) -> tuple[list[DataFrame], FlatSparkLeads]:
        if not self.source.exists():
            raise LeadmlError(f"no open leads file {self.source} (run leadml-ingest, or make ingest, first)")
        rows = spark.read.parquet(_uri(self.source)).withColumn(BUCKET, _bucket(buckets))
        return [rows], replace(self, schema=pq.read_schema(self.source))

    def features(self, tables: tuple[pa.Table, ...]) -> tuple[pd.DataFrame, pd.Series | None]:
        (rows,) = tables
        assert self.schema is not None
        frame = rows.select(self.schema.names).cast(self.schema).to_pandas()
        frame = frame.sort_values(s.LEAD_ID, kind="stable", ignore_index=True)
        return flat_open_features(frame, self.personal, self.exclude), None


def spark_open_leads(open_leads: OpenLeads) -> SparkOpenLeads:
    """The Spark side of the pandas engine's source of open leads: the same tables and settings."""
    if isinstance(open_leads, CrmOpenLeads):
        return CrmSparkLeads(open_leads.source, open_leads.as_of, open_leads.settings)
    if isinstance(open_leads, FlatOpenLeads):
        return FlatSparkLeads(open_leads.source, tuple(open_leads.personal), tuple(open_leads.exclude))
    raise LeadmlError(f"the Spark engine cannot read open leads from a {type(open_leads).__name__}")


# --------------------------------------------------------------------------- schemas
def _spark_type(column: pd.Series) -> DataType:
    from pyspark.sql import types as T

    kinds = {
        "timestamp": T.TimestampType(),
        "bool": T.BooleanType(),
        "int": T.LongType(),
        "float": T.DoubleType(),
        "text": T.StringType(),  # lead ids, tiers, reasons, trend: text (None where there is none)
    }
    kind = column_kind(column)
    if kind is None:
        raise LeadmlError(
            f"scored column {column.name} has a type the Spark engine cannot write: {column.dtype}"
        )
    return kinds[kind]


def _struct(frame: pd.DataFrame, extra: Mapping[str, DataType] | None = None) -> StructType:
    from pyspark.sql import types as T

    fields = [T.StructField(str(name), _spark_type(frame[name]), True) for name in frame.columns]
    fields += [T.StructField(name, kind, True) for name, kind in (extra or {}).items()]
    return T.StructType(fields)


def _arrow_schema(spark: SparkSession, struct: StructType) -> pa.Schema:
    """The Arrow schema Spark expects back from a UDF of return type ``struct``."""
    from pyspark.sql.pandas.types import to_arrow_schema

    large = spark.conf.get("spark.sql.execution.arrow.useLargeVarTypes", "false").lower() == "true"
    return to_arrow_schema(struct, timezone="UTC", prefers_large_types=large)


# --------------------------------------------------------------------------- first pass: buckets
@dataclass(frozen=True)
class _BucketJob:
    """What every bucket needs, broadcast once to each executor."""

    scorer: LeadScorer
    open_leads: SparkOpenLeads  # as returned by its bucketed(): ready for the tasks
    explain: bool
    explainer: str
    schema: pa.Schema  # scored columns, then SIDE
    arms: ArmModels | None = None  # an experiment's arms: every lead scored by every arm's model


def _apply_in_buckets(
    frames: list[DataFrame], job_ref: Broadcast[_BucketJob], schema: StructType
) -> DataFrame:
    """One ``applyInArrow`` call per bucket: over one table's group, or two tables cogrouped.

    The functions are lambdas, without annotations: PySpark reads a grouped function's type
    hints to pick its form, and fails on ones it cannot resolve (postponed, or a ``partial``'s).
    """
    first, *others = [frame.groupBy(BUCKET) for frame in frames]
    if not others:
        return first.applyInArrow(lambda rows: _score_bucket(job_ref.value, (rows,)), schema=schema)
    (second,) = others
    return first.cogroup(second).applyInArrow(
        lambda leads, activities: _score_bucket(job_ref.value, (leads, activities)), schema=schema
    )


def _score_bucket(job: _BucketJob, tables: tuple[pa.Table, ...]) -> pa.Table:
    """Features and scores of one bucket's open leads, plus one row with the bucket's summary."""
    features, deal_value = job.open_leads.features(tables)
    names = [n for n in job.schema.names if n != SIDE]
    scored = pd.DataFrame({name: pd.Series([], dtype=object) for name in names})
    if scores_bucket(features, job.scorer, job.arms):
        # the bucket's tiers and percentiles are provisional: the second pass sets them from all leads
        scored = score_bucket(job.scorer, features, job.explain, job.explainer, deal_value, job.arms)
    side = pd.DataFrame({SIDE: [pickle.dumps(bucket_summary(features, job.scorer))]})
    out = pd.concat([scored[names].assign(**{SIDE: None}), side], ignore_index=True)
    return pa.Table.from_pandas(out, schema=job.schema, preserve_index=False)


def _finish_batches(
    job_ref: Broadcast[Finish], batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    job = job_ref.value
    assert job.schema is not None
    for batch in batches:
        finished = finish_rows(batch.to_pandas(), job)
        yield from pa.Table.from_pandas(finished, schema=job.schema, preserve_index=False).to_batches()


# --------------------------------------------------------------------------- the engine
def score_with_spark(
    spark: SparkSession,
    open_leads: OpenLeads,
    scorer: LeadScorer,
    as_of: pd.Timestamp,
    tiers: TierSettings,
    *,
    output_dir: Path,
    explain: bool = True,
    explainer: str = "fast",
    trend: TrendSettings | None = None,
    model_version: str = "",
    buckets: int | None = None,
    output_files: int = 1,
    arms: ArmModels | None = None,
) -> ScoringOutcome:
    """Score every lead open at ``as_of`` in Spark and replace its partition under ``output_dir``.

    ``open_leads`` is the pandas engine's source (:class:`~leadml.scoring.pandas_engine.CrmOpenLeads` or
    :class:`~leadml.scoring.pandas_engine.FlatOpenLeads`), read here by Spark. Same rows and figures as the
    pandas engine (``stages.score_stage``). Raises :class:`~leadml.errors.SchemaMismatchError`
    before writing anything when today's features do not match the model, and
    :class:`~leadml.errors.LeadmlError` when no lead is open. ``arms``: an experiment's arms, as in
    :func:`~leadml.scoring.pandas_engine.score_in_buckets`.
    """
    from pyspark.sql import types as T

    trend = trend or TrendSettings()
    buckets = buckets or int(spark.conf.get("spark.sql.shuffle.partitions", "8"))
    frames, ready = spark_open_leads(open_leads).bucketed(spark, buckets)
    probe_rows = probe(scorer, explain, explainer, ready.has_deal_value, arms)
    first_struct = _struct(probe_rows, {SIDE: T.BinaryType()})
    job = _BucketJob(scorer, ready, explain, explainer, _arrow_schema(spark, first_struct), arms)
    job_ref = spark.sparkContext.broadcast(job)
    first = _apply_in_buckets(frames, job_ref, first_struct).persist()
    broadcasts = [job_ref]
    try:
        summary = _collect_summary(first)
        summary.check(scorer, as_of, ready.source, arms)
        scored = first.where(first[SIDE].isNull()).drop(SIDE)
        side = [side_column(arm, PROBABILITY) for arm in (arms.experiment.names if arms else ())]
        collected = scored.select(PROBABILITY, *side).toArrow()
        probabilities = np.sort(collected.column(0).to_numpy())
        logger.info("scored %d leads in %d buckets", len(probabilities), buckets)
        names = arms.experiment.names if arms else ()
        arm_probabilities = {
            arm: [collected.column(column).to_numpy()] for arm, column in zip(names, side, strict=True)
        }
        finish = Finish(
            probabilities, tiers.thresholds_for(probabilities), tiers.floor_tier, trend, as_of, model_version,
            group_words=movement_words_of(scorer, arms), arms=arm_finish(arms, arm_probabilities, tiers),
        )  # fmt: skip
        final_struct = _struct(finish_rows(probe_rows.assign(**{PREVIOUS: np.nan}), finish))
        finish_ref = spark.sparkContext.broadcast(replace(finish, schema=_arrow_schema(spark, final_struct)))
        broadcasts.append(finish_ref)
        finished = _with_previous(spark, scored, output_dir, as_of).mapInArrow(
            functools.partial(_finish_batches, finish_ref), schema=final_struct
        )
        written = write_partition_spark(finished, output_dir, as_of, output_files)
    finally:
        first.unpersist()
        for ref in broadcasts:
            ref.unpersist()
    written_rows = pd.read_parquet(written, columns=["tier"])
    return ScoringOutcome(
        as_of=as_of,
        output=written,
        # the first pass's, as the pandas engine's: an experiment's hidden arm writes no probability
        probabilities=probabilities.astype(np.float64),
        tier_counts={str(k): int(v) for k, v in written_rows["tier"].value_counts().sort_index().items()},
        psi=summary.psi(scorer, as_of),
        unseen=summary.unseen,
        buckets=buckets,
    )


def score_in_session(
    settings: SparkSettings,
    open_leads: OpenLeads,
    scorer: LeadScorer,
    as_of: pd.Timestamp,
    tiers: TierSettings,
    *,
    output_dir: Path,
    explain: bool = True,
    explainer: str = "fast",
    trend: TrendSettings | None = None,
    model_version: str = "",
    arms: ArmModels | None = None,
) -> ScoringOutcome:
    """:func:`score_with_spark` in a session from ``score.spark`` (one already running is reused and
    left running). ``stages.score`` resolves the run date and holds the date's lock, as it does for
    the pandas engine."""
    with spark_session(settings) as spark:
        return score_with_spark(
            spark,
            open_leads,
            scorer,
            as_of,
            tiers,
            output_dir=output_dir,
            explain=explain,
            explainer=explainer,
            trend=trend,
            model_version=model_version,
            buckets=settings.buckets,
            output_files=settings.output_files,
            arms=arms,
        )


def _collect_summary(first: DataFrame) -> BucketSummaries:
    summary = BucketSummaries()
    for row in first.where(first[SIDE].isNotNull()).select(SIDE).collect():
        summary.add(pickle.loads(row[0]))
    return summary


def _with_previous(
    spark: SparkSession, scored: DataFrame, output_dir: Path, as_of: pd.Timestamp
) -> DataFrame:
    """``scored`` with the probability of the latest earlier partition (null for a new lead)."""
    from pyspark.sql import functions as F

    folder = sinks.previous_partition_dir(output_dir, as_of)
    if folder is None:
        return scored.withColumn(PREVIOUS, F.lit(None).cast("double"))
    files = sorted(folder.glob(f"{PART_PREFIX}*.parquet"))
    logger.info("trend against %s", folder)
    carried = [
        F.col(f"`{c}`").cast("double").alias(f"{PREVIOUS_PREFIX}{c}") for c in previous_columns(files)[2:]
    ]
    previous = (
        spark.read.parquet(*[_uri(p) for p in files])
        .select(F.col(s.LEAD_ID), F.col(PROBABILITY).cast("double").alias(PREVIOUS), *carried)
        .dropDuplicates([s.LEAD_ID])
    )
    return scored.join(previous, on=s.LEAD_ID, how="left")


# --------------------------------------------------------------------------- writing
def write_partition_spark(frame: DataFrame, base: Path, as_of: pd.Timestamp, files: int = 1) -> Path:
    """Replace the partition of ``as_of`` under ``base`` with ``frame``, atomically; returns its folder.

    Spark writes into a hidden staging folder beside the partition; its part files are
    renamed ``part-0.parquet``, ``part-1.parquet``... (sorted by lead id, ranges in file
    order), Spark's markers and checksums removed, and the folder swapped into place as
    :func:`leadml.adapters.sinks.write_partition` does, with its recovery of interrupted runs.
    """
    with sinks.staged_partition(base, as_of) as staging:
        ordered = frame.repartitionByRange(files, s.LEAD_ID).sortWithinPartitions(s.LEAD_ID)
        ordered.write.mode("errorifexists").parquet(_uri(staging))
        _tidy(staging)
    return sinks.partition_dir(base, as_of)


def _tidy(staging: Path) -> None:
    """Keep only the part files, named ``part-<i>.parquet``, and flush them to disk."""
    parts = sorted(staging.glob(f"{PART_PREFIX}*.parquet"))
    if not parts:
        raise LeadmlError(f"Spark wrote no Parquet file into {staging}")
    for leftover in staging.iterdir():
        if leftover not in parts:
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    for index, part in enumerate(parts):
        target = staging / f"{PART_PREFIX}{index}.parquet"
        os.replace(part, target)
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
