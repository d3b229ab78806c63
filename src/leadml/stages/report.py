"""``leadml-report``: the leadership report and the ranked CSV from the latest scored run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.adapters import tracking
from leadml.adapters.layout import FLAT_TABLE, SCORING_RUN_RECORD, open_rows_file, read_interim
from leadml.adapters.model_folder import local_model_folder
from leadml.adapters.sinks import (
    PARTITION_PREFIX,
    earlier_predictions,
    read_run_record,
    read_scored,
    scored_partition,
)
from leadml.adapters.sources import write_csv_atomic
from leadml.data import schema as s
from leadml.data.contracts import as_tuple
from leadml.data.features import LABEL, flat_open_features
from leadml.modelling.scorer import PROBABILITY
from leadml.reporting import html, plots
from leadml.reporting.leadership import (
    REASON_COLUMNS,
    RISK_COLUMNS,
    ReportSettings,
    breakdown,
    calibration_table,
    conversion_analysis,
    crm_card_features,
    flat_details,
    flat_resolved_predictions,
    lead_cards,
    lead_timeline,
    movers,
    ranked_csv,
    resolved_predictions,
    tier_order,
    with_lead_details,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    csv: Path
    leads: int
    as_of: pd.Timestamp


def report_stage(cfg: Mapping[str, Any], root: Path) -> ReportFiles:
    """Read a scored run and everything around it; write the HTML report and the ranked CSV."""

    report_cfg, mlflow_cfg = cfg["report"], cfg["mlflow"]
    settings = ReportSettings.from_mapping(report_cfg.get("settings") or {})
    partition = scored_partition(Path(report_cfg["scored_dir"]), report_cfg.get("as_of"))
    scored = read_scored(partition)
    record = read_run_record(partition, SCORING_RUN_RECORD)
    as_of = pd.Timestamp(partition.name.removeprefix(PARTITION_PREFIX), tz="UTC")
    data = cfg.get("data") or {}
    flat = data.get("kind") == "flat"
    interim_dir = Path(report_cfg["interim_dir"])
    if flat:  # one table: the open leads' own columns are their details
        open_rows = flat_details(pd.read_parquet(interim_dir / open_rows_file(FLAT_TABLE)), data)
        frame = with_lead_details(scored, open_rows, pd.DataFrame(), settings.personal_columns)
    else:
        tables = read_interim(interim_dir, s.CRM_TABLES)
        frame = with_lead_details(scored, tables[s.LEADS], tables[s.ACCOUNTS], settings.personal_columns)
    thresholds = {str(k): float(v) for k, v in (record.get("thresholds") or {}).items()}
    floor_tier = str(record.get("floor_tier") or "D")
    tiers = tier_order(thresholds, floor_tier, frame["tier"].unique())

    version = str(frame["model_version"].iloc[0]) if "model_version" in frame.columns and len(frame) else ""
    model_uri = f"models:/{mlflow_cfg['registered_model']}/{version}" if version.isdigit() else version
    scored_with = str(record.get("model_uri") or "")
    if scored_with and local_model_folder(scored_with) is not None:
        model_uri = scored_with  # scored offline from an exported folder: no tracking server needed
    else:
        uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
        tracking.configure(uri, str(report_cfg["experiment"]), Path(mlflow_cfg["artifact_root"]))
    scorer = tracking.load_scorer(model_uri)
    # a flat table's label is "converted", with no horizon; the CRM's is "won within the horizon"
    horizon = None if flat else int((scorer.feature_settings or {}).get("horizon_days", 90))

    snapshots_path = Path(report_cfg["snapshots"])
    analysis: dict[str, Any] = {"rows": 0, "missing": str(snapshots_path)}
    top = frame.head(settings.top_leads)
    scored_dir = Path(report_cfg["scored_dir"])
    if flat:
        labelled = pd.read_parquet(interim_dir / f"{FLAT_TABLE}.parquet", columns=[s.LEAD_ID, LABEL])
        resolved = flat_resolved_predictions(earlier_predictions(scored_dir, as_of), labelled)
        contract = data.get("contract") or {}
        features = flat_open_features(
            open_rows[open_rows[s.LEAD_ID].isin(set(top[s.LEAD_ID]))], as_tuple(contract.get("personal"))
        )
        cards = lead_cards(top, features, scorer, settings, lambda lead_id: [])
        analysis = {
            "rows": 0,
            "note": "A flat table has no dated activities or outcomes to analyse here: the model report "
            "shows how each tier converted on the test window.",
        }
    else:
        if snapshots_path.exists():
            analysis = conversion_analysis(
                pd.read_parquet(snapshots_path), tables[s.LEADS], tables[s.OUTCOMES], scorer,
                thresholds, floor_tier, settings,
            )  # fmt: skip
        resolved = resolved_predictions(
            earlier_predictions(scored_dir, as_of), as_of, tables[s.OUTCOMES], horizon
        )
        days, events = settings.timeline_days, settings.timeline_events
        cards = lead_cards(
            top, crm_card_features(top, tables, scorer, as_of), scorer, settings,
            lambda lead_id: lead_timeline(tables[s.ACTIVITIES], lead_id, as_of, days, events),
        )  # fmt: skip
    up, down = movers(frame, settings.movers)
    charts = {
        "distribution": html.figure_data_uri(
            plots.score_distribution_figure(frame[PROBABILITY].to_numpy(), thresholds)
        ),
    }
    if not resolved.empty:
        charts["resolved"] = html.figure_data_uri(
            plots.reliability_figure(resolved["won"].to_numpy(), {"earlier runs": resolved[PROBABILITY]})
        )
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
        floor_tier=floor_tier,
        tiers=tiers,
        up=up.to_dict("records"),
        down=down.to_dict("records"),
        record=record,
        model_uri=model_uri,
        horizon=horizon,
        resolved=calibration_table(resolved).to_dict("records"),
        resolved_count=len(resolved),
        charts=charts,
        table=frame.head(settings.table_rows).to_dict("records"),
        table_total=len(frame),
        personal=[c for c in settings.personal_columns if c in frame.columns],
        reason_columns=REASON_COLUMNS,
        risk_columns=RISK_COLUMNS,
        cards=cards,
        timeline_days=settings.timeline_days,
        timelines=not flat,  # a flat table has no activity timeline
        analysis=_records(analysis),
    )
    out = Path(report_cfg["output_dir"])
    stem = f"leads-{as_of:%Y-%m-%d}"
    html_path = html.write_page(page, out / f"{stem}.html")
    ranked = ranked_csv(frame, settings.personal_columns)
    csv_path = write_csv_atomic(ranked, out / f"{stem}.csv", index=False)
    return ReportFiles(html=html_path, csv=csv_path, leads=len(frame), as_of=as_of)


def _records(analysis: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict("records") if isinstance(v, pd.DataFrame) else v for k, v in analysis.items()}
