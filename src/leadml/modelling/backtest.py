"""Rolling-origin backtest: train before each cutoff, test on the next period, report the drift.

The latest ``test_share`` of the rows (by ``as_of`` for snapshots over time, whole dates
kept together, or by ``order_key`` for flat tables) is cut into ``folds`` consecutive
periods of about equal size. For each period, :func:`leadml.modelling.train.train_and_evaluate` runs
on the same snapshots with the test window pinned to the period (``split.test_start`` /
``split.test_end``), so everything before the period is the history, and the whole training
procedure runs on it (model selection on time-ordered validation folds, the refit on every
history row, the calibrator on the folds' out-of-sample margins), with the guards, the leakage
sentinel and ``features.exclude`` exactly as in training. A second calibrator is then fitted on
the latest ``recent_fraction`` of those out-of-sample margins and scored on the same test rows.

Per period: the metrics of the model and its baselines, the base rate of the period and of
its history with a two-proportion test, and the population stability index (PSI) of the
calibrated score and of every feature against the training window (the reference the
nightly scoring job compares with). :func:`backtest_stage` writes ``backtest.csv``,
``backtest.png`` and ``backtest.json`` and logs them to one MLflow run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.calibration import CalibrationSettings, fit_on_window
from leadml.modelling.drift import population_stability
from leadml.modelling.evaluate import base_rate_shift, binary_metrics
from leadml.modelling.guards import check_minimum_data
from leadml.modelling.scorer import PROBABILITY
from leadml.modelling.selection import MARGIN
from leadml.modelling.split import SplitSettings, split_with_report
from leadml.modelling.train import BASELINE_LOGREG, BASELINE_POINTS, BASELINE_RATE, train_and_evaluate

logger = logging.getLogger(__name__)


# comparison row -> column prefix in the backtest table
BASELINES: dict[str, str] = {
    BASELINE_LOGREG: "baseline_logreg",
    BASELINE_RATE: "baseline_rate",
    BASELINE_POINTS: "baseline_points",
}
STABLE, WATCH, SHIFT = "stable", "watch", "shift"
CSV, PNG, JSON = "backtest.csv", "backtest.png", "backtest.json"


@dataclass(frozen=True)
class BacktestSettings:
    folds: int = 5
    test_share: float = 0.5
    recent_fraction: float = 0.25
    min_period_positives: int = 10
    shift_p_value: float = 0.01
    shift_min_relative_change: float = 0.25
    watch_psi: float = 0.1
    shift_psi: float = 0.2
    top_features: int = 3

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise LeadmlError(f"backtest.folds must be at least 1, got {self.folds}")
        if not 0 < self.test_share < 1:
            raise LeadmlError(f"backtest.test_share must be in (0, 1), got {self.test_share}")
        if not 0 < self.recent_fraction <= 1:
            raise LeadmlError(f"backtest.recent_fraction must be in (0, 1], got {self.recent_fraction}")
        if not 0 < self.watch_psi <= self.shift_psi:
            raise LeadmlError("backtest.watch_psi must be positive and at most backtest.shift_psi")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> BacktestSettings:
        return cls(**known_settings(cls, mapping, "backtest"))


@dataclass(frozen=True)
class Period:
    """One test period: positions (``as_of`` or ``order_key``) in (``cutoff``, ``last``]."""

    number: int  # 1-based
    cutoff: Any  # the last position of the history
    first: Any  # the first position in the period
    last: Any
    rows: int

    def describe(self, column: str) -> str:
        return f"{column} {_plain(self.first)} to {_plain(self.last)}"


def backtest_periods(position: pd.Series, folds: int, test_share: float) -> list[Period]:
    """``folds`` consecutive periods of about ``test_share / folds`` of the rows each, at the end.

    Cuts fall between distinct positions (whole dates stay in one period), at the position
    whose cumulative row count is nearest each target.
    """
    counts = position.value_counts().sort_index()
    if len(counts) < 2:
        raise LeadmlError(f"backtest needs rows at more than one {position.name}, got {len(counts)}")
    cumulative = counts.to_numpy().cumsum()
    targets = cumulative[-1] * (1 - test_share + test_share * np.arange(folds + 1) / folds)
    cuts = [int(np.argmin(np.abs(cumulative - target))) for target in targets]
    cuts[-1] = len(counts) - 1
    periods = []
    for number in range(1, folds + 1):
        before, end = cuts[number - 1], cuts[number]
        if end <= before:
            raise LeadmlError(
                f"backtest fold {number} of {folds}: the period is empty because a single {position.name} "
                f"({_plain(counts.index[end])}, {int(counts.iloc[end]):,} rows) holds more than a period's "
                f"share of the rows; use fewer backtest.folds (now {folds}) or a larger backtest.test_share"
            )
        periods.append(
            Period(
                number=number,
                cutoff=counts.index[before],
                first=counts.index[before + 1],
                last=counts.index[end],
                rows=int(cumulative[end] - cumulative[before]),
            )
        )
    return periods


def fold_config(config: Mapping[str, Any], period: Period) -> dict[str, Any]:
    """The training config with the test window pinned to the period."""
    split = {**config["split"], "test_start": period.cutoff, "test_end": period.last}
    return {**config, "split": split}


def population_status(score_psi: float, feature_psi: float, settings: BacktestSettings) -> str:
    worst = np.nanmax([score_psi, feature_psi, 0.0])
    return SHIFT if worst > settings.shift_psi else WATCH if worst > settings.watch_psi else STABLE


# --------------------------------------------------------------------------- folds
def check_folds(
    snapshots: pd.DataFrame, config: Mapping[str, Any], periods: Sequence[Period], settings: BacktestSettings
) -> None:
    """Enough history and a judgeable period for every fold, before any model is fitted."""
    guards = config["guards"]
    column = _position_column(config)
    for period in periods:
        try:
            split = split_with_report(
                snapshots, SplitSettings.from_mapping(fold_config(config, period)["split"])
            )
            check_minimum_data(split.parts["train"], guards["min_snapshots"], guards["min_positives"])
        except LeadmlError as error:
            raise _fold_error(period, settings, column, str(error), "test window" in str(error)) from None
        test = split.parts["test"][s.LABEL]
        positives, negatives = int(test.sum()), int((test == 0).sum())
        if min(positives, negatives) < settings.min_period_positives:
            raise _fold_error(
                period,
                settings,
                column,
                f"the period has {positives:,} positives and {negatives:,} negatives in {len(test):,} rows, "
                f"need at least backtest.min_period_positives={settings.min_period_positives} of each",
                period_too_small=True,
            )


def _fold_error(
    period: Period, settings: BacktestSettings, column: str, message: str, period_too_small: bool
) -> LeadmlError:
    if period_too_small:
        fix = (
            f"use fewer backtest.folds (now {settings.folds}) or a larger backtest.test_share "
            f"(now {settings.test_share}) to give each period more rows"
        )
    else:
        fix = (
            f"use a smaller backtest.test_share (now {settings.test_share}) to leave more history before "
            f"the first cutoff, or fewer backtest.folds (now {settings.folds})"
        )
    where = f"backtest fold {period.number} of {settings.folds} ({period.describe(column)})"
    return LeadmlError(f"{where}: {message.rstrip('.')}; {fix}")


def run_fold(
    snapshots: pd.DataFrame,
    metadata: Mapping[str, FeatureMeta],
    config: Mapping[str, Any],
    period: Period,
    settings: BacktestSettings,
) -> dict[str, Any]:
    """Train before the period, test on it; one row of the backtest table."""
    started = time.perf_counter()
    column = _position_column(config)
    try:
        # the estimate only: the procedure fitted before the period; no refit for production
        result = train_and_evaluate(snapshots, metadata, fold_config(config, period), deploy=False)
    except LeadmlError as error:
        where = f"backtest fold {period.number} of {settings.folds} ({period.describe(column)})"
        raise type(error)(f"{where}: {error}") from None
    test, split = result.test, result.split
    labels = test[s.LABEL].to_numpy()
    probability = result.probabilities[result.model_name]
    comparison = result.comparison

    calibration = replace(
        CalibrationSettings.from_mapping(config["calibration"]), recent_fraction=settings.recent_fraction
    )
    model = result.scorer.model
    # the calibrator learns from out-of-sample margins of the validation folds (as training does)
    assert result.selection is not None and result.development is not None
    out_of_sample = result.selection.oos[MARGIN]
    validated = result.development.loc[out_of_sample.index]
    try:
        recent = fit_on_window(lambda rows: out_of_sample.loc[rows.index].to_numpy(), validated, calibration)
    except LeadmlError as error:
        window = calibration.window(validated)[1]
        raise LeadmlError(
            f"backtest fold {period.number} of {settings.folds}: the recent-window calibrator cannot be "
            f"fitted on {window['calibration_window']} ({error}); use a larger backtest.recent_fraction"
        ) from None
    offset = getattr(result.scorer.calibrator, "offset", 0.0)  # margins relative to the history's rate
    recent_metrics = binary_metrics(labels, recent.predict_proba(model.predict_margin(test) - offset))

    reference = result.scorer.reference
    score_psi = population_stability(
        {PROBABILITY: reference["score"]}, pd.DataFrame({PROBABILITY: probability})
    )
    feature_psi = pd.Series(population_stability(reference["features"], test), dtype="float64")
    feature_psi = feature_psi.sort_values(ascending=False)
    history_rows = split["train"]["rows"] + split["calibration"]["rows"]
    history_positives = split["train"]["positives"] + split["calibration"]["positives"]
    rows, positives = split["test"]["rows"], split["test"]["positives"]
    change, p_value = base_rate_shift(history_positives, history_rows, positives, rows)
    model_row = comparison.loc[result.model_name]
    record: dict[str, Any] = {
        "period": period.number,
        "cutoff": _plain(period.cutoff),
        "period_start": _plain(period.first),
        "period_end": _plain(period.last),
        "rows": rows,
        "positives": positives,
        "base_rate": positives / rows,
        "history_rows": history_rows,
        "history_base_rate": history_positives / history_rows,
        "base_rate_change": change,
        "base_rate_p_value": p_value,
        "base_rate_shift": bool(
            p_value < settings.shift_p_value and abs(change) > settings.shift_min_relative_change
        ),
        "roc_auc": model_row["roc_auc"],
        "roc_auc_low": model_row["roc_auc_low"],
        "roc_auc_high": model_row["roc_auc_high"],
        "pr_auc": model_row["pr_auc"],
        "log_loss": model_row["log_loss"],
        "brier": model_row["brier"],
        "ece": model_row["ece"],
        "log_loss_recent": recent_metrics["log_loss"],
        "brier_recent": recent_metrics["brier"],
        "ece_recent": recent_metrics["ece"],
        "calibration_method": result.calibration.get("method"),
        "calibration_rows": result.calibration.get("calibration_rows"),
        "recent_calibration_method": recent.method,
        "recent_calibration_rows": recent.describe().get("calibration_rows"),
    }
    for name, prefix in BASELINES.items():
        if name in comparison.index:
            record[f"{prefix}_roc_auc"] = comparison.loc[name, "roc_auc"]
            record[f"{prefix}_ece"] = comparison.loc[name, "ece"]
    top = feature_psi.head(settings.top_features)
    max_feature_psi = float(feature_psi.iloc[0]) if len(feature_psi) else float("nan")
    record.update(
        score_psi=score_psi[PROBABILITY],
        max_feature_psi=max_feature_psi,
        top_drift_features=", ".join(f"{name} {value:.3f}" for name, value in top.items()),
        population=population_status(score_psi[PROBABILITY], max_feature_psi, settings),
        leakage_flagged=", ".join(result.leakage_flagged),
        seconds=round(time.perf_counter() - started, 2),
    )
    logger.info(
        "backtest fold %d of %d (%s): %d history rows, %d test rows; ROC AUC %.4f, ECE %.4f (recent %.4f), "
        "base rate %.2f%% against %.2f%% before, score PSI %.3f (%.1f s)",
        period.number,
        settings.folds,
        period.describe(column),
        history_rows,
        rows,
        record["roc_auc"],
        record["ece"],
        record["ece_recent"],
        100 * record["base_rate"],
        100 * record["history_base_rate"],
        record["score_psi"],
        record["seconds"],
    )
    return record


def run_backtest_folds(
    snapshots: pd.DataFrame, metadata: Mapping[str, FeatureMeta], config: Mapping[str, Any]
) -> pd.DataFrame:
    """The backtest table, one row per period (``config`` is the composed backtest config)."""
    settings = BacktestSettings.from_mapping(config["backtest"])
    column = _position_column(config)
    if column not in snapshots.columns:
        raise LeadmlError(f"backtest with split.kind={config['split']['kind']} needs a {column} column")
    periods = backtest_periods(snapshots[column], settings.folds, settings.test_share)
    check_folds(snapshots, config, periods, settings)
    records = []
    for period in periods:
        logger.info(
            "backtest fold %d of %d: training up to %s %s",
            period.number,
            settings.folds,
            column,
            _plain(period.cutoff),
        )
        records.append(run_fold(snapshots, metadata, config, period, settings))
    return pd.DataFrame.from_records(records)


def _position_column(config: Mapping[str, Any]) -> str:
    kind = config["split"]["kind"]
    if kind not in ("time", "order"):
        raise LeadmlError(
            f"backtest needs split=time or split=order (periods follow time), got split.kind={kind}"
        )
    return s.AS_OF if kind == "time" else s.ORDER_KEY


# --------------------------------------------------------------------------- summary
def summary_sentences(table: pd.DataFrame, settings: BacktestSettings) -> list[str]:
    """What the backtest says, in a few sentences."""
    first, last = table.iloc[0], table.iloc[-1]
    numbers = f"period {int(first['period'])} and {int(last['period'])}"
    change = (last["base_rate"] - first["base_rate"]) / first["base_rate"] if first["base_rate"] else math.inf
    movement = (
        "rose" if change > settings.shift_min_relative_change else
        "fell" if change < -settings.shift_min_relative_change else "held steady"
    )  # fmt: skip
    shifted = _periods(table, table["base_rate_shift"])
    rule = (
        f"two-proportion test p < {settings.shift_p_value:g} and a change over "
        f"{settings.shift_min_relative_change:.0%}"
    )
    sentences = [
        f"base rate {movement} from {first['base_rate']:.1%} to {last['base_rate']:.1%} between {numbers}; "
        + (
            f"shift against the training history flagged in {shifted} ({rule})"
            if shifted
            else f"no period differs from its training history ({rule})"
        )
    ]

    lower = int((table["ece_recent"] < table["ece"]).sum())
    standard, recent = table["ece"].mean(), table["ece_recent"].mean()
    which = f"recent-window calibration (latest {settings.recent_fraction:.0%} of the out-of-sample rows)"
    figures = f"in {lower} of {len(table)} periods (mean {standard:.3f} -> {recent:.3f})"
    helped = recent < standard and lower > len(table) / 2
    sentences.append(
        f"{which} lowered ECE {figures}" if helped else f"{which} did not help: ECE lower {figures}"
    )

    worst = table[["score_psi", "max_feature_psi"]].max(axis=1)
    for status, threshold in ((SHIFT, settings.shift_psi), (WATCH, settings.watch_psi)):
        flagged = table[table["population"] == status]
        if len(flagged):
            top = flagged.loc[worst[flagged.index].idxmax()]
            which = _periods(table, table["population"] == status)
            sentences.append(
                f"population {'shift' if status == SHIFT else 'to watch'} (PSI > {threshold:g}) in "
                f"{which}: score PSI up to {flagged['score_psi'].max():.3f}, "
                f"most drifting features in period {int(top['period'])}: {top['top_drift_features']}"
            )
            break
    else:
        sentences.append(
            f"population stable: score and feature PSI at most {worst.max():.3f} in every period "
            f"(watch above {settings.watch_psi:g})"
        )

    auc = table["roc_auc"]
    text = f"ROC AUC {auc.min():.3f} to {auc.max():.3f} across periods (mean {auc.mean():.3f})"
    for name, label in (("baseline_logreg", "logistic baseline"), ("baseline_points", "points baseline")):
        if f"{name}_roc_auc" in table:
            text += f"; {label} mean {table[f'{name}_roc_auc'].mean():.3f}"
    sentences.append(text)
    return sentences


def _periods(table: pd.DataFrame, mask: pd.Series) -> str:
    numbers = [str(n) for n in table.loc[mask.to_numpy(dtype=bool), "period"]]
    if not numbers:
        return ""
    return ("period " if len(numbers) == 1 else "periods ") + ", ".join(numbers)


def table_lines(table: pd.DataFrame) -> list[str]:
    """The backtest table as fixed-width text lines for the terminal."""
    header = (
        f"{'period':<6} {'cutoff':>10} {'end':>10} {'rows':>7} {'pos':>6} {'rate':>6} {'hist':>6} "
        f"{'ROC AUC':>7} {'PR AUC':>6} {'ECE':>6} {'recent':>6} {'Brier':>6} {'recent':>6} {'logloss':>7} "
        f"{'logreg':>6} {'PSI':>6}  flags"
    )
    lines = [header]
    logreg = table.get("baseline_logreg_roc_auc", pd.Series(np.nan, index=table.index))
    for row, logreg_auc in zip(table.itertuples(), logreg, strict=True):
        flags = [f"base rate {row.base_rate_change:+.0%}"] if row.base_rate_shift else []
        if row.population != STABLE:
            flags.append(f"population {row.population}")
        lines.append(
            f"{row.period:<6} {_short(row.cutoff):>10} {_short(row.period_end):>10} {row.rows:>7,} "
            f"{row.positives:>6,} {row.base_rate:>6.1%} {row.history_base_rate:>6.1%} {row.roc_auc:>7.4f} "
            f"{row.pr_auc:>6.3f} {row.ece:>6.3f} {row.ece_recent:>6.3f} {row.brier:>6.4f} "
            f"{row.brier_recent:>6.4f} {row.log_loss:>7.4f} {logreg_auc:>6.3f} "
            f"{row.score_psi:>6.3f}  {'; '.join(flags)}"
        )
    return lines


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- figure


# --------------------------------------------------------------------------- stage


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
