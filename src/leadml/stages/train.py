"""``leadml-train``'s training stage: split, sentinel, model, gate, registry, model report."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from leadml.adapters import tracking
from leadml.adapters.layout import SNAPSHOTS, read_features, take_apart
from leadml.adapters.sources import masked_urls
from leadml.data import schema as s
from leadml.data.contracts import SOURCE_ROW
from leadml.errors import LeadmlError, TrackingUnavailableError, data_config_file, writing_to
from leadml.modelling.accounts import (
    ACCOUNT_PROBABILITY,
    PROBABILITY,
    AccountEvaluation,
    AccountSettings,
    engaged_threshold,
    evaluate_accounts,
    out_of_sample_rows,
    with_account_key,
)
from leadml.modelling.calibration import RelativeCalibrator
from leadml.modelling.evaluate import binary_metrics
from leadml.modelling.gate import GateDecision, gate_evidence, promotion_gate
from leadml.modelling.guards import sentinel_sentence
from leadml.modelling.models import feature_columns
from leadml.modelling.points import POINTS as POINTS_MODEL
from leadml.modelling.points import no_rules_message, points_block
from leadml.modelling.scorer import LeadScorer, as_model_input
from leadml.modelling.segments import SegmentOutcome, SegmentSettings, check_segment_column, train_segments
from leadml.modelling.selection import MARGIN
from leadml.modelling.split import window_fingerprint
from leadml.modelling.train import (
    BASELINE_LOGREG,
    BASELINE_POINTS,
    ORACLE,
    TrainingResult,
    base_rate_drift,
    split_windows,
    train_on_windows,
)
from leadml.reporting import html, model_report
from leadml.scoring.pyfunc import MODEL_CODE, model_artifacts, signature
from leadml.scoring.requests import feature_example
from leadml.stages.accounts import lead_accounts
from leadml.stages.features import feature_settings
from leadml.stages.ingest import data_kind, ingest_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What one ``leadml-train`` run produced and decided (the CLI prints it; tests read it)."""

    run_id: str
    tracking_uri: str
    registered_model: str
    version: str
    promoted: bool
    reasons: tuple[str, ...]
    champion_before: str | None
    split: Mapping[str, Any]  # rows, positives and dates of each window (split.json)
    comparison: pd.DataFrame  # test-window metrics, one row per model and baseline
    calibration: Mapping[str, Any]  # calibration.json
    has_oracle: bool  # the generator's true probabilities were scored too (synthetic data)
    leakage_flagged: Mapping[str, str]  # column -> why the sentinel flagged it
    leakage_checked: int  # columns the sentinel looked at
    sentinel: str  # the sentinel's line when it flagged nothing, with the thresholds applied
    leakage_excluded: tuple[str, ...]
    base_rate_drift: Mapping[str, Any]
    model_name: str
    selection: str  # the model selection's sentence, "" when none ran
    deployment: Mapping[str, Any]  # deployment.json: refit or not, rows, through
    notes: tuple[str, ...]
    duplicate_rows: int
    report: str
    seconds: float
    # per segment of data.segments: "<name>: <which model scores its leads and why>"; empty without
    segments: tuple[str, ...] = ()
    # the account roll-up learnt on history and its test-window figures, one sentence; None without
    accounts: str | None = None


@dataclass(frozen=True)
class _GateOutcome:
    decision: GateDecision
    champion_version: str | None
    champion_metrics: dict[str, Any] | None


def check_points_sheet(model: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """model=points needs rules in the data config: said before ingest and features run, naming
    the file to add them to (training itself finds out only once the features are built)."""
    if model.get("name") == POINTS_MODEL and points_block(data.get("points")) is None:
        raise LeadmlError(no_rules_message(data.get("name"), data_config_file(data)))


def train_stage(cfg: Mapping[str, Any], root: Path) -> TrainResult:
    """Train, calibrate and evaluate from data/features, track it all in MLflow, register and gate."""

    started = time.perf_counter()
    input_dir = Path(cfg["input_dir"])
    snapshots, metadata, features_manifest, metadata_records = read_features(
        input_dir, cfg["features"].get("exclude", ())
    )
    # the leads' accounts read first: a data.accounts column the table lacks stops the run before training
    lead_account = lead_accounts(cfg["data"], Path(cfg.get("interim_dir") or ""))
    segment_settings = SegmentSettings.from_mapping(cfg["data"].get("segments"))
    if segment_settings is not None:  # a bad data.segments is said before hours of training, not after
        check_segment_column(segment_settings, feature_columns(snapshots))
    truth_path = cfg["data"].get("ground_truth")
    truth = pd.read_parquet(truth_path) if truth_path and Path(truth_path).exists() else None

    mlflow_cfg = cfg["mlflow"]
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracking.configure(uri, mlflow_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))
    model_name = mlflow_cfg["registered_model"]
    with tracking.run(run_name=f"train-{cfg['model']['name']}") as run_id:
        # database passwords in data.tables.*.url or score.sql.url never reach the tracking store
        tracking.log_params(masked_urls({k: v for k, v in cfg.items() if k != "hydra"}))
        tracking.log_text(yaml.safe_dump(masked_urls(dict(cfg)), sort_keys=False), "config.yaml")
        # the windows hold every row training reads: the snapshots are taken apart as they are
        # split, not kept to the end of the run (at a million leads 4.4 GB, beside the windows' 3.3 GB)
        windows = split_windows(snapshots, cfg, take=take_apart)
        del snapshots
        result = train_on_windows(windows, metadata, cfg, truth, progress=bool(cfg.get("progress")))
        segments = train_segments(windows, result, metadata, cfg, progress=bool(cfg.get("progress")))
        del windows
        _set_request_spelling(result.scorer, cfg)
        accounts = _account_evaluation(result, cfg, lead_account)
        source = f"{input_dir / SNAPSHOTS} (features {features_manifest.get('fingerprint', '')[:16]})"
        stage_seconds = upstream_seconds(features_manifest)  # read once: it follows the manifests' links
        drift = _log_evaluation(result, cfg["data"]["name"], source, metadata_records, stage_seconds)
        if accounts is not None:
            tracking.log_table(accounts.metrics.reset_index(), "account_metrics.csv")
            for name, row in accounts.metrics.iterrows():
                tracking.log_metrics(dict(row.items()), prefix=f"test.accounts.{name}.")
        if segments is not None:
            _log_segments(segments)
        charts = _log_charts(result, metadata)
        example = feature_example(result.scorer, result.test.head(5))
        version = tracking.register(_log_pyfunc(result.scorer, example), model_name)
        with _withdrawn_on_error(model_name, version):
            gate = _gate(result, model_name, cfg["promotion"], drift)
            # the report before the alias moves: a report that cannot be written fails the run unpromoted
            report_run = model_report.RunInfo(
                run_id=run_id,
                version=version,
                registered_model=model_name,
                tracking_uri=tracking.masked_uri(uri),
                champion_version=gate.champion_version,
                champion_metrics=gate.champion_metrics,
                stage_seconds=stage_seconds,
                elapsed_seconds=time.perf_counter() - started,
            )
            report_path = Path(cfg["report_dir"]) / f"model-v{version}.html"
            with writing_to(report_path.parent, "report_dir"):
                model_report.write_model_report(
                    report_path, result, gate.decision, report_run, cfg, metadata, charts
                )
            _publish(report_path, model_name, version, gate, started)

    return TrainResult(
        run_id=run_id,
        tracking_uri=tracking.masked_uri(uri),
        registered_model=model_name,
        version=version,
        promoted=gate.decision.promote,
        reasons=tuple(gate.decision.reasons),
        champion_before=gate.champion_version,
        split=result.split,
        comparison=result.comparison,
        calibration=result.calibration,
        has_oracle=ORACLE in result.probabilities,
        leakage_flagged=_flagged_reasons(result.leakage, result.leakage_flagged),
        leakage_checked=len(result.leakage),
        sentinel=sentinel_sentence(len(result.leakage), cfg["guards"]),
        leakage_excluded=tuple(result.leakage_excluded),
        base_rate_drift=drift,
        model_name=result.model_name,
        selection=result.selection.sentence if result.selection is not None else "",
        deployment=result.deployment,
        notes=tuple(result.notes),
        duplicate_rows=result.duplicate_rows,
        report=str(report_path),
        seconds=round(time.perf_counter() - started, 1),
        segments=tuple(f"{d.name}: {d.reason}" for d in segments.decisions) if segments else (),
        accounts=_account_sentence(accounts),
    )


def _account_sentence(accounts: AccountEvaluation | None) -> str | None:
    """What training learnt about accounts, for the CLI: the correction's note and its test figures."""
    if accounts is None or ACCOUNT_PROBABILITY not in accounts.metrics.index:
        return None
    test = accounts.metrics.loc[ACCOUNT_PROBABILITY]
    return (
        f"{accounts.correction.note}; on the test window's {accounts.accounts:,} accounts ROC AUC "
        f"{test['roc_auc']:.4f}, ECE {test['ece']:.4f}"
    )


def _account_evaluation(
    result: TrainingResult, cfg: Mapping[str, Any], leads: pd.DataFrame | None
) -> AccountEvaluation | None:
    """The model's account roll-up: the dependence correction fitted on the validation folds'
    out-of-sample rows, judged on the test window's accounts, kept in the scorer (``leads``: each
    lead's account, :func:`~leadml.stages.accounts.lead_accounts`); None when the
    leads have no account (CRM leads without ``account_id``, a flat table without
    ``data.accounts``) or the procedure has no out-of-sample margins."""
    evaluated, selection, development = result.evaluated, result.selection, result.development
    if evaluated is None or selection is None or development is None:
        return None
    if not isinstance(evaluated.calibrator, RelativeCalibrator):
        return None
    if leads is None or leads[s.ACCOUNT_ID].isna().all():
        return None
    settings = AccountSettings(engaged_probability=engaged_threshold(result.scorer.tiers))
    fit_rows = out_of_sample_rows(development, selection.oos[MARGIN], evaluated.calibrator, leads)
    # the test window as the registered model scores it: routed to segment models where it has them
    routed = getattr(result.segments, "probability", None)
    probability = routed if routed is not None else result.probabilities[result.model_name]
    test_rows = result.test[[s.LEAD_ID, s.LABEL]].assign(**{PROBABILITY: probability})
    if data_kind(cfg["data"]) == "crm":  # an account is its leads open at one date
        test_rows[s.AS_OF] = result.test[s.AS_OF].to_numpy()
    else:  # one row per lead, as_of its own time: an account is its leads in the window
        fit_rows = fit_rows.drop(columns=[s.AS_OF], errors="ignore")
    evaluation = evaluate_accounts(fit_rows, with_account_key(test_rows, leads), settings)
    result.scorer.accounts = evaluation.state()
    logger.info("accounts: %s", evaluation.correction.note)
    return evaluation


def _set_request_spelling(scorer: LeadScorer, cfg: Mapping[str, Any]) -> None:
    """What the served model needs to read a request: the feature settings of a CRM lead, or the
    id column and the category synonyms of a flat row (a request spells it as the file does)."""
    if data_kind(cfg["data"]) == "crm":
        scorer.feature_settings = asdict(feature_settings(cfg["data"], cfg["features"]))
        scorer.data_contract = data_contract(cfg["data"])
        return
    if cfg["data"]["contract"].get("id") not in (None, SOURCE_ROW):
        scorer.request_id = str(cfg["data"]["contract"]["id"])
    settings = ingest_settings(cfg["data"])
    synonyms = {name: settings.synonyms_for(name) for name in scorer.feature_names}
    scorer.request_synonyms = {name: given for name, given in synonyms.items() if given}


def data_contract(data: Mapping[str, Any]) -> dict[str, Any]:
    """What the served model needs to check a request's values as the nightly job checks a CRM
    table's (``LeadScorer.data_contract``): the data config's extra columns, ``limits``, missing
    markers and category synonyms, as plain JSON values."""
    settings = ingest_settings(data)
    recorded = {
        "extra_features": data.get("extra_features") or {},
        "limits": data.get("limits") or {},
        "missing_markers": list(settings.missing_markers),
        "synonyms": {column: dict(given) for column, given in settings.synonyms.items()},
    }
    return json.loads(json.dumps(recorded))


def _log_evaluation(
    result: TrainingResult,
    data_name: str,
    source: str,
    metadata_records: list[dict[str, Any]],
    stage_seconds: Mapping[str, float],
) -> dict[str, Any]:
    """Log the windows, the split, selection, calibration, leakage and test metrics to the run;
    return the base-rate drift between the windows (the gate reads it)."""
    for window, rows in result.windows.items():
        tracking.log_dataset(rows, f"{data_name}-{window}", window_fingerprint(rows), source, window)
    tracking.log_dict(result.split, "split.json")
    drift = base_rate_drift(result.split)
    if "change" in drift:
        tracking.log_metrics(
            {"change": drift["change"], "p_value": drift["p_value"]}, prefix="base_rate_drift."
        )
    tracking.log_dict(
        {"purged_rows": result.purged_rows, "duplicate_rows": result.duplicate_rows}, "split_purged.json"
    )
    if result.selection is not None:
        tracking.log_dict(result.selection.describe(), "selection.json")
        if not result.selection.trials.empty:
            tracking.log_table(result.selection.trials, "selection_trials.csv")
        tracking.log_metrics(
            {str(name): float(row["roc_auc"]) for name, row in result.selection.table.iterrows()},
            prefix="validation.",
        )
        tracking.set_tags({"selection.chosen": result.selection.chosen})
    tracking.log_dict(result.deployment, "deployment.json")
    tracking.log_table(result.leakage, "leakage_report.csv")
    if result.leakage_excluded:
        tracking.set_tags({"leakage.excluded": ", ".join(result.leakage_excluded)})
    tracking.log_table(result.comparison.reset_index(), "metrics_comparison.csv")
    tracking.log_table(result.tiers, "tiers.csv")
    tracking.log_dict(result.calibration, "calibration.json")
    tracking.log_dict(metadata_records, "feature_metadata.json")
    for name, row in result.comparison.iterrows():
        tracking.log_metrics({k: v for k, v in row.items()}, prefix=f"test.{name}.")
    if ORACLE in result.comparison.index:
        gap = result.comparison.loc[ORACLE] - result.comparison.loc[result.model_name]
        tracking.log_metrics({"roc_auc": gap["roc_auc"], "log_loss": -gap["log_loss"]}, prefix="oracle_gap.")
    tracking.log_metrics({f"seconds.{k}": v for k, v in result.seconds.items()})
    tracking.log_metrics(stage_seconds, prefix="seconds.stage.")
    if result.shap_importance is not None:
        tracking.log_table(result.shap_importance, "shap_importance.csv")
    return drift


def _log_segments(outcome: SegmentOutcome) -> None:
    """Each segment's decision and figures (``segments.csv``, ``test.segment.<name>.*``), and the
    routed model's test figures beside the global model's alone (``test.routed.*``)."""
    tracking.log_table(outcome.table(), "segments.csv")
    for decision in outcome.decisions:
        name = re.sub(r"[^\w\-. /]", "_", decision.name)
        figures = {
            "own_model": float(decision.chosen),
            "rows": decision.rows,
            "test_rows": decision.test_rows,
            **{f"global_{k}": decision.global_metrics.get(k, np.nan) for k in ("roc_auc", "log_loss")},
            **{f"segment_{k}": decision.segment_metrics.get(k, np.nan) for k in ("roc_auc", "log_loss")},
        }
        tracking.log_metrics(figures, prefix=f"test.segment.{name}.")
    tracking.log_metrics(outcome.test.get("routed", {}), prefix="test.routed.")
    tracking.set_tags(
        {"segments.own_model": ", ".join(d.name for d in outcome.decisions if d.chosen) or "none"}
    )


def _log_charts(result: TrainingResult, metadata: Mapping[str, Any]) -> dict[str, str]:
    """The model report's charts, drawn once: logged to the run and returned as data URIs."""
    charts = {}
    labels = result.test[s.LABEL].to_numpy()
    for chart, figure in model_report.chart_figures(
        labels, result.probabilities, result.shap_importance, result.shap_sample, metadata
    ).items():
        charts[chart] = html.figure_data_uri(figure, close=False)
        tracking.log_figure(figure, f"plots/{model_report.CHART_ARTIFACTS[chart]}.png")
    return charts


def _gate(
    result: TrainingResult, model_name: str, promotion: Mapping[str, Any], drift: Mapping[str, Any]
) -> _GateOutcome:
    """The promotion decision against the baselines and the champion rescored on the same rows."""
    labels = result.test[s.LABEL].to_numpy()
    champion_version = tracking.version_by_alias(model_name, tracking.CHAMPION)
    champion_metrics = None
    if champion_version is not None:
        champion_metrics = _rescore_champion(
            model_name, champion_version, result.test, result.scorer.feature_names, labels
        )
    metrics = result.comparison
    points = None
    if BASELINE_POINTS in metrics.index and result.model_name != POINTS_MODEL:
        points = metrics.loc[BASELINE_POINTS]
    decision = promotion_gate(
        metrics.loc[result.model_name],
        metrics.loc[BASELINE_LOGREG],
        champion_metrics,
        promotion,
        points=points,
        evidence=gate_evidence(result, bool(drift.get("flagged"))),
    )
    return _GateOutcome(decision, champion_version, champion_metrics)


@contextlib.contextmanager
def _withdrawn_on_error(model_name: str, version: str) -> Iterator[None]:
    """The version just registered is deleted again when the run fails before its end.

    Registering comes first because the version's number names the report and is written in it;
    undoing it on failure covers every later step (gate, report, logging, aliases) in one place.
    """
    try:
        yield
    except BaseException:
        tracking.withdraw_version(model_name, version)
        raise


def _publish(report_path: Path, model_name: str, version: str, gate: _GateOutcome, started: float) -> None:
    """Log the report and the decision, then move the aliases: the last step of a run."""
    decision = gate.decision
    try:
        report_artifact = tracking.log_file(report_path, "report")
        tracking.set_tags({"report": str(report_path.resolve()), "report_artifact": report_artifact})
        tracking.log_dict(
            {
                "promote": decision.promote,
                "reasons": decision.reasons,
                "champion_before": gate.champion_version,
                "version": version,
            },
            "promotion.json",
        )
        tracking.set_tags({"promoted": str(decision.promote), "registered_version": version})
        tracking.log_metrics({"seconds.total": time.perf_counter() - started})
        # the aliases move last: a run that fails on the way (tracking server gone) moves none
        tracking.move_aliases(model_name, version, decision)
    except BaseException:
        report_path.unlink(missing_ok=True)  # no report of a version whose run did not finish
        raise


def _flagged_reasons(leakage: pd.DataFrame, flagged: list[str]) -> dict[str, str]:
    reasons = dict(zip(leakage["feature"], leakage["reason"], strict=False))
    return {name: str(reasons.get(name, "")) for name in flagged}


def upstream_seconds(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Duration of each earlier stage, following the manifests' ``input_manifest`` links.

    With the train stage's own ``seconds.total``, the run records where the time of a
    whole ``make train`` went.
    """
    seconds: dict[str, float] = {}
    seen: set[str] = set()
    while manifest:
        if "stage" in manifest and "seconds" in manifest:
            seconds[str(manifest["stage"])] = float(manifest["seconds"])
        link = manifest.get("input_manifest")
        if not link or link in seen or not Path(link).exists():
            break
        seen.add(link)
        manifest = json.loads(Path(link).read_text())
    return seconds


MIN_CHAMPION_ROWS = 200  # unseen test rows (with both labels) needed to rescore the champion


def _rescore_champion(
    model_name: str, version: str, test: pd.DataFrame, names: list[str], labels: Any
) -> dict[str, Any] | None:
    """The champion's metrics on the candidate's test rows it never saw, None when it cannot score
    them, or ``{"note": ...}`` when it was trained on them (a refit saw every labelled row)."""

    labels = np.asarray(labels)
    try:
        champion = tracking.load_scorer(f"models:/{model_name}/{version}")
        unseen = unseen_rows(test, getattr(champion, "trained", None) or {})
        if unseen is not None:
            test, labels = test[unseen], labels[unseen]
            if len(test) < MIN_CHAMPION_ROWS or len(np.unique(labels)) < 2:
                return {
                    "note": f"champion v{version} was trained on this test window (its refit saw every "
                    "labelled row), so it cannot be compared on it; the candidate is judged on its own"
                }
        predicted = champion.predict(as_model_input(test, names))
    except TrackingUnavailableError:
        raise  # not "the champion cannot score": nobody could tell
    except Exception as error:  # a champion built on other features cannot score these rows
        logger.warning("champion version %s cannot score the test rows: %s", version, error)
        return None
    return {**binary_metrics(labels, predicted["probability"].to_numpy()), "rows": len(test)}


def unseen_rows(test: pd.DataFrame, trained: Mapping[str, Any]) -> np.ndarray | None:
    """Which test rows lie after everything a refitted champion was trained on (None: no record)."""
    column, through = trained.get("position_column"), trained.get("through")
    if not trained.get("refit"):
        return None
    if column is None or through is None or column not in test.columns:
        return np.zeros(len(test), dtype=bool)  # a refit without time saw every row
    position = test[column]
    if column == s.AS_OF:
        return (position > pd.Timestamp(through)).to_numpy()
    return (position > float(through)).to_numpy()


def _log_pyfunc(scorer: Any, example: pd.DataFrame) -> str:
    """Log ``scorer`` as the leadml pyfunc and return its model URI.

    Logged as code (``leadml/scoring/model_code.py``) with the scorer's state as data files
    (``artifacts/leadml_state/``: no pickle), ``artifacts/leadml_model.json`` (features, tiers,
    request fields), the signature of the answer (outputs only: MLflow's check of an input schema
    cost more than the answer itself, :func:`~leadml.scoring.pyfunc.signature`) and ``example``
    (features shape) as the input example.
    """
    with tempfile.TemporaryDirectory() as folder:
        return tracking.log_model(
            MODEL_CODE, "model", example, signature(scorer, example), model_artifacts(scorer, Path(folder))
        )
