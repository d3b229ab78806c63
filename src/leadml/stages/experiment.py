"""``leadml-experiment`` and ``leadml-promote``: the readout of an experiment of scoring.

Reads every nightly partition scored under the experiment, joins each lead's first exposure with
its outcome as the latest ingestion knows it, and writes the readout (HTML page, JSON, CSV) with
the always-valid comparison of the arms and a decision (:mod:`leadml.reporting.readout`). The
readout is logged to the scoring runs' MLflow experiment when tracking is on.

``leadml-promote`` is the same readout followed by the promotion of the winning arm's model: the
gate of training (:func:`leadml.modelling.gate.promotion_gate`) is applied again to that version's
recorded test metrics, with the champion comparison replaced by the experiment's verdict, and
the aliases move through the same function as after training (:func:`leadml.adapters.tracking.
move_aliases`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from leadml.adapters import tracking
from leadml.adapters.layout import FLAT_TABLE, SCORING_RUN_RECORD, read_interim
from leadml.adapters.model_folder import local_model_folder
from leadml.adapters.sinks import read_run_record, read_scored_file, scored_file_columns, written_partitions
from leadml.data import schema as s
from leadml.data.features import LABEL
from leadml.errors import writing_to
from leadml.modelling.gate import ExperimentVerdict, GateDecision, recorded_gate
from leadml.reporting import html, plots
from leadml.reporting.leadership import tier_order
from leadml.reporting.readout import (
    ARM,
    WINS,
    ArmPlan,
    Readout,
    ReadoutError,
    ReadoutSettings,
    crm_outcomes,
    experiment_readout,
    first_exposures,
    flat_outcomes,
    json_value,
)
from leadml.scoring.experiment import NO_EXPERIMENT, side_column

logger = logging.getLogger(__name__)
# weeks of lead creation that measure the intake of new leads before the experiment has its own
INTAKE_WEEKS = 8


@dataclass(frozen=True)
class ExperimentResult:
    """What one ``leadml-experiment`` (or ``leadml-promote``) run did; the CLI prints it."""

    readout: Readout
    html: Path
    json: Path
    run_id: str | None
    promotion: GateDecision | None = None  # leadml-promote: the gate's decision
    promoted_version: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Nights:
    """The experiment's scoring runs: their records by date and its plan of arms (the newest's)."""

    name: str
    records: dict[pd.Timestamp, dict[str, Any]]
    arms: tuple[ArmPlan, ...]
    started: pd.Timestamp | None
    versions: dict[str, tuple[str, ...]]  # per arm, the model versions that scored it, night by night

    def changed_model(self, arm: str) -> str | None:
        """The sentence for an arm whose model changed during the experiment (an alias moved)."""
        found = self.versions.get(arm, ())
        if len(found) < 2:
            return None
        return (
            f"arm {arm} was scored by versions {', '.join(found)} of its model: its figures mix them "
            "(name a version, models:/<name>/<n>, in the arm to keep it fixed)"
        )

    def changed_models(self) -> tuple[str, ...]:
        return tuple(note for arm in self.versions if (note := self.changed_model(arm)))


def experiment_stage(cfg: Mapping[str, Any], root: Path) -> ExperimentResult:
    """The readout of the configured (or the newest) experiment; with ``readout.promote`` its winner
    promoted through the gate."""
    started_at = time.perf_counter()
    readout_cfg, data = cfg["readout"], cfg.get("data") or {}
    settings = ReadoutSettings.from_mapping(readout_cfg.get("test"))
    sources = ReadoutSources(
        Path(readout_cfg["scored_dir"]), Path(readout_cfg["interim_dir"]), data.get("kind") == "flat"
    )
    nights = experiment_nights(sources.scored_dir, _chosen(cfg.get("experiment")), readout_cfg.get("as_of"))
    newest = nights.records[max(nights.records)]
    logged = _configure_tracking(cfg, root, newest)
    horizon = None if sources.flat else _horizon(newest)
    readout = read_experiment(sources, nights, settings, horizon)
    page, record = write_readout(readout, Path(readout_cfg["output_dir"]), horizon)
    run_id = _log_readout(readout, record) if logged else None
    decision, version = None, None
    if readout_cfg.get("promote"):
        decision, version = promote_winner(readout, nights, cfg["mlflow"]["registered_model"])
    return ExperimentResult(
        readout=readout, html=page, json=page.with_suffix(".json"), run_id=run_id, promotion=decision,
        promoted_version=version, seconds=round(time.perf_counter() - started_at, 2),
    )  # fmt: skip


@dataclass(frozen=True)
class ReadoutSources:
    """Where the experiment's nights and outcomes are: the scored partitions, the latest ingestion."""

    scored_dir: Path
    interim_dir: Path
    flat: bool


def read_experiment(
    sources: ReadoutSources, nights: _Nights, settings: ReadoutSettings, horizon: int | None
) -> Readout:
    """The readout of ``nights`` (:func:`experiment_nights`) as of the last of them."""
    newest = nights.records[max(nights.records)]
    predictions = read_predictions(sources.scored_dir, nights)
    exposures = first_exposures(predictions, nights.arms)
    judged = _judged(exposures, predictions, sources.interim_dir, sources.flat, horizon)
    thresholds = newest.get("thresholds") or {}
    order = tier_order(thresholds, str(newest.get("floor_tier") or "D"), exposures["tier"].dropna().unique())
    readout = experiment_readout(
        judged, nights.arms, sorted(nights.records), settings, experiment=nights.name,
        top_tier=settings.top_tier or order[0], tier_order=order, horizon_days=horizon,
        intake_per_week=_intake(exposures, sources.interim_dir, sources.flat, max(nights.records)),
    )  # fmt: skip
    return replace(readout, notes=nights.changed_models())


def report_readout(
    sources: ReadoutSources, record: Mapping[str, Any], as_of: pd.Timestamp, horizon: int | None
) -> dict[str, Any] | None:
    """The leadership report's "Experiment" section: the readout of the reported run's experiment
    as of its date, with the test settings of conf/experiment.yaml's defaults; None without one."""
    experiment = record.get("experiment")
    if not experiment:
        return None
    try:
        nights = experiment_nights(sources.scored_dir, str(experiment["name"]), f"{as_of:%Y-%m-%d}")
        readout = read_experiment(sources, nights, ReadoutSettings(), horizon)
    except ReadoutError as error:  # the report of the night's scores stands without its readout
        logger.warning("the report has no experiment section: %s", error)
        return None
    return readout_context(readout, horizon, readout_chart(readout))


def _chosen(experiment: Mapping[str, Any] | None) -> str | None:
    name = (experiment or {}).get("name")
    return None if name in (None, NO_EXPERIMENT) else str(name)


def experiment_nights(scored_dir: Path, name: str | None, as_of: str | None) -> _Nights:
    """The scoring runs of experiment ``name`` (None: the newest run's experiment) up to ``as_of``
    (``latest`` or YYYY-MM-DD), since the experiment's ``started`` date."""
    records = {
        day: read_run_record(partition, SCORING_RUN_RECORD)
        for day, partition in written_partitions(scored_dir).items()
        if as_of in (None, "latest") or day <= pd.Timestamp(str(as_of), tz="UTC")
    }
    under = {day: r for day, r in records.items() if r.get("experiment")}
    if name is None and under:
        name = str(under[max(under)]["experiment"]["name"])
    mine = {day: r for day, r in under.items() if r["experiment"]["name"] == name}
    if not mine:
        what = f"experiment {name}" if name else "an experiment"
        raise ReadoutError(
            f"no scoring run in {scored_dir} under {what} (score with leadml-score "
            "experiment=<name> first; conf/experiment/ lists the experiments)"
        )
    plan = mine[max(mine)]["experiment"]
    started = pd.Timestamp(plan["started"], tz="UTC") if plan.get("started") else None
    if started is not None:
        mine = {day: r for day, r in mine.items() if day >= started}
        if not mine:
            raise ReadoutError(f"experiment {name} has no scoring run since its start {plan['started']}")
    arms = tuple(
        ArmPlan(
            name=str(arm["name"]),
            share=float(arm["share"]),
            show_score=bool(arm.get("show_score", True)),
            model_uri=str(arm.get("model_uri") or arm.get("model")),
            model_version=None if arm.get("model_version") is None else str(arm["model_version"]),
        )
        for arm in plan["arms"]
    )
    versions: dict[str, tuple[str, ...]] = {}
    for day in sorted(mine):
        for arm in mine[day]["experiment"]["arms"]:
            found = versions.get(str(arm["name"]), ())
            version = str(arm.get("model_version"))
            versions[str(arm["name"])] = found if version in found else (*found, version)
    return _Nights(name=str(name), records=mine, arms=arms, started=started, versions=versions)


def read_predictions(scored_dir: Path, nights: _Nights) -> pd.DataFrame:
    """Every row of the experiment's nights (:func:`experiment_nights` keeps only its own): lead id,
    night, arm and the arms' side tiers and probabilities."""
    partitions = written_partitions(scored_dir)
    sides = [side_column(arm.name, what) for arm in nights.arms for what in ("tier", "probability")]
    wanted = [s.LEAD_ID, ARM, *sides]
    frames = []
    for day in sorted(nights.records):
        for path in sorted(partitions[day].glob("part-*.parquet")):
            present = set(scored_file_columns(path))
            missing = [c for c in wanted if c not in present]
            if missing:
                raise ReadoutError(
                    f"{path}: no column {missing[0]}: this night was not scored with the arms of "
                    f"experiment {nights.name} (changed arms make a new experiment: give it a new name)"
                )
            frames.append(read_scored_file(path, columns=wanted).assign(run_date=day))
    return pd.concat(frames, ignore_index=True)


def _judged(
    exposures: pd.DataFrame, predictions: pd.DataFrame, interim_dir: Path, flat: bool, horizon: int | None
) -> pd.DataFrame:
    if flat:
        labelled = pd.read_parquet(interim_dir / f"{FLAT_TABLE}.parquet", columns=[s.LEAD_ID, LABEL])
        labels = labelled.dropna(subset=[LABEL]).set_index(s.LEAD_ID)[LABEL]
        return flat_outcomes(exposures, labels, predictions[[s.LEAD_ID, "run_date"]])
    outcomes = read_interim(interim_dir, (s.OUTCOMES,))[s.OUTCOMES]
    return crm_outcomes(exposures, outcomes, int(horizon or 90))


def _intake(exposures: pd.DataFrame, interim_dir: Path, flat: bool, as_of: pd.Timestamp) -> float | None:
    """New leads per week: those first exposed after the first night, over the weeks since; before
    a second week of runs, the leads created in the last :data:`INTAKE_WEEKS` weeks (CRM data)."""
    first = exposures["first_seen"].min()
    weeks = (as_of - first).days / 7.0
    if weeks >= 2:
        return float((exposures["first_seen"] > first).sum() / weeks) or None
    if flat:
        return None
    leads = read_interim(interim_dir, (s.LEADS,))[s.LEADS]
    created = pd.to_datetime(leads[s.CREATED_AT], utc=True)
    recent = (created > as_of - pd.Timedelta(weeks=INTAKE_WEEKS)) & (created <= as_of)
    return float(recent.sum() / INTAKE_WEEKS) or None


def _configure_tracking(cfg: Mapping[str, Any], root: Path, newest: Mapping[str, Any]) -> bool:
    """Whether the readout is logged. MLflow points at the configured server when the registry is
    needed (a CRM's horizon read from an arm's registered model; leadml-promote) or the readout is
    logged (``readout.track``: auto unless every arm is an exported folder, true, false)."""
    mlflow_cfg, readout_cfg = cfg["mlflow"], cfg["readout"]
    track = str(readout_cfg.get("track", "auto")).lower()
    offline = all(
        local_model_folder(str(a.get("model_uri"))) is not None for a in newest["experiment"]["arms"]
    )
    flat = (cfg.get("data") or {}).get("kind") == "flat"
    # a CRM's horizon is read from the first arm's model; promoting reads and moves aliases
    registry = (not offline and not flat) or bool(readout_cfg.get("promote"))
    logged = track == "true" or (track == "auto" and not offline)
    if registry or logged:
        uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
        tracking.configure(uri, str(readout_cfg["tracking_experiment"]), Path(mlflow_cfg["artifact_root"]))
    return logged


def _horizon(newest: Mapping[str, Any]) -> int:
    """The horizon of the first arm's model (every arm's model scores the same features)."""
    scorer = tracking.load_scorer(str(newest["experiment"]["arms"][0]["model_uri"]))
    return int((scorer.feature_settings or {}).get("horizon_days", 90))


# --------------------------------------------------------------------------- the page
def write_readout(readout: Readout, output_dir: Path, horizon: int | None) -> tuple[Path, dict[str, Any]]:
    """``experiment-<name>-<date>.html`` (one self-contained page), ``.json`` and the looks as CSV."""
    stem = f"experiment-{readout.experiment}-{readout.as_of:%Y-%m-%d}"
    chart = readout_chart(readout)
    page = html.render(
        "experiment.html.j2", title=f"Experiment {readout.experiment} as of {readout.as_of:%Y-%m-%d}",
        subtitle=readout.sentence, readout=readout_context(readout, horizon, chart), standalone=True,
    )  # fmt: skip
    record = readout_record(readout)
    with writing_to(output_dir, "readout.output_dir"):
        path = html.write_page(page, output_dir / f"{stem}.html")
        html.write_page(_json_text(record), output_dir / f"{stem}.json")
        html.write_page(readout.looks.to_csv(index=False), output_dir / f"{stem}-looks.csv")
    return path, record


def readout_chart(readout: Readout) -> str | None:
    """The chart of the looks as a data URI; None before any night has enough outcomes to compare."""
    if not np.isfinite(readout.looks["difference"].to_numpy(dtype=np.float64)).any():
        return None
    figure = plots.experiment_looks_figure(readout.looks, readout.compare, readout.top_tier)
    return html.figure_data_uri(figure)


def readout_context(readout: Readout, horizon: int | None, chart: str | None) -> dict[str, Any]:
    """What ``experiment.html.j2`` shows (the leadership report's section renders the same)."""
    return {
        "name": readout.experiment,
        "as_of": readout.as_of,
        "decision": readout.decision,
        "sentence": readout.sentence,
        "winner": readout.winner,
        "compared": "all leads" if readout.compare == "all" else f"tier {readout.top_tier} leads",
        "baseline": readout.baseline,
        "arms": readout.arms.to_dict("records"),
        "tiers": readout.tiers.to_dict("records"),
        "comparisons": readout.comparisons.to_dict("records"),
        "plan": dict(readout.plan),
        "sample_ratio_p": readout.sample_ratio_p,
        "horizon": horizon,
        "chart": chart,
        "notes": list(readout.notes),
    }


def readout_record(readout: Readout) -> dict[str, Any]:
    """The readout as plain JSON values (the ``.json`` file and the MLflow artifact)."""
    return {
        "experiment": readout.experiment,
        "as_of": f"{readout.as_of:%Y-%m-%d}",
        "decision": readout.decision,
        "sentence": readout.sentence,
        "winner": readout.winner,
        "compare": readout.compare,
        "top_tier": readout.top_tier,
        "baseline": readout.baseline,
        "sample_ratio_p": readout.sample_ratio_p,
        "plan": {k: json_value(v) for k, v in readout.plan.items()},
        "arms": _records(readout.arms),
        "comparisons": _records(readout.comparisons),
        "tiers": _records(readout.tiers),
        "notes": list(readout.notes),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: json_value(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _json_text(record: Mapping[str, Any]) -> str:
    return json.dumps(record, indent=2) + "\n"


def _log_readout(readout: Readout, record: Mapping[str, Any]) -> str:
    """The readout as a run of the scoring experiment: per arm its conversion, per comparison its
    difference and always-valid p-value, the readout JSON and the nightly looks."""
    metrics: dict[str, float] = {"sample_ratio_p": readout.sample_ratio_p}
    for row in readout.arms.itertuples(index=False):
        metrics.update({f"{row.arm}.resolved": row.resolved, f"{row.arm}.conversion": row.conversion,
                        f"{row.arm}.top_conversion": row.top_conversion})  # fmt: skip
    for row in readout.comparisons.itertuples(index=False):
        metrics.update({f"{row.arm}.difference": row.difference, f"{row.arm}.p_value": row.p_value,
                        f"{row.arm}.lift": row.lift})  # fmt: skip
    finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    return tracking.log_scoring_run(
        f"readout-{readout.experiment}-{readout.as_of:%Y-%m-%d}",
        {"ab_experiment": readout.experiment, "compare": readout.compare, "top_tier": readout.top_tier},
        finite,
        {"readout_looks.csv": readout.looks},
        {"readout.json": record},
        {"ab_experiment": readout.experiment, "readout_decision": readout.decision},
    )


# --------------------------------------------------------------------------- promotion
def promote_winner(
    readout: Readout, nights: _Nights, registered_model: str
) -> tuple[GateDecision, str | None]:
    """Promote the winning arm's version to champion through the gate; (decision, version promoted).

    An arm scored by more than one version won as a mixture of them: no version is promoted on it.
    """
    arm = next((a for a in nights.arms if a.name == readout.winner), None)
    mixed = nights.changed_model(arm.name) if arm is not None else None
    if mixed:
        return GateDecision(False, [f"not one version's result: {mixed}"]), None
    version = _registered_version(arm, registered_model) if arm else None
    verdict = ExperimentVerdict(
        experiment=readout.experiment, decision=readout.decision, sentence=readout.sentence,
        winner=readout.winner, version=version,
        champion_version=tracking.version_by_alias(registered_model, tracking.CHAMPION),
    )  # fmt: skip
    recorded = {}
    if readout.decision == WINS and version is not None:
        details = tracking.version_details(registered_model, version)
        recorded = tracking.run_artifacts(details["run_id"], RECORDED_GATE_ARTIFACTS)
    decision = recorded_gate(verdict, recorded, _promotion_settings(recorded))
    if decision.promote and version is not None:
        tracking.move_aliases(registered_model, version, decision, challenger=False)
        return decision, version
    return decision, None


RECORDED_GATE_ARTIFACTS = ("metrics_comparison.csv", "calibration.json", "config.yaml", "split.json")


def _promotion_settings(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The promotion rules the version was trained under (its run's config.yaml)."""
    config = yaml.safe_load(recorded.get("config.yaml") or "") or {}
    return dict(config.get("promotion") or {})


def _registered_version(arm: ArmPlan, registered_model: str) -> str | None:
    """The arm model's version of ``registered_model``, None when it is something else (another
    registered name such as the points sheet, an exported folder, a run)."""
    prefix = f"models:/{registered_model}/"
    if arm.model_uri.startswith(prefix) and arm.model_uri.removeprefix(prefix).isdigit():
        return arm.model_uri.removeprefix(prefix)
    if arm.model_version and arm.model_uri.startswith(f"models:/{registered_model}@"):
        return arm.model_version
    return None
