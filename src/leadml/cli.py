"""Thin Hydra entry points: compose the config, call the entry point's stage, print its result.

Each ``run_*`` function takes a composed config and returns the stage's result (a small frozen
dataclass of :mod:`leadml.stages`), so tests and notebooks can call a stage without a
subprocess; the ``@hydra.main`` wrappers add logging set-up and turn a
:class:`~leadml.errors.LeadmlError` into one line on stderr and a non-zero exit code.

Each entry point imports its own stage inside its ``run_*`` function, so that
``leadml-ingest`` does not pay for MLflow, LightGBM and SHAP, which only the later stages use.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from threadpoolctl import threadpool_limits

from leadml.adapters.layout import CONFIG_DIR, check_data_name
from leadml.data import schema as s
from leadml.errors import (
    CONFIG_FILE,
    LeadmlError,
    OutputError,
    SettingsError,
    data_config_file,
    is_output_fault,
    os_reason,
    unknown_keys,
)
from leadml.machine import apply_thread_count, apply_wait_policy

if TYPE_CHECKING:  # the stages are imported by their entry point only (see run_*)
    from leadml.stages.backtest import BacktestResult
    from leadml.stages.experiment import ExperimentResult
    from leadml.stages.export import ExportResult
    from leadml.stages.features import FeaturesResult
    from leadml.stages.forecast import ForecastResult
    from leadml.stages.generate import GenerateResult
    from leadml.stages.ingest import IngestSummary
    from leadml.stages.score import ScoreResult
    from leadml.stages.train import TrainResult

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


def _share_the_machine(cfg: DictConfig) -> None:
    """The OpenMP wait policy and thread counts before a stage loads LightGBM or numba, and the
    BLAS threads numpy already loaded (issue 21: training that shares a busy machine)."""
    policy = apply_wait_policy(cfg.get("omp_wait_policy"))
    count = apply_thread_count(_container(cfg.get("threads")))
    threadpool_limits(limits=count, user_api="blas")
    logger.info("threads: %d, OpenMP wait policy %s", count, policy)


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
    if not HydraConfig.initialized() or not isinstance(cfg.get("data"), DictConfig):
        return
    runtime = HydraConfig.get().runtime
    choice = runtime.choices.get("data")
    found = data_config_source(str(choice), runtime.config_sources) if choice else None
    if found is not None:
        with open_dict(cfg):
            cfg.data[CONFIG_FILE] = str(found)


# --------------------------------------------------------------------------- generate
def run_generate(cfg: DictConfig) -> GenerateResult:
    """Write the synthetic CRM to ``cfg.output_dir`` unless it is already there."""
    from leadml.stages.generate import generate_stage

    result = generate_stage(
        _container(cfg.synthetic),
        Path(cfg.output_dir),
        overwrite=bool(cfg.overwrite),
        progress=_show_progress(cfg),
    )
    out = result.output_dir
    if result.written == "kept":
        _echo(f"generate: {out} is up to date (seed {result.seed}); keeping it")
        return result
    if result.written == "replaced":
        _echo(f"generate: the settings or the generator changed since {out} was written; regenerating")
    rows = result.rows
    _echo(
        f"generate: {rows[s.LEADS]:,} leads, {rows[s.ACCOUNTS]:,} accounts, "
        f"{rows[s.ACTIVITIES]:,} activities, "
        f"{rows[s.GROUND_TRUTH]:,} ground-truth rows -> {out} ({result.seconds} s)"
    )
    return result


# --------------------------------------------------------------------------- ingest
def run_ingest(cfg: DictConfig) -> IngestSummary:
    """Read every configured source, check its contract and write data/interim."""
    from leadml.stages.ingest import ingest_stage

    result = ingest_stage(composed_data(cfg), Path(cfg.output_dir))
    for table, report in result.tables.items():
        _echo(
            f"ingest {table}: {report['input_rows']:,} rows in, {report['accepted_rows']:,} accepted, "
            f"{report['quarantined_rows']:,} quarantined"
        )
        duplicates = report.get("duplicates") or {}
        if duplicates.get("rows") or duplicates.get("conflicting_rows"):
            _echo(f"ingest {table}: {duplicates['sentence']}")
        if table in result.respelt:
            _echo(f"ingest {result.respelt[table]}")
    for joined in result.joins.values():
        _echo(f"ingest: {joined['sentence']}")
    if result.where:
        _echo(f"ingest: {result.where['sentence']}")
    for table, kept in result.open_rows.items():
        _echo(f"ingest {table}: {kept['rows']:,} open leads (contract.open) kept apart for scoring")
    if result.labels.get("negative_taken"):
        _echo(f"ingest: {result.labels['negative_taken']}")
    _echo(f"ingest: wrote {cfg.output_dir}")
    return result


# --------------------------------------------------------------------------- features
def run_features(cfg: DictConfig) -> FeaturesResult:
    """Build the point-in-time training snapshots from data/interim."""
    from leadml.stages.features import features_stage

    result = features_stage(
        composed_data(cfg),
        _container(cfg.features),
        Path(cfg.input_dir),
        Path(cfg.output_dir),
        progress=_show_progress(cfg),
    )
    when = f"on {result.dates} as-of dates" if result.dates else "(no time column: one row per lead)"
    _echo(
        f"features: {result.snapshots:,} snapshots of {result.leads:,} leads {when}, "
        f"{result.positives:,} positives ({result.positive_rate:.2%}), {result.features} features "
        f"-> {cfg.output_dir} ({result.seconds} s)"
    )
    return result


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


def run_train(cfg: DictConfig) -> TrainResult:
    """Train, calibrate, evaluate, track in MLflow, register and gate; print a summary."""
    from leadml.stages.train import BASELINE_POINTS, check_points_sheet, train_stage

    check_points_sheet(_container(cfg.model), _container(cfg.data))
    prepare_upstream(cfg)
    result = train_stage(_container(cfg), Path(cfg.paths.root))
    split = result.split
    _echo(
        "train: "
        + ", ".join(
            f"{w} {split[w]['rows']:,} snapshots ({split[w]['positives']:,} won)"
            for w in ("train", "calibration", "test")
        )
    )
    for note in result.notes:
        _echo(f"train: {note}")
    if result.base_rate_drift.get("sentence"):
        _echo(f"train: {result.base_rate_drift['sentence']}")
    if result.selection:
        _echo(f"selection: {result.selection}")
    table = result.comparison[
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
    _echo_sentinel(result)
    calibration = result.calibration
    _echo(
        f"calibration: {calibration.get('method')} ({calibration.get('chosen_by', 'configured')}), "
        f"{calibration.get('verdict', '')}"
    )
    if result.has_oracle:
        model, oracle = table.loc[result.model_name, "roc_auc"], table.loc["oracle", "roc_auc"]
        _echo(
            f"oracle: the generator's true probabilities reach ROC AUC {oracle:.4f}; "
            f"the model is {oracle - model:.4f} below"
        )
    deployment = result.deployment
    if deployment.get("refit"):
        through = f" through {deployment['through']}" if deployment.get("through") is not None else ""
        _echo(
            f"deployed: the same procedure refitted on every labelled row ({deployment['rows']:,} rows, "
            f"{deployment['positives']:,} won{through}), calibrated on the latest out-of-sample predictions"
        )
    for line in result.segments:
        _echo(f"segment {line}")
    if result.accounts:
        _echo(f"accounts: {result.accounts}")
    verdict = "promoted to champion" if result.promoted else "not promoted"
    _echo(
        f"gate: version {result.version} of {result.registered_model} {verdict}: " + "; ".join(result.reasons)
    )
    _echo(f"train: report {result.report}")
    _echo(f"run {result.run_id} in {result.tracking_uri} ({result.seconds} s)")
    _echo("look at it with: make mlflow-ui")
    return result


def _echo_sentinel(result: TrainResult) -> None:
    if not result.leakage_flagged:
        _echo(result.sentinel)
        return
    what = "excluded from the model" if result.leakage_excluded else "trained on anyway"
    _echo(f"leakage sentinel: {len(result.leakage_flagged)} column(s) flagged, {what}:")
    for name, reason in result.leakage_flagged.items():
        _echo(f"  {name}: {reason}")


# --------------------------------------------------------------------------- score
def _estimate_line(estimated: Mapping[str, Any]) -> str:
    """The run's performance estimate before outcomes, in one line."""
    low, high = estimated["roc_auc_interval"]
    line = f"estimated before outcomes: ROC AUC {estimated['roc_auc']:.3f}"
    if low is not None and high is not None:
        line += f" (95% of outcomes: {low:.3f} to {high:.3f})"
    if estimated.get("top_tier_precision") is not None:
        line += f", tier {estimated['top_tier']} precision {estimated['top_tier_precision']:.1%}"
    if estimated.get("test_roc_auc") is not None:
        line += f"; test window ROC AUC {estimated['test_roc_auc']:.3f}"
    return line


def run_score(cfg: DictConfig) -> ScoreResult:
    """Score the open leads with the production model (the nightly job)."""
    from leadml.stages.score import score_stage

    result = score_stage(_container(cfg), Path(cfg.paths.root))
    tiers = ", ".join(f"{tier} {count:,}" for tier, count in result.tiers.items())
    _echo(
        f"score: {result.leads:,} open leads as of {result.as_of:%Y-%m-%d} with "
        f"{result.model_uri} (version {result.model_version}): {tiers}"
    )
    if result.experiment:
        arms = ", ".join(
            f"{arm['name']} {arm['leads']:,} (version {arm['model_version']}"
            f"{'' if arm['show_score'] else ', score hidden'})"
            for arm in result.experiment["arms"]
        )
        _echo(f"score: experiment {result.experiment['name']}: {arms}")
    for note in result.notes:
        _echo(f"score: {note}")
    if result.ingestion_reused:
        when = result.ingestion_reused[:19].replace("T", " ")
        _echo(f"score: sources unchanged since their ingestion at {when} UTC: its validated copy reused")
    if result.unseen:
        _echo(f"score: unseen categories scored as unknown: {result.unseen}")
    for line in result.warnings:
        _echo(f"score: drift warning: {line}")
    if result.estimated and result.estimated.get("roc_auc") is not None:
        _echo(f"score: {_estimate_line(result.estimated)}")
    sink = f"; {result.sql_rows:,} rows upserted to {cfg.score.sql.table}" if result.sql_rows else ""
    _echo(f"score: wrote {result.output}{sink} ({result.seconds} s)")
    if result.accounts:
        _echo(f"score: {_accounts_line(result.accounts, cfg.score.sql.account_table)}")
    if result.run_id:
        _echo(f"score: run {result.run_id} in {result.tracking_uri}")
    else:
        _echo("score: not tracked in MLflow (score.track); the run's figures are in _scoring_run.json")
    return result


def _accounts_line(accounts: Mapping[str, Any], table: str | None) -> str:
    """ "1,234 accounts (210 with several open leads), 87.3 expected to produce a win -> <folder>"."""
    sink = f"; {accounts['sql_rows']:,} rows upserted to {table}" if accounts.get("sql_rows") else ""
    return (
        f"{accounts['accounts']:,} accounts ({accounts['accounts_with_several_leads']:,} with several "
        f"open leads), {accounts['expected_accounts_won']:,.1f} expected to produce a win -> "
        f"{accounts['output']}{sink}"
    )


def run_report(cfg: DictConfig) -> Any:
    """Write the leadership report (HTML) and the ranked CSV of a scored run."""
    from leadml.stages.report import report_stage

    files = report_stage(_container(cfg), Path(cfg.paths.root))
    _echo(f"report: {files.leads:,} open leads as of {files.as_of:%Y-%m-%d}")
    _echo(f"report: wrote {files.html}")
    _echo(f"report: wrote {files.csv}")
    if files.accounts_csv:
        _echo(f"report: wrote {files.accounts_csv}")
    if files.kpi_run_id:
        _echo(f"report: KPIs logged to the scoring run {files.kpi_run_id}")
    return files


# --------------------------------------------------------------------------- forecast
def run_forecast(cfg: DictConfig) -> ForecastResult:
    """Funnel forecast: forward (planned leads), reverse (leads for a revenue target), capacity."""
    from leadml.stages.forecast import forecast_stage, summary_lines

    result = forecast_stage(_container(cfg), Path(cfg.paths.root))
    for line in summary_lines(result):
        _echo(line)
    return result


# --------------------------------------------------------------------------- backtest
def run_backtest(cfg: DictConfig) -> BacktestResult:
    """Rolling backtest: train before each cutoff, test on the next period, report drift."""
    from leadml.stages.backtest import backtest_stage
    from leadml.stages.train import check_points_sheet

    check_points_sheet(_container(cfg.model), _container(cfg.data))
    prepare_upstream(cfg)
    result = backtest_stage(_container(cfg), Path(cfg.paths.root))
    _echo(
        f"backtest: {len(result.table)} periods of {result.data} ({result.split_kind} split), "
        f"model {result.model} trained before each cutoff"
    )
    for line in result.table_lines:
        _echo(f"  {line}")
    for sentence in result.summary:
        _echo(f"backtest: {sentence}")
    for path in result.files.values():
        _echo(f"backtest: wrote {path}")
    _echo(f"backtest: run {result.run_id} in {result.tracking_uri} ({result.seconds} s)")
    return result


# --------------------------------------------------------------------------- export
def run_export(cfg: DictConfig) -> ExportResult:
    """Copy the champion (or export.version / export.alias) to models/<name>-v<version>/."""
    from leadml.stages.configs import recreate_overrides
    from leadml.stages.export import export_stage

    result = export_stage(_container(cfg), Path(cfg.paths.root), recreate=recreate_overrides)
    aliases = ", ".join(f"@{alias}" for alias in result.aliases) or "no alias"
    _echo(
        f"export: version {result.version} of {result.registered_model} ({aliases}), "
        f"run {result.run_id} from {result.tracking_uri}"
    )
    _echo(f"export: {len(result.files)} files with SHA256SUMS; model card {result.model_card}")
    _echo(f"export: wrote {result.path} ({result.seconds} s)")
    return result


# --------------------------------------------------------------------------- experiment
def run_experiment(cfg: DictConfig) -> ExperimentResult:
    """The readout of an experiment of scoring: arms, outcomes, the always-valid test, a decision."""
    from leadml.stages.experiment import experiment_stage

    result = experiment_stage(_container(cfg), Path(cfg.paths.root))
    _echo_readout(result)
    return result


def run_promote(cfg: DictConfig) -> ExperimentResult:
    """The readout of an experiment, then its winning arm's model promoted to champion through the gate."""
    from leadml.stages.experiment import experiment_stage

    with open_dict(cfg):
        cfg.readout.promote = True
    result = experiment_stage(_container(cfg), Path(cfg.paths.root))
    _echo_readout(result)
    decision = result.promotion
    if decision is not None:
        if result.promoted_version is not None:
            _echo(
                f"promote: version {result.promoted_version} of {cfg.mlflow.registered_model} is the champion"
            )
        else:
            _echo(f"promote: not promoted: {'; '.join(decision.reasons)}")
        for reason in decision.reasons if result.promoted_version is not None else ():
            _echo(f"  {reason}")
    return result


def _echo_readout(result: ExperimentResult) -> None:
    readout = result.readout
    _echo(f"experiment {readout.experiment} as of {readout.as_of:%Y-%m-%d}: {readout.decision}")
    for arm in readout.arms.itertuples(index=False):
        _echo(
            f"  {arm.arm}: {arm.leads:,} leads, {arm.resolved:,} with an outcome, {arm.converted:,} won "
            f"({_percent(arm.conversion)}); tier {readout.top_tier}: {arm.top_resolved:,} with an outcome, "
            f"{_percent(arm.top_conversion)} won"
        )
    _echo(f"experiment: {readout.sentence}")
    _echo(f"experiment: wrote {result.html}")


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{value:.1%}"


# --------------------------------------------------------------------------- wrappers
def check_known_keys(cfg: DictConfig, config_name: str) -> None:
    """Refuse a key of the command's own section (``score``, ``report``...) that its config file
    ``conf/<config_name>.yaml`` does not have: ``+score.foo=1`` is a typo, never ignored."""
    shipped = OmegaConf.load(Path(CONFIG_DIR) / f"{config_name}.yaml")
    defaults, section = shipped.get(config_name), cfg.get(config_name)
    if not isinstance(defaults, DictConfig) or not isinstance(section, DictConfig):
        return
    unknown = unknown_keys(
        OmegaConf.to_container(section, resolve=False), OmegaConf.to_container(defaults), config_name
    )
    if unknown:
        raise SettingsError(
            f"unknown key {', '.join(unknown)}: not a setting of conf/{config_name}.yaml "
            f"(known {config_name} keys: {', '.join(defaults)})"
        )


def _entry_point(
    config_name: str, run: Callable[[DictConfig], Any], command: str | None = None
) -> Callable[[], None]:
    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)
    def main(cfg: DictConfig) -> None:
        _configure_logging(cfg)
        try:
            check_known_keys(cfg, config_name)
            if isinstance(cfg.get("data"), DictConfig) and "name" in cfg.data:
                check_data_name(cfg.data.name)
            _share_the_machine(cfg)
            _record_data_config_file(cfg)
            try:
                run(cfg)
            except OSError as error:
                if not is_output_fault(error):
                    raise
                raise _unnamed_output_fault(error) from None
        except LeadmlError as error:
            print(f"leadml-{command or config_name}: error: {error}", file=sys.stderr, flush=True)
            sys.exit(error.exit_code)

    main.__doc__ = run.__doc__
    return main


def _unnamed_output_fault(error: OSError) -> OutputError:
    """The last resort for a full disk or a read-only folder a stage did not name itself
    (:func:`leadml.errors.writing_to` is the first): the file the system names, if any."""
    where = f"{error.filename}: " if error.filename else ""
    return OutputError(f"cannot write: {where}{os_reason(error)}")


generate = _entry_point("generate", run_generate)
ingest = _entry_point("ingest", run_ingest)
features = _entry_point("features", run_features)
train = _entry_point("train", run_train)
score = _entry_point("score", run_score)
report = _entry_point("report", run_report)
forecast = _entry_point("forecast", run_forecast)
backtest = _entry_point("backtest", run_backtest)
export = _entry_point("export", run_export)
experiment = _entry_point("experiment", run_experiment)
promote = _entry_point("experiment", run_promote, command="promote")


def init() -> None:
    """``leadml-init PATH [OUTCOMES]``: a commented flat data config proposed for an export. Plain
    argparse rather than Hydra: its input is a file, not a config (see :mod:`leadml.stages.init`)."""
    from leadml.stages.init import main

    main()
