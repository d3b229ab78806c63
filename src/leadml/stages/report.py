"""``leadml-report``: the leadership report and the ranked CSV from the latest scored run."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2.utils import htmlsafe_json_dumps

from leadml.adapters import sinks, tracking
from leadml.adapters.layout import FLAT_TABLE, SCORING_RUN_RECORD, open_rows_file, read_interim
from leadml.adapters.model_folder import local_model_folder
from leadml.adapters.sinks import (
    PART_FILE,
    PARTITION_PREFIX,
    earlier_predictions,
    read_run_record,
    read_scored,
    read_scored_file,
    scored_partition,
    written_partitions,
)
from leadml.adapters.sources import write_csv_atomic
from leadml.data import schema as s
from leadml.data.contracts import as_tuple
from leadml.data.features import LABEL, flat_open_features
from leadml.errors import TrackingUnavailableError, writing_to
from leadml.modelling.evaluate import FLOOR_TIER, SalesCapacity, TierSettings
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.modelling.scorer import BASE_VALUE, PROBABILITY, LeadScorer
from leadml.reporting import html, kpis, plots
from leadml.reporting.account_section import AccountSection, account_section, accounts_csv
from leadml.reporting.kpis import Kpis, KpiSettings, ThresholdChoice
from leadml.reporting.lead_mix import lead_mix_shift
from leadml.reporting.leadership import (
    TABLE_TEXT,
    ReportSettings,
    base_rate,
    breakdown,
    calibration_table,
    card_leads,
    conversion_analysis,
    crm_lead_features,
    estimated_against_realised,
    flat_details,
    flat_prediction_outcomes,
    flat_resolved_predictions,
    group_sentences,
    lead_cards,
    lead_timeline,
    movement_texts,
    movers,
    page_table,
    prediction_outcomes,
    ranked_csv,
    resolved_predictions,
    tier_order,
    with_lead_details,
    with_source_labels,
)
from leadml.scoring.pandas_engine import previous_columns
from leadml.scoring.scores import movement_words
from leadml.stages.experiment import ReadoutSources, report_readout

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFiles:
    """The report of one scored run: the two files written, for the lead count and date printed."""

    html: Path
    csv: Path
    leads: int
    as_of: pd.Timestamp
    # the MLflow run the KPIs were logged to (the scoring run of the date); None: not logged
    kpi_run_id: str | None = None
    # the ranked accounts (accounts-YYYY-MM-DD.csv); None: the run rolled up no accounts
    accounts_csv: Path | None = None


@dataclass(frozen=True)
class _ScoredRun:
    """A scored partition with its run record and the ingested tables its leads come from."""

    frame: pd.DataFrame  # the scored leads with their details, best first
    record: Mapping[str, Any]  # _scoring_run.json
    as_of: pd.Timestamp
    thresholds: dict[str, float]
    floor_tier: str
    tables: Mapping[str, pd.DataFrame]  # the CRM tables; a flat table's open rows under FLAT_TABLE
    # under an experiment: each arm's model by arm name, each loaded once (the lead cards explain a
    # lead with its arm's); empty without one
    arm_scorers: Mapping[str, LeadScorer] = field(default_factory=dict)


@dataclass(frozen=True)
class _History:
    """What the report says beyond today's scores: earlier predictions, analysis, lead cards."""

    analysis: Mapping[str, Any]
    resolved: pd.DataFrame
    cards: list[Any]
    # per earlier run whose outcomes are all in: its estimate before them against what happened
    estimates: pd.DataFrame
    # every earlier prediction with its tier, resolved and won (and, from the CRM, how it closed)
    judged: pd.DataFrame


def report_stage(cfg: Mapping[str, Any], root: Path) -> ReportFiles:
    """Read a scored run and everything around it; write the HTML report and the ranked CSV."""

    report_cfg = cfg["report"]
    data = cfg.get("data") or {}
    flat = data.get("kind") == "flat"
    settings = ReportSettings.from_mapping(report_cfg.get("settings") or {})
    kpi_settings = KpiSettings.from_mapping(report_cfg.get("kpis"))
    capacity = TierSettings.from_mapping(cfg.get("tiers") or {}).sales_capacity
    run = _scored_run(report_cfg, data, settings)
    kpi_settings.ready_tiers(_tiers(run))  # a tier the run does not have: one line, before any model loads
    ranked = ranked_csv(run.frame, settings.personal_columns)  # the stored values, before words for the page
    scorer, model_uri = _run_scorer(run, cfg, root)
    run = replace(
        run, frame=with_source_labels(run.frame, scorer), arm_scorers=_arm_scorers(run, scorer, model_uri)
    )
    # a flat table's label is "converted", with no horizon; the CRM's is "won within the horizon"
    horizon = None if flat else int((scorer.feature_settings or {}).get("horizon_days", 90))
    features = _open_features(run, scorer, data)
    _add_movements(run, scorer, features, report_cfg, settings)
    if flat:
        history = _flat_history(run, scorer, features, report_cfg, settings)
    else:
        history = _crm_history(run, scorer, features, report_cfg, settings, horizon)
    frame, as_of, thresholds, tiers = run.frame, run.as_of, run.thresholds, _tiers(run)
    created = (
        None if flat else run.tables[s.LEADS].drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.CREATED_AT]
    )
    programme = kpis.kpis(history.judged, kpi_settings, tiers, created)
    choice = _threshold_choice(run, history.judged, programme, capacity)
    kpi_chart = _kpi_chart(programme, tiers)
    up, down = movers(frame, settings.movers)
    start = _start(scorer, frame)
    sources = ReadoutSources(Path(report_cfg["scored_dir"]), Path(report_cfg["interim_dir"]), flat)
    personal = [c for c in settings.personal_columns if c in frame.columns]
    out = Path(report_cfg["output_dir"])
    stem = f"leads-{as_of:%Y-%m-%d}"
    night_accounts = _account_rows(run)
    accounts_file = out / f"accounts-{as_of:%Y-%m-%d}.csv"
    page = html.render(
        "leadership.html.j2",
        title=f"Lead scores as of {as_of:%Y-%m-%d}",
        subtitle=(
            f"{len(frame):,} open leads scored by model {model_uri}; "
            f"generated {pd.Timestamp.now(tz='UTC'):%Y-%m-%d %H:%M} UTC"
        ),
        as_of=as_of,
        leads=len(frame),
        expected_conversions=float(frame[PROBABILITY].sum()),
        expected_revenue=float(frame["expected_value"].sum()) if "expected_value" in frame else None,
        by_tier=breakdown(frame, "tier", tiers).to_dict("records"),
        by_source=breakdown(frame, s.SOURCE).to_dict("records") if s.SOURCE in frame else [],
        by_owner=breakdown(frame, s.OWNER).to_dict("records") if s.OWNER in frame else [],
        thresholds=thresholds,
        floor_tier=run.floor_tier,
        tiers=tiers,
        up=up.to_dict("records"),
        down=down.to_dict("records"),
        record=run.record,
        stale_days=stale_days(run.record, as_of),
        lead_mix=lead_mix_shift(scorer.reference or {}, features, frame[PROBABILITY], settings.drift_psi),
        model_uri=model_uri,
        horizon=horizon,
        resolved=calibration_table(history.resolved).to_dict("records"),
        resolved_count=len(history.resolved),
        estimates=history.estimates.to_dict("records"),
        charts=_charts(frame, thresholds, history.resolved),
        table=htmlsafe_json_dumps(
            page_table(frame, start, personal, settings.table_rows), separators=(",", ":"), allow_nan=False
        ),
        table_rows=min(len(frame), settings.table_rows),
        table_total=len(frame),
        table_columns=[c for c in TABLE_TEXT if c in frame.columns],
        page_rows=settings.page_rows,
        personal=personal,
        cards=history.cards,
        timeline_days=settings.timeline_days,
        timelines=not flat,  # a flat table has no activity timeline
        analysis=_records(history.analysis),
        kpis=_kpi_context(programme, kpi_chart),
        experiment=report_readout(sources, run.record, as_of, horizon),
        accounts=_accounts_context(run, night_accounts, scorer, settings),
        accounts_csv=accounts_file.name,
        threshold=choice,
        sales_ready_threshold=thresholds.get(kpi_settings.sales_ready_tier),
    )
    with writing_to(out, "report.output_dir"):
        html_path = html.write_page(page, out / f"{stem}.html")
        csv_path = write_csv_atomic(ranked, out / f"{stem}.csv", index=False)
        if night_accounts is not None:
            write_csv_atomic(accounts_csv(night_accounts, _company_names(run)), accounts_file, index=False)
    kpi_run_id = _track_kpis(cfg, run, root, programme, choice)
    return ReportFiles(
        html=html_path,
        csv=csv_path,
        leads=len(frame),
        as_of=as_of,
        kpi_run_id=kpi_run_id,
        accounts_csv=accounts_file if night_accounts is not None else None,
    )


def _account_rows(run: _ScoredRun) -> pd.DataFrame | None:
    """The run's account partition (its folder is in the run record); None when it rolled up none."""
    folder = (run.record.get("accounts") or {}).get("output")
    if not folder or not (Path(folder) / PART_FILE).exists():
        return None
    return read_scored_file(Path(folder) / PART_FILE)


def _company_names(run: _ScoredRun) -> pd.DataFrame | None:
    return run.tables.get(s.ACCOUNTS)


def _accounts_context(
    run: _ScoredRun, rows: pd.DataFrame | None, scorer: LeadScorer, settings: ReportSettings
) -> AccountSection | None:
    """The Accounts section's rows and sentences; None (no section) without account rows."""
    if rows is None or rows.empty:
        return None
    engaged = (scorer.accounts or {}).get("engaged_probability")
    return account_section(
        rows,
        _company_names(run),
        run.record.get("accounts") or {},
        settings.top_accounts,
        None if engaged is None else float(engaged),
    )


def _scored_run(
    report_cfg: Mapping[str, Any], data: Mapping[str, Any], settings: ReportSettings
) -> _ScoredRun:
    """The chosen scored partition (``report.as_of`` or the latest) with the leads' details."""
    partition = scored_partition(Path(report_cfg["scored_dir"]), report_cfg.get("as_of"))
    scored = read_scored(partition)
    record = read_run_record(partition, SCORING_RUN_RECORD)
    interim_dir = Path(report_cfg["interim_dir"])
    if data.get("kind") == "flat":  # one table: the open leads' own columns are their details
        open_rows = flat_details(pd.read_parquet(interim_dir / open_rows_file(FLAT_TABLE)), data)
        tables: Mapping[str, pd.DataFrame] = {FLAT_TABLE: open_rows}
        frame = with_lead_details(scored, open_rows, pd.DataFrame(), settings.personal_columns)
    else:
        tables = read_interim(interim_dir, s.CRM_TABLES)
        frame = with_lead_details(scored, tables[s.LEADS], tables[s.ACCOUNTS], settings.personal_columns)
    return _ScoredRun(
        frame=frame,
        record=record,
        as_of=pd.Timestamp(partition.name.removeprefix(PARTITION_PREFIX), tz="UTC"),
        thresholds={str(k): float(v) for k, v in (record.get("thresholds") or {}).items()},
        floor_tier=str(record.get("floor_tier") or FLOOR_TIER),
        tables=tables,
    )


def _tiers(run: _ScoredRun) -> list[str]:
    return tier_order(run.thresholds, run.floor_tier, run.frame["tier"].unique())


def _run_scorer(run: _ScoredRun, cfg: Mapping[str, Any], root: Path) -> tuple[LeadScorer, str]:
    """The model that scored the run (for the lead cards' explanations) and its URI; under an
    experiment, the first arm's (its model builds the features)."""
    report_cfg, mlflow_cfg = cfg["report"], cfg["mlflow"]
    frame = run.frame
    version = str(frame["model_version"].iloc[0]) if "model_version" in frame.columns and len(frame) else ""
    model_uri = f"models:/{mlflow_cfg['registered_model']}/{version}" if version.isdigit() else version
    arms = [_arm_model_uri(arm) for arm in _experiment_arms(run.record)]
    if arms:  # the version of the top lead's arm is not the first arm's
        model_uri = arms[0]
    scored_with = arms or [str(run.record.get("model_uri") or "")]
    if all(uri and local_model_folder(uri) is not None for uri in scored_with):
        model_uri = scored_with[0]  # scored offline from exported folders: no tracking server needed
    else:
        uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
        tracking.configure(uri, str(report_cfg["experiment"]), Path(mlflow_cfg["artifact_root"]))
    return tracking.load_scorer(model_uri), model_uri


def _experiment_arms(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The arms of the run's experiment (``_scoring_run.json``'s ``experiment.arms``); none without one."""
    return list((record.get("experiment") or {}).get("arms") or [])


def _arm_model_uri(arm: Mapping[str, Any]) -> str:
    """The model an arm scored with: an alias pinned to the version that held it that night."""
    uri, version = str(arm.get("model_uri") or ""), str(arm.get("model_version") or "")
    name, _, alias = uri.removeprefix("models:/").partition("@")
    return f"models:/{name}/{version}" if uri.startswith("models:/") and alias and version.isdigit() else uri


def _arm_scorers(run: _ScoredRun, first: LeadScorer, first_uri: str) -> dict[str, LeadScorer]:
    """Each arm's model by arm name, each model loaded once (the first arm's is ``first``)."""
    loaded: dict[str, LeadScorer] = {first_uri: first}
    scorers = {}
    for arm in _experiment_arms(run.record):
        uri = _arm_model_uri(arm)
        if uri not in loaded:
            loaded[uri] = tracking.load_scorer(uri)
        scorers[str(arm["name"])] = loaded[uri]
    return scorers


def _open_features(run: _ScoredRun, scorer: LeadScorer, data: Mapping[str, Any]) -> pd.DataFrame:
    """Today's features of every open lead, rebuilt as the scoring run built them.

    The lead cards explain the top leads with them, and the lead-mix paragraph compares them
    with the model's training profile (the scored partition keeps no features).
    """
    if data.get("kind") == "flat":
        personal = as_tuple((data.get("contract") or {}).get("personal"))
        return flat_open_features(run.tables[FLAT_TABLE], personal)
    return crm_lead_features(run.frame, run.tables, scorer, run.as_of)


def _add_movements(
    run: _ScoredRun,
    scorer: LeadScorer,
    features: pd.DataFrame,
    report_cfg: Mapping[str, Any],
    settings: ReportSettings,
) -> None:
    """``movement_text`` of the movers and the carded leads: why each moved since its previous run,
    quoting today's sentences of the groups that moved it (the partition's ``movement`` names them)."""
    frame = run.frame
    folder = sinks.previous_partition_dir(Path(report_cfg["scored_dir"]), run.as_of)
    if folder is None or not any(c.startswith(GROUP_PREFIX) for c in frame.columns):
        return
    up, down = movers(frame, settings.movers)
    leads = list(
        dict.fromkeys([*up[s.LEAD_ID], *down[s.LEAD_ID], *frame[s.LEAD_ID].head(settings.top_leads)])
    )
    files = sorted(folder.glob("*.parquet"))
    before = pd.concat(
        [sinks.read_scored_file(f, columns=previous_columns(files)) for f in files], ignore_index=True
    )
    before = before[before[s.LEAD_ID].isin(leads)]
    today = frame[frame[s.LEAD_ID].isin(leads)]
    sentences = group_sentences(list(today[s.LEAD_ID]), features, scorer)
    texts = movement_texts(today, before, sentences, movement_words(scorer))
    frame["movement_text"] = frame[s.LEAD_ID].map(texts)


# a run whose data ends this many days before its date says so at the top of the report (the
# nightly job refuses such data unless score.max_staleness_days was raised or turned off)
STALE_DAYS = 7


def stale_days(record: Mapping[str, Any], as_of: pd.Timestamp) -> int | None:
    """Days between the run's date and its data's latest lead or activity, when more than STALE_DAYS."""
    through = record.get("data_through")
    if not through:
        return None
    days = int((as_of - pd.Timestamp(through)) / pd.Timedelta(days=1))
    return days if days > STALE_DAYS else None


def _start(scorer: LeadScorer, frame: pd.DataFrame) -> float | None:
    """The training base rate the page's points start from; None without a rate or a base value."""
    values = frame[BASE_VALUE].dropna() if BASE_VALUE in frame.columns else pd.Series(dtype="float64")
    start = base_rate(scorer, float(values.iloc[0]) if len(values) else math.nan)
    return start if math.isfinite(start) else None


def _flat_history(
    run: _ScoredRun,
    scorer: LeadScorer,
    features: pd.DataFrame,
    report_cfg: Mapping[str, Any],
    settings: ReportSettings,
) -> _History:
    interim_dir, scored_dir = Path(report_cfg["interim_dir"]), Path(report_cfg["scored_dir"])
    labelled = pd.read_parquet(interim_dir / f"{FLAT_TABLE}.parquet", columns=[s.LEAD_ID, LABEL])
    earlier = earlier_predictions(scored_dir, run.as_of, columns=["tier"])
    resolved = flat_resolved_predictions(earlier, labelled)
    judged = flat_prediction_outcomes(earlier, labelled)
    estimates = estimated_against_realised(judged, _earlier_records(scored_dir, run.as_of))
    top = card_leads(run.frame, settings.top_leads)
    analysis = {
        "rows": 0,
        "note": "A flat table has no dated activities or outcomes to analyse here: the model report "
        "shows how each tier converted on the test window.",
    }
    cards = lead_cards(top, features, scorer, settings, lambda lead_id: [], run.arm_scorers)
    return _History(analysis, resolved, cards, estimates, judged)


def _crm_history(
    run: _ScoredRun,
    scorer: LeadScorer,
    features: pd.DataFrame,
    report_cfg: Mapping[str, Any],
    settings: ReportSettings,
    horizon: int | None,
) -> _History:
    tables, as_of = run.tables, run.as_of
    snapshots_path = Path(report_cfg["snapshots"])
    analysis: Mapping[str, Any] = {"rows": 0, "missing": str(snapshots_path)}
    if snapshots_path.exists():
        analysis = conversion_analysis(
            pd.read_parquet(snapshots_path), tables[s.LEADS], tables[s.OUTCOMES], scorer,
            run.thresholds, run.floor_tier, settings,
        )  # fmt: skip
    scored_dir = Path(report_cfg["scored_dir"])
    earlier = earlier_predictions(scored_dir, as_of, columns=["tier"])
    resolved = resolved_predictions(earlier, as_of, tables[s.OUTCOMES], horizon)
    judged = prediction_outcomes(earlier, as_of, tables[s.OUTCOMES], horizon)
    estimates = estimated_against_realised(judged, _earlier_records(scored_dir, as_of))
    top = card_leads(run.frame, settings.top_leads)
    days, events = settings.timeline_days, settings.timeline_events
    cards = lead_cards(
        top, features, scorer, settings,
        lambda lead_id: lead_timeline(tables[s.ACTIVITIES], lead_id, as_of, days, events), run.arm_scorers,
    )  # fmt: skip
    return _History(
        analysis, resolved, cards, estimates, kpis.with_closing(judged, tables[s.OUTCOMES], as_of)
    )


def _earlier_records(scored_dir: Path, as_of: pd.Timestamp) -> dict[pd.Timestamp, dict[str, Any]]:
    """The run record (``_scoring_run.json``) of every run before ``as_of``, by run date."""
    return {
        day: read_run_record(partition, SCORING_RUN_RECORD)
        for day, partition in written_partitions(scored_dir).items()
        if day < as_of
    }


def _charts(frame: pd.DataFrame, thresholds: Mapping[str, float], resolved: pd.DataFrame) -> dict[str, str]:
    charts = {
        "distribution": html.figure_data_uri(
            plots.score_distribution_figure(frame[PROBABILITY].to_numpy(), thresholds)
        ),
    }
    if not resolved.empty:
        charts["resolved"] = html.figure_data_uri(
            plots.reliability_figure(resolved["won"].to_numpy(), {"earlier runs": resolved[PROBABILITY]})
        )
    return charts


def _records(analysis: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict("records") if isinstance(v, pd.DataFrame) else v for k, v in analysis.items()}


# --------------------------------------------------------------------------- the scoring programme over time
def _threshold_choice(
    run: _ScoredRun, judged: pd.DataFrame, programme: Kpis, capacity: SalesCapacity
) -> ThresholdChoice | None:
    """Tonight's leads: the revenue-maximising threshold for the capacity against today's sales-ready
    one; None when no lead has a deal value (none estimated, no won deal in the history)."""
    frame = run.frame
    lead_table = run.tables.get(FLAT_TABLE, run.tables.get(s.LEADS))
    estimated = None
    if lead_table is not None and s.ESTIMATED_DEAL_VALUE in lead_table.columns:
        own = lead_table.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.ESTIMATED_DEAL_VALUE]
        estimated = frame[s.LEAD_ID].map(own)
    won_deals = pd.DataFrame({"tier": pd.Series(dtype=object), "deal_value": pd.Series(dtype="float64")})
    if programme.closing and not judged.empty:  # each won lead once, in the tier of its latest earlier night
        wins = judged[judged["closed_won"]].sort_values("run_date").drop_duplicates(s.LEAD_ID, keep="last")
        won_deals = wins[["tier", "deal_value"]]
    values = kpis.deal_values(frame["tier"].astype(str), estimated, won_deals)
    if values.missing == len(frame):
        return None
    lowest_ready = programme.ready_tiers[-1]
    today = run.thresholds.get(lowest_ready, 0.0)  # the floor tier as sales-ready: every lead
    return kpis.revenue_threshold(frame[PROBABILITY].to_numpy(dtype="float64"), values, today, capacity)


def _kpi_chart(programme: Kpis, tiers: list[str]) -> str | None:
    if programme.empty:
        return None
    return html.figure_data_uri(plots.kpi_figure(programme.overall(), programme.conversion_by_tier(tiers)))


def _kpi_context(programme: Kpis, chart: str | None) -> dict[str, Any]:
    """What the page's "The scoring programme over time" shows, as plain records."""
    return {
        "empty": programme.empty,
        "period": programme.period,
        "ready": " or ".join(programme.ready_tiers),
        "closing": programme.closing,
        "rows": programme.overall().to_dict("records"),
        "tiers": programme.table[programme.table["tier"] != kpis.ALL_TIERS].to_dict("records"),
        "cohorts": None if programme.cohorts is None else programme.cohorts.to_dict("records"),
        "chart": chart,
    }


def _track_kpis(
    cfg: Mapping[str, Any], run: _ScoredRun, root: Path, programme: Kpis, choice: ThresholdChoice | None
) -> str | None:
    """Log the KPI tables (CSV) and the latest period's figures to the MLflow run that scored the
    reported date, when it was tracked; a tracking server that does not answer costs a warning,
    never the report (the page is already written)."""
    run_id = str(run.record.get("run_id") or "")
    if not run_id:
        logger.info("the scored run was not tracked: the KPIs are in the page only")
        return None
    uri = tracking.resolve_tracking_uri(cfg["mlflow"].get("tracking_uri"), root)
    recorded = run.record.get("tracking_uri")
    if recorded and recorded != tracking.masked_uri(uri):
        logger.warning(
            "the KPIs were not logged to MLflow: the run %s was tracked at %s, this report points at %s",
            run_id, recorded, tracking.masked_uri(uri),
        )  # fmt: skip
        return None
    metrics, period = kpis.latest_metrics(programme)
    tables = {"kpis/kpis.csv": programme.table}
    if programme.cohorts is not None:
        tables["kpis/cohorts.csv"] = programme.cohorts
    if choice is not None:
        metrics.update(_threshold_metrics(choice))
        tables["kpis/threshold.csv"] = _threshold_table(choice)
    step = int(f"{period:%Y%m%d}") if period is not None else 0
    try:
        tracking.configure(uri, str(cfg["report"]["experiment"]), Path(cfg["mlflow"]["artifact_root"]))
        tracking.log_to_run(run_id, metrics, tables, step=step)
    except TrackingUnavailableError as error:
        logger.warning("the KPIs were not logged to MLflow: %s", error)
        return None
    return run_id


def _threshold_metrics(choice: ThresholdChoice) -> dict[str, float]:
    metrics = {"kpi_capacity_leads": float(choice.capacity)}
    for name, worked in (("today", choice.today), ("best", choice.best)):
        metrics.update({
            f"kpi_{name}_threshold": float("nan") if worked.threshold is None else worked.threshold,
            f"kpi_{name}_leads": float(worked.leads),
            f"kpi_{name}_expected_revenue": worked.expected_revenue,
        })  # fmt: skip
    return metrics


def _threshold_table(choice: ThresholdChoice) -> pd.DataFrame:
    rows = [
        {"threshold": name, "probability": worked.threshold, "leads": worked.leads,
         "expected_conversions": worked.expected_conversions, "expected_revenue": worked.expected_revenue,
         "capacity": choice.capacity, "cost_per_lead": choice.cost_per_lead}
        for name, worked in (("today's sales-ready", choice.today), ("best for the capacity", choice.best))
    ]  # fmt: skip
    return pd.DataFrame(rows)
