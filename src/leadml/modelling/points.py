"""Traditional lead scoring: points per criterion, summed, tiers by total points.

What predictive scoring replaces, kept as a baseline so every evaluation shows what it
gains over the scoring sheet marketing would otherwise use. The sheet lives in the data
config (``data.points``), because its criteria name the data set's columns::

    points:
      rules:
        - {feature: seniority, in: [c_level, vp], points: 20}
        - {feature: n_page_pricing_30d, ge: 1, points: 10}
        - {feature: employees, between: [200, 5000], points: 5}
        - {feature: n_unsubscribe_90d, gt: 0, points: -15}
        - {feature: Lead Quality, missing: true, points: 0}
      tiers: {A: 40, B: 20, C: 5}

Each rule has exactly one condition: ``eq``, ``in`` (a list), ``ge``, ``gt``, ``le``,
``lt``, ``between`` ([low, high], inclusive) or ``missing`` (true/false). A missing value
never matches a comparison, only ``missing: true``. Text values of a categorical feature
match as written or normalised the way ingestion normalises categories (``"C-Level"`` ->
``c_level``). ``tiers`` are minimum total points per tier, highest first; below the last
is the tier config's floor tier.

:class:`PointsModel` turns the total into log-odds with a one-variable logistic regression
fitted on the training window (margin = intercept + slope * points), so the sheet is
scored, calibrated and evaluated like any model. Its contributions split the margin
exactly: feature f contributes slope * (points f's rules award the row - their mean on
the training window), and the base value is intercept + slope * mean total.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from leadml.data import schema as s
from leadml.data.contracts import normalise_token
from leadml.errors import LeadmlError, SettingsError, data_config_file
from leadml.modelling.calibration import Calibrator
from leadml.modelling.evaluate import FLOOR_TIER, assign_tiers, tier_table
from leadml.modelling.models import (
    NON_FEATURE_COLUMNS,
    PROBABILITY_FLOOR,
    categorical_columns,
    feature_columns,
)

logger = logging.getLogger(__name__)

POINTS = "points"  # the model name (model=points)
CONDITIONS: tuple[str, ...] = ("eq", "in", "ge", "gt", "le", "lt", "between", "missing")
COMPARISONS: tuple[str, ...] = ("ge", "gt", "le", "lt", "between")
RULE_KEYS: tuple[str, ...] = ("feature", "points")
BLOCK_KEYS: tuple[str, ...] = ("rules", "tiers")
BASE_VALUE = "base_value"  # the column name leadml.modelling.scorer gives the base value of an explanation
_SYMBOLS = {"eq": "=", "ge": "≥", "gt": ">", "le": "≤", "lt": "<"}


def no_rules_message(data_name: str | None = None, config_file: str | None = None) -> str:
    """What to do when model=points finds no rules in the data config.

    ``config_file`` is the file to edit (:func:`leadml.errors.data_config_file`); without it,
    ``conf/data/<data_name>.yaml``.
    """
    where = config_file or data_config_file({"name": data_name})
    return (
        f"model=points: the data config{f' ({data_name})' if data_name else ''} has no points rules; "
        f"add a `points:` block with `rules:` (and optionally `tiers:`) to the data mapping in {where} "
        "(under `data:` when the file is a global package), e.g. "
        "points: {rules: [{feature: <column>, ge: 1, points: 10}], tiers: {A: 40, B: 20, C: 5}}"
    )


# --------------------------------------------------------------------------- config
def points_block(block: Any) -> dict[str, Any] | None:
    """``data.points`` as a plain dict with ``rules`` (list) and ``tiers`` (dict or None), or None.

    None when the data config has no block or the block has no rules. Unknown keys and
    malformed tiers raise :class:`LeadmlError`; the rules themselves are checked at fit time,
    against the training frame.
    """
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise LeadmlError(
            f"data.points must be a mapping with {list(BLOCK_KEYS)}, got {type(block).__name__}"
        )
    unknown = sorted(set(block) - set(BLOCK_KEYS))
    if unknown:
        raise SettingsError(f"unknown data.points key(s) {unknown}; known: {list(BLOCK_KEYS)}")
    rules = block.get("rules")
    if rules is None or (isinstance(rules, Sequence) and not isinstance(rules, str) and len(rules) == 0):
        return None
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        raise LeadmlError(
            "data.points.rules must be a list of rules like {feature: <column>, ge: 1, points: 10}"
        )
    rules = [dict(rule) if isinstance(rule, Mapping) else rule for rule in rules]
    return {"rules": rules, "tiers": parse_tiers(block.get("tiers"))}


def parse_tiers(tiers: Any) -> dict[str, float] | None:
    """Minimum total points per tier, highest tier first (strictly decreasing), or None."""
    if tiers is None or (isinstance(tiers, Mapping) and not tiers):
        return None
    if not isinstance(tiers, Mapping):
        raise LeadmlError(
            f"data.points.tiers must map tier to minimum points, e.g. {{A: 40, B: 20, C: 5}}, got {tiers!r}"
        )
    parsed: dict[str, float] = {}
    for tier, minimum in tiers.items():
        if not _is_number(minimum):
            raise LeadmlError(f"data.points.tiers: tier {tier} needs a number of points, got {minimum!r}")
        parsed[str(tier)] = float(minimum)
    minimums = list(parsed.values())
    if any(later >= earlier for earlier, later in itertools.pairwise(minimums)):
        raise LeadmlError(
            f"data.points.tiers must list the highest tier first with decreasing minimum points, got {parsed}"
        )
    return parsed


@dataclass(frozen=True)
class PointsSettings:
    """model=points: the scoring sheet of the data config (``data.points``), handed over by training."""

    name: str = POINTS
    rules: tuple[Mapping[str, Any], ...] = ()
    tiers: Mapping[str, float] | None = None

    @classmethod
    def from_mapping(
        cls, mapping: Mapping[str, Any], points: Mapping[str, Any] | None = None, data_name: str | None = None
    ) -> PointsSettings:
        """``mapping`` is the model config (only ``name``); ``points`` the data config's ``points`` block."""
        unknown = sorted(set(mapping) - {"name"})
        if unknown:
            raise SettingsError(
                f"unknown model setting(s) {unknown}: model=points has no settings of its own; "
                "its rules and tiers come from the data config (data.points)"
            )
        block = points_block(points)
        if block is None:
            raise LeadmlError(no_rules_message(data_name))
        return cls(rules=tuple(block["rules"]), tiers=block["tiers"])


# --------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class PointsRule:
    position: int  # 1-based place in data.points.rules
    feature: str
    condition: str  # one of CONDITIONS
    value: Any  # eq/comparisons: a scalar; in: a tuple; between: (low, high); missing: bool
    points: float
    categorical: bool = False  # matched as text: the training column holds categories
    accepted: tuple[Any, ...] = ()  # eq/in on a categorical feature: every spelling that matches

    @property
    def label(self) -> str:
        return f"rule {self.position} ({self.feature})"

    def describe(self) -> str:
        """``seniority in [c_level, vp]``, ``employees between 200 and 5000``, ``Lead Quality is missing``."""
        if self.condition == "missing":
            return f"{self.feature} is {'missing' if self.value else 'filled in'}"
        if self.condition == "in":
            return f"{self.feature} in [{', '.join(str(v) for v in self.value)}]"
        if self.condition == "between":
            return f"{self.feature} between {_number(self.value[0])} and {_number(self.value[1])}"
        value = self.value if self.categorical else _number(self.value)
        return f"{self.feature} {_SYMBOLS[self.condition]} {value}"

    def matches(self, frame: pd.DataFrame) -> np.ndarray:
        """One boolean per row: does the rule award its points? Missing values match only ``missing``."""
        column = frame[self.feature]
        missing = column.isna().to_numpy(dtype=bool)
        if self.condition == "missing":
            return missing if self.value else ~missing
        if self.categorical:
            hit = column.astype(object).isin(self.accepted).to_numpy(dtype=bool)
            return hit & ~missing
        values = _as_float(column)
        with np.errstate(invalid="ignore"):
            if self.condition == "eq":
                hit = values == self.value
            elif self.condition == "in":
                hit = np.isin(values, np.asarray(self.value, dtype=np.float64))
            elif self.condition == "ge":
                hit = values >= self.value
            elif self.condition == "gt":
                hit = values > self.value
            elif self.condition == "le":
                hit = values <= self.value
            elif self.condition == "lt":
                hit = values < self.value
            else:  # between, inclusive
                hit = (values >= self.value[0]) & (values <= self.value[1])
        return hit & ~np.isnan(values)


def parse_rules(raw: Sequence[Any], frame: pd.DataFrame) -> list[PointsRule]:
    """Checked rules against the columns (and dtypes) of the training frame.

    Raises :class:`LeadmlError` naming the rule (position and feature) for an unknown
    condition, none or two conditions, a feature not in the data, a value of the wrong kind
    (text for a comparison, a comparison on a categorical feature, a malformed list) or
    points that are not a number. A categorical level never seen in training is only
    logged: the sheet may anticipate it, but it is often a typo.
    """
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence) or not len(raw):
        raise LeadmlError(
            "data.points.rules must be a non-empty list of rules like {feature: <column>, ge: 1, points: 10}"
        )
    features = set(feature_columns(frame))
    categorical = set(categorical_columns(frame, list(features)))
    text = {name for name in features if _is_text(frame[name])}
    return [
        _parse_rule(position, rule, frame, features, categorical | text)
        for position, rule in enumerate(raw, 1)
    ]


def _parse_rule(
    position: int, rule: Any, frame: pd.DataFrame, features: Collection[str], categorical: Collection[str]
) -> PointsRule:
    feature = rule.get("feature") if isinstance(rule, Mapping) else None
    name = f"data.points rule {position}" + (f" (feature {feature!r})" if feature is not None else "")

    def fail(problem: str) -> LeadmlError:
        return LeadmlError(f"{name}: {problem}")

    if not isinstance(rule, Mapping):
        raise fail(f"must be a mapping like {{feature: <column>, ge: 1, points: 10}}, got {rule!r}")
    if feature is None:
        raise fail("names no feature")
    feature = str(feature)
    if feature in NON_FEATURE_COLUMNS:
        raise fail(f"{feature!r} is not a feature column (id, time, order and label columns cannot score)")
    if feature not in features:
        raise fail(
            f"feature {feature!r} is not a column of the training snapshots ({len(features)} features)"
        )
    if "points" not in rule:
        raise fail("gives no points")
    points = rule["points"]
    if not _is_number(points) or not math.isfinite(float(points)):
        raise fail(f"points must be a number, got {points!r}")
    conditions = [key for key in rule if key not in RULE_KEYS]
    unknown = [key for key in conditions if key not in CONDITIONS]
    if unknown:
        raise fail(f"unknown condition(s) {unknown}; use exactly one of {list(CONDITIONS)}")
    if len(conditions) != 1:
        found = " and ".join(conditions) if conditions else "none"
        raise fail(f"needs exactly one condition of {list(CONDITIONS)}, got {found}")
    condition, value = conditions[0], rule[conditions[0]]
    is_categorical = feature in categorical
    accepted: tuple[Any, ...] = ()
    if condition == "missing":
        if not isinstance(value, bool):
            raise fail(f"missing must be true or false, got {value!r}")
    elif condition in COMPARISONS:
        if is_categorical:
            raise fail(f"{condition} compares numbers, but {feature!r} holds categories (use eq or in)")
        if condition == "between":
            if (
                isinstance(value, str | bytes | Mapping)
                or not isinstance(value, Sequence)
                or len(value) != 2
                or not all(_is_number(v) for v in value)
            ):
                raise fail(f"between needs [low, high] as two numbers, got {value!r}")
            low, high = float(value[0]), float(value[1])
            if low > high:
                raise fail(f"between needs low <= high, got [{value[0]}, {value[1]}]")
            value = (low, high)
        else:
            if not _is_number(value):
                raise fail(f"{condition} needs a number, got {value!r}")
            value = float(value)
    else:  # eq, in
        values = _values(value, condition, fail)
        if is_categorical:
            accepted = tuple(dict.fromkeys(v for item in values for v in _spellings(item)))
            _warn_unseen(name, feature, values, frame[feature])
            value = values[0] if condition == "eq" else tuple(values)
        else:
            numbers = [v for v in values if _is_number(v) or isinstance(v, bool)]
            if len(numbers) != len(values):
                raise fail(f"{feature!r} holds numbers, so {condition} needs numbers, got {value!r}")
            floats = tuple(float(v) for v in numbers)
            value = floats[0] if condition == "eq" else floats
    return PointsRule(position, feature, condition, value, float(points), is_categorical, accepted)


def _values(value: Any, condition: str, fail: Any) -> list[Any]:
    if condition == "eq":
        if isinstance(value, Mapping) or (isinstance(value, Sequence) and not isinstance(value, str)):
            raise fail(f"eq needs one value (use in for a list), got {value!r}")
        if value is None:
            raise fail("eq null never matches: use missing: true")
        return [value]
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or not len(value):
        raise fail(f"in needs a non-empty list, got {value!r}")
    if any(v is None or isinstance(v, Mapping | list | tuple) for v in value):
        raise fail(f"in needs a list of plain values (use missing: true for missing), got {list(value)!r}")
    return list(value)


def _spellings(value: Any) -> tuple[str, ...]:
    written = str(value).lower() if isinstance(value, bool) else str(value)
    return tuple(dict.fromkeys((written, normalise_token(written))))


def _warn_unseen(name: str, feature: str, values: Sequence[Any], column: pd.Series) -> None:
    seen = (
        set(column.cat.categories) if isinstance(column.dtype, pd.CategoricalDtype) else set(column.dropna())
    )
    unseen = [v for v in values if not seen & set(_spellings(v))]
    if unseen:
        logger.warning(
            "%s: %s never occur(s) in the training window's %r: a typo? (levels look like %s)",
            name,
            unseen,
            feature,
            sorted(map(str, seen))[:8],
        )


# --------------------------------------------------------------------------- scoring
def rule_matches(frame: pd.DataFrame, rules: Sequence[PointsRule]) -> np.ndarray:
    """Rows x rules: does each rule award its points to each row?"""
    _check_columns(frame, rules)
    if not rules:
        return np.zeros((len(frame), 0), dtype=bool)
    return np.column_stack([rule.matches(frame) for rule in rules])


def total_points(frame: pd.DataFrame, rules: Sequence[PointsRule]) -> np.ndarray:
    """The scoring sheet's total per row: the sum of the points of every rule the row meets."""
    weights = np.array([rule.points for rule in rules], dtype=np.float64)
    return rule_matches(frame, rules).astype(np.float64) @ weights


def points_by_feature(frame: pd.DataFrame, rules: Sequence[PointsRule]) -> pd.DataFrame:
    """Points each rule feature awards each row (its rules summed); the columns sum to the total."""
    matched = rule_matches(frame, rules)
    features = list(dict.fromkeys(rule.feature for rule in rules))
    out = {name: np.zeros(len(frame)) for name in features}
    for i, rule in enumerate(rules):
        out[rule.feature] = out[rule.feature] + rule.points * matched[:, i]
    return pd.DataFrame(out, index=frame.index)


def _check_columns(frame: pd.DataFrame, rules: Sequence[PointsRule]) -> None:
    missing = sorted({rule.feature for rule in rules if rule.feature not in frame.columns})
    if missing:
        raise LeadmlError(f"scoring data lacks feature column(s) {missing} that the points rules read")


@dataclass
class PointsModel:
    """The scoring sheet as a model: margin = intercept + slope * total points (log-odds)."""

    rules: list[PointsRule]
    feature_names: list[str]  # every feature column of the training frame, like the other models
    categories: dict[str, list[Any]]  # training levels of categorical columns (the scoring checks use them)
    intercept: float
    slope: float
    mean_points: dict[str, float]  # per rule feature: mean points awarded on the training window
    tiers: dict[str, float] | None = None  # minimum total points per tier, highest first
    fit_report: dict[str, Any] = field(default_factory=dict)

    @property
    def rule_features(self) -> list[str]:
        return list(self.mean_points)

    @property
    def mean_total(self) -> float:
        return float(sum(self.mean_points.values()))

    def total_points(self, frame: pd.DataFrame) -> np.ndarray:
        return total_points(frame, self.rules)

    def margin_of(self, points: np.ndarray | float) -> np.ndarray:
        """Log-odds of a total (or totals) of points."""
        return self.intercept + self.slope * np.asarray(points, dtype=np.float64)

    def predict_margin(self, frame: pd.DataFrame) -> np.ndarray:
        return self.margin_of(self.total_points(frame))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return expit(self.predict_margin(frame))

    @property
    def base_value(self) -> float:
        return self.intercept + self.slope * self.mean_total

    def explain(self, frame: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
        """Contributions in log-odds, one column per feature plus ``base_value``; they sum to the margin.

        A rule feature contributes slope * (the points it awards the row - its training
        mean); every other feature 0. ``names`` (default: ``feature_names``) are the columns.
        """
        columns = list(names if names is not None else self.feature_names)
        absent = [name for name in self.mean_points if name not in columns]
        if absent:
            raise LeadmlError(f"explanation columns lack the rule feature(s) {absent}")
        awarded = points_by_feature(frame, self.rules)
        out = pd.DataFrame(0.0, index=frame.index, columns=columns)
        for name, mean in self.mean_points.items():
            out[name] = self.slope * (awarded[name].to_numpy() - mean)
        out[BASE_VALUE] = self.base_value
        return out

    def rule_table(self) -> list[dict[str, Any]]:
        """Each rule in words with its points and the share of training rows it scored."""
        shares = self.fit_report.get("rule_shares", [])
        return [
            {
                "rule": rule.position,
                "feature": rule.feature,
                "criterion": rule.describe(),
                "points": rule.points,
                "training_share": shares[i] if i < len(shares) else float("nan"),
            }
            for i, rule in enumerate(self.rules)
        ]


def fit_points(
    train: pd.DataFrame, rules: Sequence[Mapping[str, Any]], tiers: Mapping[str, float] | None = None
) -> PointsModel:
    """Check the rules against the training frame and fit the label's log-odds on the total points."""
    parsed = parse_rules(rules, train)
    names = feature_columns(train)
    categories = {c: train[c].cat.categories.tolist() for c in categorical_columns(train, names)}
    matched = rule_matches(train, parsed)
    awarded = points_by_feature(train, parsed)
    total = awarded.to_numpy(dtype=np.float64).sum(axis=1)
    labels = train[s.LABEL].to_numpy()
    intercept, slope = _logistic_fit(total, labels)
    if slope <= 0 and np.std(total) > 0:
        logger.warning(
            "points: more points mean a lower conversion rate on the training window (slope %.4f per point): "
            "the scoring sheet ranks leads the wrong way round",
            slope,
        )
    report = {
        "rules": len(parsed),
        "training_rows": len(train),
        "intercept": intercept,
        "slope": slope,
        "mean_total": float(total.mean()) if len(total) else 0.0,
        "total_range": [float(total.min()), float(total.max())] if len(total) else [0.0, 0.0],
        "rule_shares": [float(share) for share in matched.mean(axis=0)] if len(train) else [],
    }
    logger.info(
        "points: %d rules, total %.1f on average (%.0f to %.0f), %.4f log-odds per point",
        len(parsed), report["mean_total"], *report["total_range"], slope,
    )  # fmt: skip
    mean_points = {name: float(awarded[name].mean()) for name in awarded.columns}
    return PointsModel(
        parsed, names, categories, intercept, slope, mean_points, dict(tiers) if tiers else None, report
    )


def _logistic_fit(points: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of an (almost) unpenalised logistic regression of the label on the points."""
    if len(np.unique(labels)) < 2:
        raise LeadmlError("the points baseline needs both labels in the training window")
    spread = float(np.std(points))
    if spread == 0:
        logger.warning(
            "points: every training row has the same total (%.1f): the scoring sheet ranks nothing",
            float(points[0]) if len(points) else 0.0,
        )
        rate = float(np.clip(labels.mean(), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR))
        return float(logit(rate)), 0.0
    centre = float(np.mean(points))
    standardised = ((points - centre) / spread).reshape(-1, 1)
    # a weak penalty keeps the fit finite when the points separate the labels perfectly
    fitted = LogisticRegression(C=1e4, max_iter=1000).fit(standardised, labels)
    slope = float(fitted.coef_[0, 0]) / spread
    intercept = float(fitted.intercept_[0]) - slope * centre
    return intercept, slope


# --------------------------------------------------------------------------- tiers
def probability_thresholds(
    point_thresholds: Mapping[str, float], model: PointsModel, calibrator: Calibrator
) -> dict[str, float]:
    """Probability minimum of each tier: its minimum points through the model and the calibrator.

    Both maps are monotone non-decreasing when the slope is positive, so a lead reaches a
    tier's probability whenever it reaches its points; an isotonic calibrator's flat steps
    can also lift a lead just below a tier's points to that tier's probability (ties), which
    is why training tiers the sheet's leads by points (:func:`points_tier_table`).
    Raises :class:`LeadmlError` when the slope is not positive (the points rank nothing, or
    the wrong way round): probability tiers could not follow the points then.
    """
    if model.slope <= 0:
        raise LeadmlError(
            f"points tiers cannot be mapped to probabilities: the fitted slope is {model.slope:.4g} "
            "log-odds per point (more points do not mean a higher conversion rate)"
        )
    minimums = np.array([float(v) for v in point_thresholds.values()], dtype=np.float64)
    probabilities = calibrator.predict_proba(model.margin_of(minimums))
    return {str(tier): float(p) for tier, p in zip(point_thresholds, probabilities, strict=True)}


def point_tiers(
    points: np.ndarray, point_thresholds: Mapping[str, float], floor_tier: str = FLOOR_TIER
) -> np.ndarray:
    """Tier of each total: the highest tier whose minimum points it reaches, else ``floor_tier``."""
    values = np.asarray(points, dtype=np.float64)
    tiers = np.full(len(values), floor_tier, dtype=object)
    for tier, minimum in sorted(point_thresholds.items(), key=lambda item: item[1]):
        tiers[values >= minimum] = tier
    return tiers


# --------------------------------------------------------------------------- helpers
def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_text(column: pd.Series) -> bool:
    dtype = column.dtype
    return (
        not isinstance(dtype, pd.CategoricalDtype)
        and not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))
        and not pd.api.types.is_datetime64_any_dtype(dtype)
    )


def _as_float(column: pd.Series) -> np.ndarray:
    numbers = pd.to_numeric(column.astype(object) if _is_text(column) else column, errors="coerce")
    return pd.Series(numbers).to_numpy(dtype=np.float64, na_value=np.nan)


def _number(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------- training
def training_sheet(block: Any, left_out: Collection[str] = ()) -> tuple[dict[str, Any] | None, list[str]]:
    """``data.points`` as training uses it, and the rules it skipped.

    Rules on features deliberately left out of the model (``features.exclude``, or the
    leakage sentinel with ``guards.leakage_action=exclude``) are skipped with a warning, so
    excluding a column never breaks the baseline; a rule on a feature the data does not have
    at all still fails at fit time. None when no rules remain.
    """
    sheet = points_block(block)
    if sheet is None:
        return None, []
    kept, skipped = [], []
    for position, rule in enumerate(sheet["rules"], 1):
        feature = rule.get("feature") if isinstance(rule, Mapping) else None
        if feature is not None and str(feature) in left_out:
            skipped.append(f"rule {position} ({feature})")
            continue
        kept.append(rule)
    if skipped:
        logger.warning(
            "points: skipping %s: the feature is left out of the model "
            "(features.exclude or the leakage sentinel)",
            ", ".join(skipped),
        )
    return ({**sheet, "rules": kept} if kept else None), skipped


def mapped_tiers(model: PointsModel, calibrator: Calibrator) -> dict[str, float] | None:
    """The sheet's tiers as probability thresholds (``probability_thresholds``), or None.

    None without tiers, or (with a warning) when the slope is not positive, so training
    falls back to the tier config.
    """
    if not model.tiers:
        return None
    try:
        return probability_thresholds(model.tiers, model, calibrator)
    except LeadmlError as error:
        logger.warning("%s; the tier table uses the tier config instead", error)
        return None


def tier_agreement(
    probabilities: np.ndarray,
    thresholds: Mapping[str, float],
    points: np.ndarray,
    point_thresholds: Mapping[str, float],
    floor_tier: str = FLOOR_TIER,
) -> float:
    """Share of rows whose probability tier is their points tier (below 1 only through calibration ties)."""
    if not len(points):
        return float("nan")
    by_probability = assign_tiers(probabilities, thresholds, floor_tier)
    return float(np.mean(by_probability == point_tiers(points, point_thresholds, floor_tier)))


def points_summary(model: PointsModel | None, row: str | None, skipped: Sequence[str] = ()) -> dict[str, Any]:
    """What training records of the scoring sheet: its comparison row, rules, fitted map, or why none."""
    if model is None:
        return {
            "available": False,
            "skipped": list(skipped),
            "note": (
                "no points baseline: the data config has no points rules (data.points.rules)"
                if not skipped
                else f"no points baseline: every rule was skipped ({', '.join(skipped)})"
            ),
        }
    return {
        "available": True,
        "row": row,
        "rules": model.rule_table(),
        "skipped": list(skipped),
        "intercept": model.intercept,
        "slope": model.slope,
        "mean_total": model.mean_total,
        "total_range": model.fit_report.get("total_range"),
    }


def points_tier_table(
    labels: np.ndarray,
    probabilities: np.ndarray,
    points: np.ndarray,
    point_thresholds: Mapping[str, float],
    thresholds: Mapping[str, float],
    floor_tier: str = FLOOR_TIER,
    n_boot: int = 200,
    groups: np.ndarray | None = None,
) -> pd.DataFrame:
    """``evaluate.tier_table`` of the sheet's own tiers: leads tiered by their total points.

    ``min_points`` is each tier's minimum points, ``min_probability`` the same minimum through
    the model and the calibrator (``thresholds``) and ``mean_probability`` the mean calibrated
    probability of the tier. Tiering by the probability thresholds gives the same tiers unless
    the calibrator puts totals on both sides of a tier's minimum on one step (isotonic ties):
    the sheet's tiers are what marketing works with, so the points decide.
    """
    # tier_table takes scores in [0, 1]: points and minimums through one increasing linear map,
    # which keeps every comparison (equal totals stay equal)
    values = np.asarray(points, dtype=np.float64)
    minimums = np.array([float(v) for v in point_thresholds.values()], dtype=np.float64)
    low = float(min(values.min(initial=np.inf), minimums.min(initial=np.inf)))
    span = float(max(values.max(initial=-np.inf), minimums.max(initial=-np.inf))) - low or 1.0
    scaled = dict(zip(point_thresholds, (minimums - low) / span, strict=True))
    table = tier_table(labels, (values - low) / span, scaled, floor_tier, n_boot=n_boot, groups=groups)
    membership = point_tiers(values, point_thresholds, floor_tier)
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        table["mean_probability"] = [
            float(p[membership == tier].mean()) if (membership == tier).any() else float("nan")
            for tier in table["tier"]
        ]
    table["min_probability"] = [float(thresholds.get(tier, 0.0)) for tier in table["tier"]]
    table.insert(1, "min_points", [point_thresholds.get(tier, np.nan) for tier in table["tier"]])
    return table
