"""Thin Hydra entry points: read config, do the I/O, call the pure stage functions.

Each ``run_*`` function takes a composed config and returns a summary dict, so tests
(and notebooks) can call a stage without a subprocess; the ``@hydra.main`` wrappers
add logging set-up and turn a :class:`~leadml.errors.LeadmlError` into one line on
stderr and a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from leadml.adapters.layout import CONFIG_DIR, MANIFEST
from leadml.data import schema as s
from leadml.errors import CONFIG_FILE, LeadmlError, data_config_file

logger = logging.getLogger("leadml")


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


def composed_data(cfg: DictConfig) -> dict[str, Any]:
    """The data config for ingest and features, without ``data.config_file``.

    Where the config file lives is not a setting: left out, it never enters the fingerprint that
    decides whether ingest and features are rebuilt (a config folder moved leaves them current).
    """
    return {key: value for key, value in _container(cfg.data).items() if key != CONFIG_FILE}


# --------------------------------------------------------------------------- data config file
def data_config_source(choice: str, sources: Iterable[Mapping[str, Any]]) -> Path | None:
    """The file Hydra composed for ``data=<choice>``, or None when no source has it.

    ``sources`` are ``hydra.runtime.config_sources`` in search-path order (Hydra's own, this
    repository's conf/, then the ``hydra.searchpath`` entries). As in Hydra, the first source
    holding ``data/<choice>.yaml`` is the one read; a ``pkg://`` source is looked up in its package.
    """
    relative = f"data/{choice}.yaml"
    for source in sources:
        scheme, path = source.get("schema"), str(source.get("path") or "")
        if scheme == "file" and (Path(path) / relative).is_file():
            return (Path(path) / relative).resolve()
        if scheme == "pkg":
            with contextlib.suppress(ModuleNotFoundError, TypeError, ValueError):
                found = resources.files(path.replace("/", ".").rstrip(".")).joinpath(relative)
                if found.is_file():
                    return Path(str(found))
    return None


def _record_data_config_file(cfg: DictConfig) -> None:
    """Set ``data.config_file`` to the file the data config was read from, so that messages name
    the file to edit (:func:`leadml.errors.data_config_file`) even when it was found through
    ``hydra.searchpath``. Only an entry point knows it: Hydra's choices and search path."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or not isinstance(cfg.get("data"), DictConfig):
        return
    runtime = HydraConfig.get().runtime
    choice = runtime.choices.get("data")
    found = data_config_source(str(choice), runtime.config_sources) if choice else None
    if found is not None:
        with open_dict(cfg):
            cfg.data[CONFIG_FILE] = str(found)


# --------------------------------------------------------------------------- generate
def run_generate(cfg: DictConfig) -> dict[str, Any]:
    """Write the synthetic CRM to ``cfg.output_dir`` unless it is already there."""
    from leadml.stages.generate import generate_stage, up_to_date

    out = Path(cfg.output_dir)
    requested = _container(cfg.synthetic)
    if (out / MANIFEST).exists() and not cfg.overwrite:
        existing = up_to_date(out, requested)
        if existing is not None:
            _echo(f"generate: {out} is up to date (seed {requested.get('seed')}); keeping it")
            return existing
        _echo(f"generate: the settings or the generator changed since {out} was written; regenerating")
    manifest = generate_stage(requested, out, progress=_show_progress(cfg))
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
    from leadml.data.ingest import respelt_sentence
    from leadml.stages.ingest import ingest_stage

    summary = ingest_stage(composed_data(cfg), Path(cfg.output_dir))
    for table, report in summary["tables"].items():
        _echo(
            f"ingest {table}: {report['input_rows']:,} rows in, {report['accepted_rows']:,} accepted, "
            f"{report['quarantined_rows']:,} quarantined"
        )
        duplicates = report.get("duplicates") or {}
        if duplicates.get("rows") or duplicates.get("conflicting_rows"):
            _echo(f"ingest {table}: {duplicates['sentence']}")
        if report.get("respelt"):
            _echo(f"ingest {respelt_sentence(table, report['respelt'])}")
    for joined in (summary.get("joins") or {}).values():
        _echo(f"ingest: {joined['sentence']}")
    if summary.get("where"):
        _echo(f"ingest: {summary['where']['sentence']}")
    for table, kept in (summary.get("open_rows") or {}).items():
        _echo(f"ingest {table}: {kept['rows']:,} open leads (contract.open) kept apart for scoring")
    if (summary.get("labels") or {}).get("negative_taken"):
        _echo(f"ingest: {summary['labels']['negative_taken']}")
    _echo(f"ingest: wrote {cfg.output_dir}")
    return summary


# --------------------------------------------------------------------------- features
def run_features(cfg: DictConfig) -> dict[str, Any]:
    """Build the point-in-time training snapshots from data/interim."""
    from leadml.stages.features import features_stage

    summary = features_stage(
        composed_data(cfg),
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
    from leadml.stages.ingest import stale_upstream

    mode = str(cfg.get("prepare", "never"))
    if mode not in PREPARE_CHOICES:
        raise LeadmlError(f"prepare must be one of {', '.join(PREPARE_CHOICES)}, got {mode!r}")
    interim_dir = Path(cfg.paths.interim_dir) / cfg.data.name
    features_dir = Path(cfg.input_dir)
    if mode == "never":
        return
    reason = "prepare=always"
    if mode == "auto":
        reason = stale_upstream(composed_data(cfg), _container(cfg.features), interim_dir, features_dir)
        if reason is None:
            return
    _echo(f"prepare: {reason}; running ingest and features first")
    values = _container(cfg)
    run_ingest(OmegaConf.create({**values, "output_dir": str(interim_dir)}))
    run_features(OmegaConf.create({**values, "input_dir": str(interim_dir), "output_dir": str(features_dir)}))


def check_points_sheet(cfg: DictConfig) -> None:
    """model=points needs rules in the data config: said before ingest and features run, naming
    the file to add them to (training itself finds out only once the features are built)."""
    from leadml.modelling.points import POINTS, no_rules_message, points_block

    if cfg.model.get("name") == POINTS and points_block(_container(cfg.data.get("points"))) is None:
        raise LeadmlError(no_rules_message(cfg.data.get("name"), data_config_file(cfg.data)))


def sentinel_line(checked: int | None, guards: Mapping[str, Any]) -> str:
    """The one line saying the leakage sentinel ran and flagged nothing, with the thresholds applied
    (``guards``, as :func:`leadml.modelling.train.sentinel_report` passes them to the sentinel)."""
    from leadml.modelling.guards import OutcomeLevelSettings

    threshold = float(guards["leakage_threshold"])
    positives, negatives = (float(share) for share in guards["post_outcome_presence"])
    level_share = float(guards.get("outcome_level_share", OutcomeLevelSettings.max_share))
    what = "the features" if checked is None else f"{checked:,} column{'' if checked == 1 else 's'}"
    return (
        f"leakage sentinel: checked {what} (single-feature AUC above {threshold:g} or below "
        f"{1 - threshold:g}; filled for at least {positives:.0%} of positives and at most "
        f"{negatives:.0%} of negatives; at least {level_share:.0%} of rows in outcome-coded levels): "
        "none flagged"
    )


def run_train(cfg: DictConfig) -> dict[str, Any]:
    """Train, calibrate, evaluate, track in MLflow, register and gate; print a summary."""
    from leadml.stages.train import train_stage

    check_points_sheet(cfg)
    prepare_upstream(cfg)
    from leadml.modelling.train import BASELINE_POINTS

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
            f"(add data.points to {data_config_file(cfg.data)} for a traditional-scoring baseline)"
        )
    flagged = summary.get("leakage_flagged") or {}
    if flagged:
        what = "excluded from the model" if summary.get("leakage_excluded") else "trained on anyway"
        _echo(f"leakage sentinel: {len(flagged)} column(s) flagged, {what}:")
        for name, reason in flagged.items():
            _echo(f"  {name}: {reason}")
    else:
        _echo(sentinel_line(summary.get("leakage_checked"), cfg.guards))
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
    from leadml.stages.score import score_stage

    summary = score_stage(_container(cfg), Path(cfg.paths.root))
    tiers = ", ".join(f"{tier} {count:,}" for tier, count in summary["tiers"].items())
    _echo(
        f"score: {summary['leads']:,} open leads as of {summary['as_of']:%Y-%m-%d} with "
        f"{summary['model_uri']} (version {summary['model_version']}): {tiers}"
    )
    for note in summary.get("notes", ()):
        _echo(f"score: {note}")
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
    from leadml.stages.report import report_stage

    files = report_stage(_container(cfg), Path(cfg.paths.root))
    _echo(f"report: {files.leads:,} open leads as of {files.as_of:%Y-%m-%d}")
    _echo(f"report: wrote {files.html}")
    _echo(f"report: wrote {files.csv}")
    return files


# --------------------------------------------------------------------------- forecast
def run_forecast(cfg: DictConfig) -> dict[str, Any]:
    """Funnel forecast: forward (planned leads), reverse (leads for a revenue target), capacity."""
    from leadml.stages.forecast import forecast_stage, summary_lines

    summary = forecast_stage(_container(cfg), Path(cfg.paths.root))
    for line in summary_lines(summary):
        _echo(line)
    return summary


# --------------------------------------------------------------------------- backtest
def run_backtest(cfg: DictConfig) -> dict[str, Any]:
    """Rolling backtest: train before each cutoff, test on the next period, report drift."""
    from leadml.modelling.backtest import table_lines
    from leadml.stages.backtest import backtest_stage

    check_points_sheet(cfg)
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
    from leadml.stages.export import export_stage

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
    from leadml.reporting.model_card import config_differences as differences
    from leadml.reporting.model_card import unshared_keys

    base = [f"paths.root={(logged.get('paths') or {}).get('root', '.')}"]
    composed: dict[tuple[str, ...], dict[str, Any]] = {}

    def compose(overrides: list[str]) -> dict[str, Any]:
        key = tuple(overrides)
        if key not in composed:
            composed[key] = composed_config("train", base + overrides)
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


def composed_config(config_name: str, overrides: list[str]) -> dict[str, Any]:
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
            _record_data_config_file(cfg)
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


def init() -> None:
    """``leadml-init PATH [OUTCOMES]``: a commented flat data config proposed for an export. Plain
    argparse rather than Hydra: its input is a file, not a config (see :mod:`leadml.stages.init`)."""
    from leadml.stages.init import main

    main()
