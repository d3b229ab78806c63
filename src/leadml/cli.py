"""Thin Hydra entry points: read config, do the I/O, call the pure stage functions.

Each ``run_*`` function takes a composed config and returns a summary dict, so tests
(and notebooks) can call a stage without a subprocess; the ``@hydra.main`` wrappers
add logging set-up and turn a :class:`~leadml.errors.LeadmlError` into one line on
stderr and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from leadml import schema as s
from leadml.errors import LeadmlError

logger = logging.getLogger("leadml")
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
MANIFEST = "manifest.json"


def _container(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _echo(line: str) -> None:
    print(line, flush=True)


def _configure_logging(cfg: DictConfig) -> None:
    level = str(cfg.get("log_level", "WARNING")).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("alembic", "urllib3", "numba"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _show_progress(cfg: DictConfig) -> bool:
    return bool(cfg.get("progress", True)) and sys.stderr.isatty()


# --------------------------------------------------------------------------- generate
def run_generate(cfg: DictConfig) -> dict[str, Any]:
    """Write the synthetic CRM to ``cfg.output_dir`` unless it is already there."""
    from leadml.sources import write_json_atomic, write_parquet_atomic
    from leadml.synthetic import GENERATOR_VERSION, generate_crm, settings_from_mapping

    out = Path(cfg.output_dir)
    requested = _container(cfg.synthetic)
    settings = settings_from_mapping(requested)
    if (out / MANIFEST).exists() and not cfg.overwrite:
        existing = json.loads((out / MANIFEST).read_text())
        if existing.get("settings") == requested and existing.get("generator_version") == GENERATOR_VERSION:
            _echo(f"generate: {out} is up to date (seed {requested.get('seed')}); keeping it")
            return existing
        _echo(f"generate: the settings or the generator changed since {out} was written; regenerating")
    started = time.perf_counter()
    frames = generate_crm(settings, progress=_show_progress(cfg))
    for name, frame in frames.items():
        write_parquet_atomic(frame, out / f"{name}.parquet")
    manifest = {
        "stage": "generate",
        "settings": requested,
        "generator_version": GENERATOR_VERSION,
        "rows": {name: len(frame) for name, frame in frames.items()},
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    write_json_atomic(manifest, out / MANIFEST)
    rows = manifest["rows"]
    _echo(
        f"generate: {rows[s.LEADS]:,} leads, {rows[s.ACCOUNTS]:,} accounts, "
        f"{rows[s.ACTIVITIES]:,} activities, "
        f"{rows[s.GROUND_TRUTH]:,} ground-truth rows -> {out} ({manifest['seconds']} s)"
    )
    return manifest


# --------------------------------------------------------------------------- ingest
def run_ingest(cfg: DictConfig) -> dict[str, Any]:
    """Read every configured source, check its contract and write data/interim."""
    from leadml.stages import ingest_stage

    summary = ingest_stage(_container(cfg.data), Path(cfg.output_dir))
    for table, report in summary["tables"].items():
        _echo(
            f"ingest {table}: {report['input_rows']:,} rows in, {report['accepted_rows']:,} accepted, "
            f"{report['quarantined_rows']:,} quarantined"
        )
        duplicates = report.get("duplicates") or {}
        if duplicates.get("rows") or duplicates.get("conflicting_rows"):
            _echo(f"ingest {table}: {duplicates['sentence']}")
    _echo(f"ingest: wrote {cfg.output_dir}")
    return summary


# --------------------------------------------------------------------------- features
def run_features(cfg: DictConfig) -> dict[str, Any]:
    """Build the point-in-time training snapshots from data/interim."""
    from leadml.stages import features_stage

    summary = features_stage(
        _container(cfg.data),
        _container(cfg.features),
        Path(cfg.input_dir),
        Path(cfg.output_dir),
        progress=_show_progress(cfg),
    )
    when = f"on {summary['dates']} as-of dates" if summary["dates"] else "(no time column: one row per lead)"
    _echo(
        f"features: {summary['snapshots']:,} snapshots of {summary['leads']:,} leads {when}, "
        f"{summary['positives']:,} positives ({summary['positive_rate']:.2%}), "
        f"{summary['features']} features "
        f"-> {cfg.output_dir} ({summary['seconds']} s)"
    )
    return summary


# --------------------------------------------------------------------------- train
PREPARE_CHOICES = ("auto", "always", "never")


def prepare_upstream(cfg: DictConfig) -> None:
    """Ingest and build features first when ``cfg.prepare`` asks for it (see conf/train.yaml).

    ``auto`` rebuilds when the features are missing, were built from another data or features
    config, or a source file changed since it was ingested: ``leadml-train data=bank`` then
    runs end to end from the raw files, and a second run reuses them.
    """
    from leadml.stages import stale_upstream

    mode = str(cfg.get("prepare", "never"))
    if mode not in PREPARE_CHOICES:
        raise LeadmlError(f"prepare must be one of {', '.join(PREPARE_CHOICES)}, got {mode!r}")
    interim_dir = Path(cfg.paths.interim_dir) / cfg.data.name
    features_dir = Path(cfg.input_dir)
    if mode == "never":
        return
    reason = "prepare=always"
    if mode == "auto":
        reason = stale_upstream(_container(cfg.data), _container(cfg.features), interim_dir, features_dir)
        if reason is None:
            return
    _echo(f"prepare: {reason}; running ingest and features first")
    values = _container(cfg)
    run_ingest(OmegaConf.create({**values, "output_dir": str(interim_dir)}))
    run_features(OmegaConf.create({**values, "input_dir": str(interim_dir), "output_dir": str(features_dir)}))


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Train, calibrate, evaluate, track in MLflow, register and gate; print a summary."""
    from leadml.stages import train_stage

    prepare_upstream(cfg)
    from leadml.train import BASELINE_POINTS

    summary = train_stage(_container(cfg), Path(cfg.paths.root))
    split = summary["split"]
    _echo(
        "train: "
        + ", ".join(
            f"{w} {split[w]['rows']:,} snapshots ({split[w]['positives']:,} won)"
            for w in ("train", "calibration", "test")
        )
    )
    for note in summary.get("notes") or ():
        _echo(f"train: {note}")
    drift = summary.get("base_rate_drift") or {}
    if drift.get("sentence"):
        _echo(f"train: {drift['sentence']}")
    if summary.get("selection"):
        _echo(f"selection: {summary['selection']}")
    table = summary["comparison"][
        ["roc_auc", "roc_auc_low", "roc_auc_high", "pr_auc", "log_loss", "brier", "ece"]
    ]
    _echo("test window (95% intervals by lead bootstrap):")
    for name, row in table.iterrows():
        _echo(
            f"  {name:<24} ROC AUC {row['roc_auc']:.4f} [{row['roc_auc_low']:.4f}, {row['roc_auc_high']:.4f}]"
            f"  PR AUC {row['pr_auc']:.4f}  log loss {row['log_loss']:.4f}  Brier {row['brier']:.4f}"
            f"  ECE {row['ece']:.4f}"
        )
    if BASELINE_POINTS not in table.index:
        _echo(
            f"  {BASELINE_POINTS:<24} none: no points rules in the data config "
            f"(add data.points to conf/data/{cfg.data.name}.yaml for a traditional-scoring baseline)"
        )
    flagged = summary.get("leakage_flagged") or {}
    if flagged:
        what = "excluded from the model" if summary.get("leakage_excluded") else "trained on anyway"
        _echo(f"leakage sentinel: {len(flagged)} column(s) flagged, {what}:")
        for name, reason in flagged.items():
            _echo(f"  {name}: {reason}")
    calibration = summary["calibration"]
    _echo(
        f"calibration: {calibration.get('method')} ({calibration.get('chosen_by', 'configured')}), "
        f"{calibration.get('verdict', '')}"
    )
    if summary["has_oracle"]:
        model, oracle = table.loc[summary["model_name"], "roc_auc"], table.loc["oracle", "roc_auc"]
        _echo(
            f"oracle: the generator's true probabilities reach ROC AUC {oracle:.4f}; "
            f"the model is {oracle - model:.4f} below"
        )
    deployment = summary.get("deployment") or {}
    if deployment.get("refit"):
        through = f" through {deployment['through']}" if deployment.get("through") is not None else ""
        _echo(
            f"deployed: the same procedure refitted on every labelled row ({deployment['rows']:,} rows, "
            f"{deployment['positives']:,} won{through}), calibrated on the latest out-of-sample predictions"
        )
    verdict = "promoted to champion" if summary["promoted"] else "not promoted"
    _echo(
        f"gate: version {summary['version']} of {summary['registered_model']} {verdict}: "
        + "; ".join(summary["reasons"])
    )
    _echo(f"train: report {summary['report']}")
    _echo(f"run {summary['run_id']} in {summary['tracking_uri']} ({summary['seconds']} s)")
    _echo("look at it with: make mlflow-ui")
    return summary


# --------------------------------------------------------------------------- score
def run_score(cfg: DictConfig) -> dict[str, Any]:
    """Score the open leads with the production model (the nightly job)."""
    from leadml.stages import score_stage

    summary = score_stage(_container(cfg), Path(cfg.paths.root))
    tiers = ", ".join(f"{tier} {count:,}" for tier, count in summary["tiers"].items())
    _echo(
        f"score: {summary['leads']:,} open leads as of {summary['as_of']:%Y-%m-%d} with "
        f"{summary['model_uri']} (version {summary['model_version']}): {tiers}"
    )
    if summary["unseen"]:
        _echo(f"score: unseen categories scored as unknown: {summary['unseen']}")
    for line in summary["warnings"]:
        _echo(f"score: drift warning: {line}")
    sink = f"; {summary['sql_rows']:,} rows upserted to {cfg.score.sql.table}" if summary["sql_rows"] else ""
    _echo(f"score: wrote {summary['output']}{sink} ({summary['seconds']} s)")
    if summary["run_id"]:
        _echo(f"score: run {summary['run_id']} in {summary['tracking_uri']}")
    else:
        _echo("score: not tracked in MLflow (score.track); the run's figures are in _scoring_run.json")
    return summary


def run_report(cfg: DictConfig) -> Any:
    """Write the leadership report (HTML) and the ranked CSV of a scored run."""
    from leadml.report import report_stage

    files = report_stage(_container(cfg), Path(cfg.paths.root))
    _echo(f"report: {files.leads:,} open leads as of {files.as_of:%Y-%m-%d}")
    _echo(f"report: wrote {files.html}")
    _echo(f"report: wrote {files.csv}")
    return files


# --------------------------------------------------------------------------- forecast
def run_forecast(cfg: DictConfig) -> dict[str, Any]:
    """Funnel forecast: forward (planned leads), reverse (leads for a revenue target), capacity."""
    from leadml.forecast import ALL, TOTAL, forecast_stage

    summary = forecast_stage(_container(cfg), Path(cfg.paths.root))
    level = f"{summary['level']:.0%}"
    history = summary["history"].loc[ALL]
    _echo(
        f"forecast: history as of {summary['as_of']:%Y-%m-%d}: {int(history['leads']):,} mature leads, "
        f"{int(history['won']):,} won within {summary['horizon_days']} days "
        f"({history['conversion_rate']:.1%}); {int(history['immature_leads']):,} younger leads "
        "left out of the rates"
    )
    forward = summary["forward"].loc[TOTAL]
    _echo(
        f"forecast: {int(forward['planned_leads']):,} planned leads ({summary['planned_from']}): "
        f"{forward['expected_conversions']:,.1f} conversions [{int(forward['conversions_low']):,}, "
        f"{int(forward['conversions_high']):,}], revenue {forward['expected_revenue']:,.0f} "
        f"[{forward['revenue_low']:,.0f}, {forward['revenue_high']:,.0f}] ({level} intervals)"
    )
    reverse = summary["reverse"].loc[TOTAL]
    _echo(
        f"forecast: revenue {summary['revenue_target']:,.0f} ({summary['revenue_target_from']}) needs "
        f"{int(reverse['mix_expected']):,} leads of the mix in expectation, "
        f"{int(reverse['mix_at_confidence']):,} to reach it with {summary['confidence']:.0%} confidence"
    )
    if summary["capacity"] is None:
        _echo("forecast: no scored run, so no capacity plan (run leadml-score first)")
    else:
        capacity = summary["capacity"].loc[TOTAL]
        _echo(
            f"forecast: {summary['reps']} reps work {int(capacity['worked_leads']):,} of "
            f"{int(capacity['open_leads']):,} open leads (probability >= {summary['threshold']:.3f}): "
            f"{capacity['expected_wins']:,.1f} wins expected [{int(capacity['wins_low']):,}, "
            f"{int(capacity['wins_high']):,}]"
        )
    folder = Path(summary["files"]["json"]).parent
    names = ", ".join(Path(path).name for path in summary["files"].values())
    _echo(f"forecast: wrote {names} to {folder} ({summary['seconds']} s)")
    return summary


# --------------------------------------------------------------------------- backtest
def run_backtest(cfg: DictConfig) -> dict[str, Any]:
    """Rolling backtest: train before each cutoff, test on the next period, report drift."""
    from leadml.backtest import backtest_stage, table_lines

    prepare_upstream(cfg)
    summary = backtest_stage(_container(cfg), Path(cfg.paths.root))
    _echo(
        f"backtest: {len(summary['periods'])} periods of {summary['data']} ({summary['split_kind']} split), "
        f"model {summary['model']} trained before each cutoff"
    )
    for line in table_lines(summary["table"]):
        _echo(f"  {line}")
    for sentence in summary["summary"]:
        _echo(f"backtest: {sentence}")
    for path in summary["files"].values():
        _echo(f"backtest: wrote {path}")
    _echo(f"backtest: run {summary['run_id']} in {summary['tracking_uri']} ({summary['seconds']} s)")
    return summary


# --------------------------------------------------------------------------- export
# config groups whose choice a training run may have made, data first (it may choose others)
RECREATE_GROUPS = ("data", "model", "split", "calibration", "tiers", "features", "synthetic")


def run_export(cfg: DictConfig) -> dict[str, Any]:
    """Copy the champion (or export.version / export.alias) to models/<name>-v<version>/."""
    from leadml.export import export_stage

    summary = export_stage(_container(cfg), Path(cfg.paths.root), recreate=recreate_overrides)
    aliases = ", ".join(f"@{alias}" for alias in summary["aliases"]) or "no alias"
    _echo(
        f"export: version {summary['version']} of {summary['registered_model']} ({aliases}), "
        f"run {summary['run_id']} from {summary['tracking_uri']}"
    )
    _echo(f"export: {len(summary['files'])} files with SHA256SUMS; model card {summary['model_card']}")
    _echo(f"export: wrote {summary['path']} ({summary['seconds']} s)")
    return summary


def recreate_overrides(logged: dict[str, Any]) -> list[str]:
    """The ``leadml-train`` overrides that compose ``logged`` (a run's config.yaml) again.

    Group choices are found by composing each option and keeping the one that leaves the
    fewest differences; the remaining differences become ``key=value`` overrides.
    """
    from leadml.model_card import config_differences as differences
    from leadml.model_card import unshared_keys

    base = [f"paths.root={(logged.get('paths') or {}).get('root', '.')}"]
    composed: dict[tuple[str, ...], dict[str, Any]] = {}

    def compose(overrides: list[str]) -> dict[str, Any]:
        key = tuple(overrides)
        if key not in composed:
            composed[key] = _composed("train", base + overrides)
        return composed[key]

    def distance(overrides: list[str]) -> int:  # differing values plus keys on one side only
        candidate = compose(overrides)
        return len(differences(logged, candidate)) + len(unshared_keys(logged, candidate))

    chosen: list[str] = []
    with _hydra_context():
        for group in RECREATE_GROUPS:
            options = sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))
            if len(options) < 2 or logged.get(group) == compose(chosen).get(group):
                continue  # nothing to choose, or the current choice gives this section already
            best = min(options, key=lambda option: distance([*chosen, f"{group}={option}"]))
            if distance([*chosen, f"{group}={best}"]) < distance(chosen):
                chosen.append(f"{group}={best}")
        overrides = differences(logged, compose(chosen), chosen)
        left = differences(logged, compose(overrides))
    if left:  # a value the override grammar cannot carry: the card says the command is not enough
        logger.warning("the re-create command misses %s", left)
        overrides.append("# and as in the run's config.yaml: " + " ".join(left))
    return overrides


@contextlib.contextmanager
def _hydra_context() -> Iterator[None]:
    """Hydra's config search as the entry points set it up (already there inside one of them)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            yield


def _composed(config_name: str, overrides: list[str]) -> dict[str, Any]:
    """A config composed as the entry points do (inside one of them or from a test or notebook)."""
    from hydra import compose

    with _hydra_context():
        values = _container(compose(config_name, overrides))
    values.pop("hydra", None)
    return values


# --------------------------------------------------------------------------- wrappers
def _entry_point(config_name: str, run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def main(cfg: DictConfig) -> None:
        _configure_logging(cfg)
        try:
            run(cfg)
        except LeadmlError as error:
            print(f"leadml-{config_name}: error: {error}", file=sys.stderr, flush=True)
            sys.exit(error.exit_code)

    main.__doc__ = run.__doc__
    return main


generate = _entry_point("generate", run_generate)
ingest = _entry_point("ingest", run_ingest)
features = _entry_point("features", run_features)
train = _entry_point("train", run_train)
score = _entry_point("score", run_score)
report = _entry_point("report", run_report)
forecast = _entry_point("forecast", run_forecast)
backtest = _entry_point("backtest", run_backtest)
export = _entry_point("export", run_export)
