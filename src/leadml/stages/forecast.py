"""``leadml-forecast``: the funnel forecast from the ingested tables and the latest scored run."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.adapters.layout import FLAT_TABLE, open_rows_file, read_interim
from leadml.adapters.sinks import find_partition, read_scored_file, scored_file_columns
from leadml.adapters.sources import write_csv_atomic, write_json_atomic
from leadml.data import schema as s
from leadml.data.calendar import to_utc
from leadml.data.contracts import (
    OUTCOMES_TABLE,
    QUARANTINE_COLUMNS,
    REASON,
    SETTINGS_KEYS,
    IngestSettings,
    as_tuple,
    flat_contract,
)
from leadml.data.validation import validate_table
from leadml.errors import LeadmlError
from leadml.reporting.forecast import (
    ALL,
    AMONG_CLOSED,
    EXPECTED_VALUE,
    POOLED_GROUP,
    PROBABILITY,
    TIER,
    TOTAL,
    WITHIN_HORIZON,
    ForecastSettings,
    canonical_plan,
    closed_rates,
    forecast_forward,
    historical_rates,
    rates_table,
    recent_volume,
    whole_number,
)
from leadml.reporting.forecast_plans import capacity_plan, leads_needed
from leadml.stages.ingest import ingest_unless_unchanged

logger = logging.getLogger(__name__)


def read_planned_csv(path: Path) -> dict[str, int]:
    """``{source: leads}`` from a CSV with a header ``source,leads``; any problem names the file and row.

    Rows are numbered like the quarantine's ``source_row``: 1 is the first data row (line 2).
    """
    if not path.is_file():
        raise LeadmlError(f"planned leads file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise LeadmlError(f"planned leads file {path} is not a readable CSV: {error}") from None
    frame.columns = [str(c).strip().casefold() for c in frame.columns]
    missing = [c for c in ("source", "leads") if c not in frame.columns]
    if missing:
        raise LeadmlError(
            f"planned leads file {path}: missing column(s) {missing} "
            f"(found {list(frame.columns)}; expected a header line 'source,leads')"
        )
    if frame.empty:
        raise LeadmlError(f"planned leads file {path} has a header but no rows")
    plan: dict[str, int] = {}
    rows: dict[str, int] = {}
    for number, (source, leads) in enumerate(zip(frame["source"], frame["leads"], strict=True), start=1):
        where = f"planned leads file {path}, row {number} (line {number + 1})"
        name = str(source).strip()
        if not name:
            raise LeadmlError(f"{where}: column 'source' is empty")
        text = str(leads).strip()
        try:
            plan_n = whole_number(text, "leads")
        except LeadmlError:
            raise LeadmlError(f"{where}: column 'leads' must be a whole number >= 0, got {text!r}") from None
        if name in plan:
            raise LeadmlError(f"{where}: source {name!r} is planned twice (also row {rows[name]})")
        plan[name], rows[name] = plan_n, number
    return plan


def read_scored_columns(partition: Path) -> pd.DataFrame:
    """The columns the capacity plan uses from a scored partition (not the reasons: less memory)."""

    files = sorted(partition.glob("part-*.parquet"))
    names = set(scored_file_columns(files[0]))
    wanted = [c for c in (s.LEAD_ID, PROBABILITY, TIER, EXPECTED_VALUE) if c in names]
    return pd.concat([read_scored_file(f, columns=wanted) for f in files], ignore_index=True)


def _path(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _records(table: pd.DataFrame | None) -> list[dict[str, Any]] | None:
    if table is None:
        return None
    frame = table.reset_index().astype(object)
    frame = frame.where(frame.notna(), None)
    return frame.to_dict(orient="records")


@dataclass(frozen=True)
class ForecastInputs:
    """What a forecast is made from, for CRM tables and flat tables alike.

    ``leads`` holds every lead (``lead_id``, the group column ``by``, ``created_at`` when the
    data is dated): the recent pace and the default number of reps are read from it.
    ``end`` is the end of what is known and ``pace_end`` where the recent pace is measured up
    to (None: no time column, so no recent pace).
    """

    history: pd.DataFrame
    leads: pd.DataFrame
    by: str
    grouping: str
    rate: str
    end: pd.Timestamp | None
    pace_end: pd.Timestamp | None
    synonyms: Mapping[str, str] = field(default_factory=dict)
    deal_values: bool = True
    owners: bool = True
    scorable: bool = True  # leadml-score can score its open leads (a flat table needs contract.open)
    notes: tuple[str, ...] = ()

    @property
    def rate_kind(self) -> str:
        return str(self.history.attrs.get("rate", WITHIN_HORIZON))


def _synonyms(data: Mapping[str, Any], column: str) -> dict[str, str]:

    return IngestSettings.from_mapping({"synonyms": data.get("synonyms")}).synonyms_for(column)


def _within_horizon(won: str, start: str, horizon: int, end: pd.Timestamp) -> str:
    return (
        f"{won} within {horizon} days of {start}, among the leads whose {horizon} days ended by "
        f"{end:%Y-%m-%d} (the mature cohort; younger leads are counted apart as immature_leads)"
    )


def crm_inputs(settings: ForecastSettings, root: Path, data: Mapping[str, Any]) -> ForecastInputs:
    """The interim CRM tables: leads and their dated outcomes, rates within the horizon."""

    tables = read_interim(_path(root, settings.input_dir), (s.LEADS, s.OUTCOMES))
    leads, outcomes = tables[s.LEADS], tables[s.OUTCOMES]
    by = settings.by or s.SOURCE
    if by not in leads.columns:
        columns = [str(c) for c in leads.columns]
        raise LeadmlError(f"forecast.by={by!r} is not a column of the leads table (columns: {columns})")
    history = historical_rates(leads, outcomes, settings.horizon_days, settings.as_of, by=by)
    end = pd.Timestamp(history.attrs["as_of"])
    return ForecastInputs(
        history=history,
        leads=leads,
        by=by,
        grouping=f"{by} (forecast.by)" if settings.by else "source (the leads' source)",
        rate=_within_horizon("won", "the lead's creation", int(history.attrs["horizon_days"]), end),
        end=end,
        pace_end=end,
        synonyms=_synonyms(data, by),
    )


def flat_grouping(data: Mapping[str, Any], columns: Any, by: str | None = None) -> tuple[str | None, str]:
    """The column that groups a flat table's leads, and why that one, in words.

    ``forecast.by`` when set; else the first column of the ``source`` family in
    ``data.families`` (the column of the leadership report's "By source"); else None: one
    pooled group, :data:`POOLED_GROUP`.
    """
    present = [str(c) for c in columns]
    if by is not None:
        if str(by) not in present:
            internal = {s.LEAD_ID, s.LABEL, s.AS_OF, s.ORDER_KEY, "dup_group"}
            raise LeadmlError(
                f"forecast.by={by!r} is not a column of data={data.get('name')}'s lead table "
                f"(columns: {[c for c in present if c not in internal]})"
            )
        return str(by), f"{by} (forecast.by)"
    families = data.get("families") or {}
    sources = [str(c) for c, family in families.items() if family == "source" and str(c) in present]
    if not sources:
        return None, f"one pooled group, {POOLED_GROUP!r} (data.families maps no column to the family source)"
    others = f"; forecast.by={sources[1]} groups by another" if len(sources) > 1 else ""
    why = f"{sources[0]}, the source-family column of data.families (as the report's By source){others}"
    return sources[0], why


# how ingest's reasons begin for the leads it sets aside unlabelled (leadml.data.ingest.NOT_LABELLED_*)
_NOT_LABELLED = "not labelled: "


def unlabelled_leads(
    interim: Path, data: Mapping[str, Any], observed_from: str | None
) -> pd.DataFrame | None:
    """The leads of a flat table labelled by outcomes that ingest set aside because their horizon
    had not elapsed: its immature leads, typed again through the contract (``lead_id``, ``as_of``
    and the other columns, as in the labelled table); None when there are none.

    Leads before ``observed_from`` (set aside too: their outcomes were not recorded) belong to
    no cohort and are left out.
    """

    path = interim / "quarantine" / f"{FLAT_TABLE}.parquet"
    if not path.exists():
        return None
    rows = pd.read_parquet(path)
    rows = rows[rows[REASON].astype("string").str.startswith(_NOT_LABELLED).fillna(False).to_numpy(bool)]
    if rows.empty:
        return None
    contract = flat_contract(data["contract"], data.get("outcomes"))
    settings = IngestSettings.from_mapping({key: data[key] for key in SETTINGS_KEYS if key in data})
    typed = validate_table(
        rows.drop(columns=[c for c in QUARANTINE_COLUMNS if c in rows.columns]).reset_index(drop=True),
        contract.table,
        settings.with_fixed_reference_time(),
        source=str(path),
        enforce_bad_share=False,
    ).accepted
    assert contract.time_column is not None  # a flat table labelled by outcomes has one
    frame = typed.rename(columns={contract.id_column: s.LEAD_ID, contract.time_column: s.AS_OF})
    if observed_from:
        frame = frame[frame[s.AS_OF] >= to_utc(observed_from)]
    return frame if len(frame) else None


def _lead_rows(part: pd.DataFrame, column: str | None, by: str, dated: bool, label: Any) -> pd.DataFrame:
    """One table's leads as the forecast reads them: ``lead_id``, ``created_at``, ``by``, ``label``."""
    frame = pd.DataFrame({s.LEAD_ID: part[s.LEAD_ID].astype("string").to_numpy()})
    if dated:
        frame[s.CREATED_AT] = part[s.AS_OF].to_numpy()
    frame[by] = part[column].astype("string").to_numpy() if column is not None else POOLED_GROUP
    frame[s.LABEL] = pd.array(label, dtype="Int64") if label is not None else pd.NA
    frame[s.LABEL] = frame[s.LABEL].astype("Int64")
    return frame


NO_DEAL_VALUES = (
    "no deal values: a flat table names none, so revenue is shown as missing (not 0) and there is "
    "no reverse forecast (leads needed for a revenue target)"
)


@dataclass(frozen=True)
class _FlatLeads:
    """A flat table's leads as ingest left them today, and the column that groups them."""

    interim: Path
    labelled: pd.DataFrame  # the labelled leads (the flat table's interim file)
    column: str | None  # the grouping column; None: one pooled group
    by: str  # the group column of the forecast's tables
    dated: bool  # the table has a time column (as_of)

    def rows(self, part: pd.DataFrame, label: Any = None) -> pd.DataFrame:
        return _lead_rows(part, self.column, self.by, self.dated, label)

    def open_leads(self) -> pd.DataFrame | None:
        """The open leads (``contract.open``) ingest set apart; None when it wrote none."""
        path = self.interim / open_rows_file(FLAT_TABLE)
        return pd.read_parquet(path) if path.exists() else None


@dataclass(frozen=True)
class _FlatRates:
    """A flat table's rates and what they mean: what :class:`ForecastInputs` takes from its label."""

    leads: pd.DataFrame
    history: pd.DataFrame
    rate: str
    end: pd.Timestamp | None
    pace_end: pd.Timestamp | None
    notes: tuple[str, ...] = ()


def flat_inputs(settings: ForecastSettings, root: Path, data: Mapping[str, Any]) -> ForecastInputs:
    """A flat table read through its contract (as ``leadml-score`` does), grouped and rated.

    Labelled by outcomes (dated won events): the CRM's definition, won within the horizon on
    the mature cohort, the leads ingest set aside as immature counted apart. Labelled by a
    target column: won / (won + lost) among the closed leads (:func:`closed_rates`), the open
    leads counted apart. Either way a flat table has no deal values and no owners.
    """

    contract = data.get("contract") or {}
    _check_flat_settings(settings, data)  # config errors first: they cost no time
    interim = _path(root, settings.input_dir)
    # today's file through its contract, as leadml-score reads it
    record = ingest_unless_unchanged(data, interim).manifest
    labelled = pd.read_parquet(interim / f"{FLAT_TABLE}.parquet")
    column, grouping = flat_grouping(data, labelled.columns, settings.by)
    table = _FlatLeads(interim, labelled, column, by=column or s.SOURCE, dated=s.AS_OF in labelled.columns)
    if data.get("outcomes"):  # dated won events: the CRM's label
        rated = _rates_by_outcomes(settings, data, record, table)
    else:  # a target column: converted or not, with no date
        rated = _rates_by_target(contract, table)
    return ForecastInputs(
        history=rated.history,
        leads=rated.leads,
        by=table.by,
        grouping=grouping,
        rate=rated.rate,
        end=rated.end,
        pace_end=rated.pace_end,
        synonyms=_synonyms(data, column) if column is not None else {},
        deal_values=False,
        owners=False,
        scorable=bool(as_tuple(contract.get("open"))),
        notes=(NO_DEAL_VALUES, *rated.notes),
    )


def _check_flat_settings(settings: ForecastSettings, data: Mapping[str, Any]) -> None:
    """The forecast settings a flat table cannot honour: it has no deal values, and maybe no dates."""
    name = data.get("name")
    for key in ("revenue_target", "mix"):
        if getattr(settings, key) is not None:
            raise LeadmlError(
                f"forecast.{key} needs won deal values and data={name} is a flat table without any: "
                "leave it null (revenue is shown as missing, with no reverse forecast)"
            )
    if not data.get("outcomes") and settings.as_of is not None:
        raise LeadmlError(
            f"forecast.as_of needs dated outcomes and data={name}'s target "
            f"({(data.get('contract') or {}).get('target')}) has no date: leave it null"
        )


def _rates_by_outcomes(
    settings: ForecastSettings, data: Mapping[str, Any], record: Mapping[str, Any], table: _FlatLeads
) -> _FlatRates:
    """Labelled by dated won events (``data.outcomes``): won within the horizon, the mature cohort."""
    spec, contract = data["outcomes"], data.get("contract") or {}
    labels = record.get("labels") or {}
    # younger leads: the open ones (not won yet) and those won already, set aside by ingest
    younger = [
        part
        for part in (table.open_leads(), unlabelled_leads(table.interim, data, labels.get("observed_from")))
        if part is not None and len(part)
    ]
    leads = pd.concat([table.rows(part) for part in (table.labelled, *younger)], ignore_index=True)
    outcomes = _won_events(table.interim, spec)
    # outcomes complete only until the configured observed_until: the end of what is known
    as_of = settings.as_of
    if as_of is None and labels.get("observed_until_from") == "config":
        as_of = labels.get("observed_until")
    history = historical_rates(leads, outcomes, settings.horizon_days, as_of, by=table.by)
    end = pd.Timestamp(history.attrs["as_of"])
    horizon = int(history.attrs["horizon_days"])
    notes: tuple[str, ...] = ()
    if float(spec["horizon_days"]) != horizon:
        notes = (
            f"forecast.horizon_days={horizon} is not the label's outcomes.horizon_days="
            f"{float(spec['horizon_days']):g}: the rates are of wins within {horizon} days",
        )
    return _FlatRates(
        leads=leads,
        history=history,
        rate=_within_horizon(str(spec["time"]), str(contract.get("time")), horizon, end),
        end=end,
        pace_end=min(end, to_utc(leads[s.CREATED_AT].max())),
        notes=notes,
    )


def _won_events(interim: Path, spec: Mapping[str, Any]) -> pd.DataFrame:
    """The outcomes file's won events as the CRM's outcomes table (with no deal values)."""
    events = pd.read_parquet(interim / f"{OUTCOMES_TABLE}.parquet")
    return pd.DataFrame(
        {
            s.LEAD_ID: events[str(spec["id"])].astype("string"),
            s.STATUS: s.WON,
            s.CLOSED_AT: events[str(spec["time"])],
            s.DEAL_VALUE: np.nan,
        }
    )


def _rates_by_target(contract: Mapping[str, Any], table: _FlatLeads) -> _FlatRates:
    """Labelled by a target column: won / (won + lost) among the closed leads, with no date."""
    parts = [table.rows(table.labelled, table.labelled[s.LABEL])]
    open_leads = table.open_leads()
    if open_leads is not None:
        parts.append(table.rows(open_leads))
    leads = pd.concat(parts, ignore_index=True)
    latest = leads[s.CREATED_AT].max() if table.dated else pd.NaT
    end = None if pd.isna(latest) else to_utc(latest)
    history = closed_rates(leads, table.by, as_of=end)
    values = {k: list(as_tuple(contract.get(k))) for k in ("positive", "negative", "open")}
    lost = values["negative"] or "the other value"
    rate = (
        f"won / (won + lost) among the closed leads, whenever they closed (target "
        f"{contract.get('target')}: won {values['positive']}, lost {lost}); "
        f"the open leads ({values['open'] or 'none declared'}) are left out, counted as immature_leads. "
        "The target has no date, so this is not a rate within a horizon and days to convert are unknown"
    )
    undated = (
        "no time column (contract.time): the rates are of every closed lead in the file, and there "
        "is no recent pace to plan from"
    )
    return _FlatRates(
        leads=leads,
        history=history,
        rate=rate,
        end=end,
        pace_end=end,
        notes=() if table.dated else (undated,),
    )


def _plan(settings: ForecastSettings, root: Path, inputs: ForecastInputs, name: Any) -> tuple[dict, str]:
    """The planned leads per group and where they came from (CSV, config, or the recent pace)."""
    if settings.planned_csv is not None:
        path = _path(root, settings.planned_csv)
        return read_planned_csv(path), str(path)
    if settings.planned is not None:
        return dict(settings.planned), "forecast.planned"
    if inputs.pace_end is None:
        groups = [str(k) for k in inputs.history.index if k != ALL]
        shown = ", ".join(groups[:8]) + (f", ... ({len(groups)} in all)" if len(groups) > 8 else "")
        raise LeadmlError(
            f"data={name} has no time column (contract.time), so there is no recent pace to plan from: "
            f"set forecast.planned='{{{groups[0] if groups else POOLED_GROUP}: 500}}' or "
            f"forecast.planned_csv=plan.csv (leads per value of {inputs.by}: {shown})"
        )
    plan = recent_volume(
        inputs.leads, inputs.pace_end, settings.planned_period_days, settings.lookback_days, by=inputs.by
    )
    to = ""
    if inputs.end is not None and inputs.pace_end < inputs.end:
        to = f" to {inputs.pace_end:%Y-%m-%d} (the last lead)"
    period = settings.planned_period_days
    return plan, f"the pace of the last {settings.lookback_days} days{to}, per {period} days"


def _default_reps(leads: pd.DataFrame, end: pd.Timestamp, lookback_days: int) -> int:
    """The distinct owners of the leads created in the last ``lookback_days`` (the sales team)."""
    if s.OWNER not in leads.columns:
        raise LeadmlError("forecast.reps is not set and the leads have no owner column: set forecast.reps")
    created = pd.to_datetime(leads[s.CREATED_AT], utc=True)
    reps = int(leads.loc[created > end - pd.Timedelta(days=lookback_days), s.OWNER].nunique())
    if reps == 0:
        raise LeadmlError(
            f"forecast.reps is not set and no lead of the last {lookback_days} days names an owner: "
            "set forecast.reps"
        )
    return reps


def _capacity(
    settings: ForecastSettings, root: Path, inputs: ForecastInputs
) -> tuple[pd.DataFrame | None, Path | None, int | None]:
    """The capacity plan on the chosen scored run; (None, None, None) when there is no scored run."""
    partition_dir = settings.scored_dir
    partition = find_partition(_path(root, partition_dir), settings.scored_as_of, "forecast.scored_as_of")
    if partition is None:
        if inputs.scorable:
            logger.warning("no scored run in %s: no capacity plan (run leadml-score first)", partition_dir)
        return None, None, None
    if settings.reps is not None:
        reps = settings.reps
    elif inputs.owners and inputs.end is not None:
        reps = _default_reps(inputs.leads, inputs.end, settings.lookback_days)
    else:
        raise LeadmlError(
            "forecast.reps is not set and a flat table names no owners to count the sales team from: "
            "set forecast.reps (how many reps work the open leads)"
        )
    try:
        table = capacity_plan(
            read_scored_columns(partition),
            reps,
            settings.leads_per_rep_per_day,
            settings.days,
            level=settings.level,
        )
    except LeadmlError as error:
        raise LeadmlError(f"{partition}: {error}") from None
    return table, partition, reps


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass(frozen=True)
class ForecastResult:
    """What ``leadml-forecast`` made: the four tables, what made them, and the files it wrote.

    The fields before ``files`` go to ``forecast.json`` in this order, then the settings, then
    the tables as records (:func:`_forecast_record`).
    """

    as_of: pd.Timestamp | None  # the end of what is known; None: a flat table without a time column
    horizon_days: int | None  # None: rates among the closed leads, within no horizon
    rate_kind: str  # WITHIN_HORIZON or AMONG_CLOSED
    rate_definition: str  # what the rate is, in words
    group_by: str
    grouping: str  # how the leads are grouped and why, in words
    planned: Mapping[str, int]  # leads per group
    planned_from: str
    revenue_target: float | None  # None: no deal values, no reverse forecast
    revenue_target_from: str | None
    mix: Mapping[str, float] | None  # the reverse forecast's share per group
    confidence: float
    level: float
    scored_partition: str | None  # the scored run the capacity plan is made on
    reps: int | None
    capacity_leads: int | None
    threshold: float | None
    no_capacity: str | None  # why there is no capacity plan
    notes: tuple[str, ...]
    seconds: float
    files: Mapping[str, str]  # table name (and "json") -> the file written
    history: pd.DataFrame
    forward: pd.DataFrame
    reverse: pd.DataFrame | None  # None: no deal values
    capacity: pd.DataFrame | None  # None: no scored run


# the ForecastResult fields written as CSVs, and as records in forecast.json
_TABLES = ("history", "forward", "reverse", "capacity")


def forecast_stage(cfg: Mapping[str, Any], root: Path) -> ForecastResult:
    """Read the data and the latest scored run, forecast, write CSVs and one JSON.

    ``cfg`` is the whole composed config (``forecast``, ``data``); relative paths are read
    from ``root``. CRM data is read from the interim tables; a flat table is read again
    through its contract (as ``leadml-score`` does, so the forecast is of today's file).
    Writes ``history.csv``, ``forward.csv``, ``reverse.csv`` (when there are deal values),
    ``capacity.csv`` (when there is a scored run) and ``forecast.json`` (everything, with
    the settings, what the rate means and how leads are grouped) to ``forecast.output_dir``,
    and returns a :class:`ForecastResult`: the tables as DataFrames (``history``,
    ``forward``, ``reverse`` or None, ``capacity`` or None) with what made them.

    Defaults when a setting is null: the plan is the last ``lookback_days``' pace per
    ``planned_period_days`` (a flat table: up to its last lead; without a time column there
    is none and the plan must be given); the revenue target is the plan's expected revenue;
    reps are the distinct owners of the leads created in the last ``lookback_days`` (a flat
    table names none: set ``forecast.reps``).
    """
    started = time.perf_counter()
    settings = ForecastSettings.from_mapping(cfg.get("forecast"))
    data = cfg.get("data") or {}
    inputs = _forecast_inputs(settings, root, data)
    history = inputs.history
    known = tuple(str(k) for k in history.index if k != ALL)
    plan, planned_from = _plan(settings, root, inputs, data.get("name"))
    plan = canonical_plan(plan, inputs.synonyms, known)
    forward = forecast_forward(
        history, plan, level=settings.level, revenue=inputs.deal_values, **_simulation(settings)
    )
    reverse, target, target_from = _reverse(settings, inputs, forward, known)
    capacity, partition, reps = _capacity(settings, root, inputs)
    out = _path(root, settings.output_dir)
    rates = rates_table(history)
    tables = {"history": rates, "forward": forward, "reverse": reverse, "capacity": capacity}
    files = _write_tables(tables, out)
    horizon = history.attrs["horizon_days"]
    result = ForecastResult(
        as_of=inputs.end,
        horizon_days=None if horizon is None else int(horizon),
        rate_kind=inputs.rate_kind,
        rate_definition=inputs.rate,
        group_by=inputs.by,
        grouping=inputs.grouping,
        planned=plan,
        planned_from=planned_from,
        revenue_target=target,
        revenue_target_from=target_from,
        mix=None if reverse is None else _mix(reverse),
        confidence=settings.confidence,
        level=settings.level,
        scored_partition=None if partition is None else str(partition),
        reps=reps,
        capacity_leads=None if capacity is None else capacity.attrs["capacity"],
        threshold=None if capacity is None else capacity.attrs["threshold"],
        no_capacity=None if capacity is not None else _no_capacity(inputs, data.get("name")),
        notes=inputs.notes,
        seconds=round(time.perf_counter() - started, 2),
        files={**files, "json": str(out / "forecast.json")},
        history=rates,
        forward=forward,
        reverse=reverse,
        capacity=capacity,
    )
    write_json_atomic(_forecast_record(result, settings), out / "forecast.json")
    return result


def _forecast_inputs(settings: ForecastSettings, root: Path, data: Mapping[str, Any]) -> ForecastInputs:
    kind = data.get("kind", "crm")
    if kind == "flat":
        return flat_inputs(settings, root, data)
    if kind == "crm":
        return crm_inputs(settings, root, data)
    raise LeadmlError(f"data.kind must be 'crm' or 'flat', got {kind!r} (data={data.get('name')})")


def _simulation(settings: ForecastSettings) -> dict[str, Any]:
    """The settings of the simulated conversions, the same for the forward and the reverse forecast."""
    return {
        "draws": settings.draws,
        "seed": settings.seed,
        "prior": settings.prior,
        "min_wins": settings.min_wins,
        "unknown_source": settings.unknown_source,
    }


def _reverse(
    settings: ForecastSettings, inputs: ForecastInputs, forward: pd.DataFrame, known: tuple[str, ...]
) -> tuple[pd.DataFrame | None, float | None, str | None]:
    """The leads needed for the revenue target, the target and where it came from; Nones without deal
    values. The target defaults to the forward forecast's expected revenue."""
    if not inputs.deal_values:
        return None, None, None
    target, target_from = settings.revenue_target, "forecast.revenue_target"
    if target is None:
        target, target_from = float(forward.loc[TOTAL, "expected_revenue"]), "the plan's expected revenue"
    mix = canonical_plan(settings.mix, inputs.synonyms, known) if settings.mix is not None else None
    reverse = leads_needed(
        inputs.history, target, mix=mix, confidence=settings.confidence, **_simulation(settings)
    )
    return reverse, target, target_from


def _mix(reverse: pd.DataFrame) -> dict[str, float]:
    """The reverse forecast's share of each group that gets any leads."""
    return {str(k): float(v) for k, v in reverse["share"].drop(TOTAL).items() if v > 0}


def _no_capacity(inputs: ForecastInputs, name: Any) -> str:
    """Why there is no capacity plan: no scored run yet, or data that leadml-score cannot score."""
    if not inputs.scorable:
        return (
            f"no capacity plan: data={name} has no open leads to score (contract.open), "
            "so leadml-score has no run to plan from"
        )
    return "no scored run, so no capacity plan (run leadml-score first)"


def _write_tables(tables: Mapping[str, pd.DataFrame | None], out: Path) -> dict[str, str]:
    """Each table there is as ``<name>.csv`` in ``out``; the files written, by table name."""
    files: dict[str, str] = {}
    for name, table in tables.items():
        if table is not None:
            write_csv_atomic(table, out / f"{name}.csv")
            files[name] = str(out / f"{name}.csv")
    return files


def _forecast_record(result: ForecastResult, settings: ForecastSettings) -> dict[str, Any]:
    """``forecast.json``: the result but its files, the settings, then the tables as records."""
    summary = {f.name: getattr(result, f.name) for f in fields(result) if f.name not in ("files", *_TABLES)}
    chosen = {k: getattr(settings, k) for k in settings.__dataclass_fields__}
    record = _json_ready({**summary, "settings": chosen})
    record.update({name: _records(getattr(result, name)) for name in _TABLES})
    return record


def summary_lines(result: ForecastResult) -> list[str]:
    """What ``leadml-forecast`` prints of a :class:`ForecastResult`, one line per table."""
    level = f"{result.level:.0%}"
    lines = [_history_line(result)]
    groups = len(result.history) - 1
    lines.append(f"forecast: rates per {result.grouping}: {groups:,} group{'s' * (groups != 1)}")
    forward = result.forward.loc[TOTAL]
    revenue = (
        "revenue not available (no deal values)"
        if pd.isna(forward["expected_revenue"])
        else f"revenue {forward['expected_revenue']:,.0f} "
        f"[{forward['revenue_low']:,.0f}, {forward['revenue_high']:,.0f}]"
    )
    lines.append(
        f"forecast: {int(forward['planned_leads']):,} planned leads ({result.planned_from}): "
        f"{forward['expected_conversions']:,.1f} conversions [{int(forward['conversions_low']):,}, "
        f"{int(forward['conversions_high']):,}], {revenue} ({level} intervals)"
    )
    if result.reverse is not None:
        reverse = result.reverse.loc[TOTAL]
        lines.append(
            f"forecast: revenue {result.revenue_target:,.0f} ({result.revenue_target_from}) needs "
            f"{int(reverse['mix_expected']):,} leads of the mix in expectation, "
            f"{int(reverse['mix_at_confidence']):,} to reach it with {result.confidence:.0%} confidence"
        )
    if result.capacity is None:
        lines.append(f"forecast: {result.no_capacity}")
    else:
        capacity = result.capacity.loc[TOTAL]
        lines.append(
            f"forecast: {result.reps} reps work {int(capacity['worked_leads']):,} of "
            f"{int(capacity['open_leads']):,} open leads (probability >= {result.threshold:.3f}): "
            f"{capacity['expected_wins']:,.1f} wins expected [{int(capacity['wins_low']):,}, "
            f"{int(capacity['wins_high']):,}]"
        )
    lines.extend(f"forecast: note: {note}" for note in result.notes)
    folder = Path(result.files["json"]).parent
    names = ", ".join(Path(path).name for path in result.files.values())
    lines.append(f"forecast: wrote {names} to {folder} ({result.seconds} s)")
    return lines


def _history_line(result: ForecastResult) -> str:
    """The first line printed: the leads the rates are of, and the leads left out of them."""
    history = result.history.loc[ALL]
    as_of = result.as_of
    if result.rate_kind == AMONG_CLOSED:
        when = f" as of {as_of:%Y-%m-%d}" if as_of is not None else " (no time column)"
        return (
            f"forecast: history{when}: {int(history['leads']):,} closed leads, {int(history['won']):,} won "
            f"({history['conversion_rate']:.1%} = won / (won + lost) among closed leads, not a rate within "
            f"a horizon); {int(history['immature_leads']):,} open leads left out of the rates"
        )
    return (
        f"forecast: history as of {as_of:%Y-%m-%d}: {int(history['leads']):,} mature leads, "
        f"{int(history['won']):,} won within {result.horizon_days} days "
        f"({history['conversion_rate']:.1%}); {int(history['immature_leads']):,} younger leads "
        "left out of the rates"
    )
