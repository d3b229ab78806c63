"""Segment models (``data.segments``): one model per segment where it beats the global one.

The rows of each segment (a value, or a group of values, of one feature column such as
``source``) go through the same procedure as the global model, on the same windows: the split is
made once, and a segment's windows are its rows of them. Its own model is kept only where

* the segment has enough data (the minimum-data guard, per segment), and
* on the segment's out-of-time test rows its calibrated probabilities beat the global model's
  by the configured margin (of ROC AUC, or of log loss), and the gain holds in most bootstrap
  resamples by lead (a gain on a few hundred rows is often noise);

every other segment is scored by the global model. The registered scorer routes each row to
its segment's scorer (:class:`~leadml.modelling.scorer.SegmentRouting`), so scoring, reasons,
export, the endpoint and Spark read one model as before.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, SettingsError, known_settings
from leadml.modelling.drift import reference_profile
from leadml.modelling.evaluate import binary_metrics, paired_share_better
from leadml.modelling.guards import WARN
from leadml.modelling.scorer import PROBABILITY, LeadScorer, SegmentRouting, segment_positions
from leadml.modelling.split import window_slices
from leadml.modelling.train import (
    REFERENCE_ROWS,
    TrainingResult,
    Windows,
    minimum_data_note,
    train_on_windows,
)

logger = logging.getLogger(__name__)

KEY = "data.segments"
RESAMPLES = 200  # bootstrap resamples by lead behind a segment's share of better resamples
METRICS = {"roc_auc": "ROC AUC", "log_loss": "log loss"}  # what a segment may be judged on, in words


@dataclass(frozen=True)
class SegmentSettings:
    """``data.segments``: which column splits the leads, into which segments, and what a segment's
    own model must show to be used."""

    by: str  # a feature column (source, region, product line...)
    # segment name -> the values of ``by`` it holds; empty: every value its own segment. A value
    # of no segment is scored by the global model
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # what a segment's own model must beat the global one on, on the segment's test rows: roc_auc
    # (ranking) or log_loss (calibrated probabilities)
    metric: str = "roc_auc"
    margin: float = 0.005  # by how much (ROC AUC gained, or log loss saved)
    # share of bootstrap resamples (by lead) of its test rows in which the segment's model must win
    confidence: float = 0.95
    min_rows: int | None = None  # development snapshots a segment needs (None: guards.min_snapshots)
    min_positives: int | None = None  # won snapshots a segment needs (None: guards.min_positives)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> SegmentSettings | None:
        """The settings of ``data.segments`` (None: no segments); one clear line on a bad value."""
        if mapping is None:
            return None
        if not isinstance(mapping, Mapping):
            raise LeadmlError(f"{KEY} must be a mapping such as {{by: source}}, got {mapping!r}")
        values = known_settings(cls, mapping, KEY)
        by = values.get("by")
        if not isinstance(by, str) or not by:
            raise SettingsError(f"{KEY}.by must name a feature column (such as source), got {by!r}")
        metric = values.get("metric", cls.metric)
        if metric not in METRICS:
            raise SettingsError(f"{KEY}.metric must be one of {list(METRICS)}, got {metric!r}")
        margin = _number(values.get("margin", cls.margin), f"{KEY}.margin", 0.0, 1.0)
        confidence = _number(values.get("confidence", cls.confidence), f"{KEY}.confidence", 0.0, 1.0)
        return cls(
            by=by,
            groups=_groups(values.get("groups")),
            metric=str(metric),
            margin=margin,
            confidence=confidence,
            min_rows=_count(values.get("min_rows"), f"{KEY}.min_rows"),
            min_positives=_count(values.get("min_positives"), f"{KEY}.min_positives"),
        )

    def segments_of(self, values: pd.Series) -> dict[str, tuple[str, ...]]:
        """Segment name -> its values (as text): the configured groups, or each value present."""
        if self.groups:
            return dict(self.groups)
        present = values.dropna().astype(str).unique()
        return {value: (value,) for value in sorted(present)}


def _number(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= high:
        raise SettingsError(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def _count(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"{key} must be a whole number of at least 1 or null, got {value!r}")
    return int(value)


def _groups(groups: Any) -> dict[str, tuple[str, ...]]:
    """``groups`` as segment -> values (as text); a value in two segments is refused."""
    if groups is None:
        return {}
    if not isinstance(groups, Mapping) or not groups:
        raise SettingsError(
            f"{KEY}.groups must map each segment to its values, such as {{inbound: [web, organic]}}, "
            f"or be null (every value its own segment), got {groups!r}"
        )
    out: dict[str, tuple[str, ...]] = {}
    seen: dict[str, str] = {}
    for name, members in groups.items():
        listed = [members] if isinstance(members, str | int | float) else members
        if not isinstance(listed, list | tuple) or not listed:
            raise SettingsError(f"{KEY}.groups.{name} must list the values of its segment, got {members!r}")
        for value in map(str, listed):
            if value in seen:
                raise SettingsError(f"{KEY}.groups: {value!r} is in both {seen[value]!r} and {name!r}")
            seen[value] = str(name)
        out[str(name)] = tuple(map(str, listed))
    return out


@dataclass(frozen=True)
class SegmentDecision:
    """What one segment got (its own model or the global one), why, and the figures behind it."""

    name: str
    values: tuple[str, ...]
    rows: int  # development snapshots (before the test window)
    positives: int
    test_rows: int
    test_positives: int
    chosen: bool  # its own model scores its leads
    reason: str  # in plain words, for the model report
    global_metrics: dict[str, float] = field(default_factory=dict)  # on the segment's test rows
    segment_metrics: dict[str, float] = field(default_factory=dict)  # empty: no model of its own trained
    share_better: float | None = None  # bootstrap resamples in which its own model won
    model_name: str | None = None  # the candidate its procedure chose
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """One row of the run's ``segments.csv``."""
        return {
            "segment": self.name,
            "values": ", ".join(self.values),
            "rows": self.rows,
            "positives": self.positives,
            "test_rows": self.test_rows,
            "test_positives": self.test_positives,
            "own_model": self.chosen,
            "global_roc_auc": self.global_metrics.get("roc_auc", np.nan),
            "segment_roc_auc": self.segment_metrics.get("roc_auc", np.nan),
            "global_log_loss": self.global_metrics.get("log_loss", np.nan),
            "segment_log_loss": self.segment_metrics.get("log_loss", np.nan),
            "share_better": np.nan if self.share_better is None else self.share_better,
            "reason": self.reason,
        }


@dataclass
class SegmentOutcome:
    """Every segment's decision, the routing of the chosen ones (None: none chosen), and the
    test-window figures of the routed model against the global one alone."""

    settings: SegmentSettings
    decisions: list[SegmentDecision]
    routing: SegmentRouting | None
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # {"global", "routed"} -> metrics
    # the routed model's probabilities of the test rows (each chosen segment's own, the global
    # model's elsewhere), in the order of the global run's test rows
    probability: np.ndarray | None = None

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([decision.record() for decision in self.decisions])


def check_segment_column(settings: SegmentSettings, feature_names: list[str]) -> None:
    """The segment column must be a model feature: scoring and the endpoint route by the feature
    frame, which holds the model's features only."""
    if settings.by not in feature_names:
        raise LeadmlError(
            f"{KEY}.by: {settings.by!r} is not a feature of the model, so scoring could not route by "
            f"it; name one of its categorical features such as source (features: {', '.join(feature_names)})"
        )


def train_segments(
    windows: Windows,
    result: TrainingResult,
    metadata: Mapping[str, FeatureMeta],
    config: Mapping[str, Any],
    progress: bool = False,
) -> SegmentOutcome | None:
    """Train and judge every segment of ``config["data"]["segments"]`` on the windows the global
    model (``result``) was trained on; None without segments. Sets the routing on ``result.scorer``
    and the outcome on ``result.segments`` (the model report's section)."""
    settings = SegmentSettings.from_mapping(config["data"].get("segments"))
    if settings is None:
        return None
    started = time.perf_counter()
    scorer = result.scorer
    check_segment_column(settings, scorer.feature_names)
    split = windows.split.without(result.leakage_excluded) if result.leakage_excluded else windows.split
    segments = settings.segments_of(split.rows[settings.by])
    which = segment_positions(
        split.rows[settings.by], {v: i for i, vs in enumerate(segments.values()) for v in vs}
    )
    test = result.test
    test_which = which[len(split.rows) - len(test) :]
    global_probability = result.probabilities[result.model_name]
    segment_config = _segment_config(config)
    guards = config["guards"]
    minimum = (
        settings.min_rows or guards["min_snapshots"],
        settings.min_positives or guards["min_positives"],
    )
    decisions: list[SegmentDecision] = []
    chosen: dict[str, LeadScorer] = {}
    routed = global_probability.copy()
    for code, (name, values) in enumerate(segments.items()):
        mask = which == code
        in_test = test_which == code
        segment_windows = replace(windows, split=_segment_split(split, mask))
        judged = _Judged(
            labels=test[s.LABEL].to_numpy()[in_test],
            leads=test[s.LEAD_ID].to_numpy()[in_test],
            global_probability=global_probability[in_test],
        )
        decision, own = _one_segment(
            name, values, segment_windows, judged, metadata, segment_config, settings, minimum, progress
        )
        decisions.append(decision)
        logger.info("segment %s: %s", name, decision.reason)
        if own is not None:
            chosen[name], routed[in_test] = own
    routing = None
    if chosen:
        segment_of = {value: name for name, values in segments.items() if name in chosen for value in values}
        routing = SegmentRouting(column=settings.by, segment_of=segment_of, scorers=chosen)
    scorer.segments = routing
    labels = test[s.LABEL].to_numpy()
    figures = {"global": binary_metrics(labels, global_probability), "routed": binary_metrics(labels, routed)}
    if routing is not None:  # tonight's estimate is checked against the routed model's test figure
        scorer.trained = {**scorer.trained, "test_roc_auc": float(figures["routed"]["roc_auc"])}
        fitted = split.rows if windows.deploy else split.development()
        scorer.reference = {**scorer.reference, "score": _score_profile(scorer, fitted, config)}
    result.segments = SegmentOutcome(settings, decisions, routing, figures, routed)
    result.seconds["segments"] = round(time.perf_counter() - started, 3)
    return result.segments


def _score_profile(scorer: LeadScorer, rows: pd.DataFrame, config: Mapping[str, Any]) -> dict[str, Any]:
    """The drift reference of the routed scorer's probabilities, as :func:`training_reference`
    profiles the global one's: the nightly job's score PSI compares like with like."""
    sample = rows.sample(min(len(rows), REFERENCE_ROWS), random_state=config["evaluation"]["seed"])
    return reference_profile(scorer.predict(sample)[[PROBABILITY]], [PROBABILITY])[PROBABILITY]


@dataclass(frozen=True)
class _Judged:
    """A segment's test rows as the comparison reads them."""

    labels: np.ndarray
    leads: np.ndarray
    global_probability: np.ndarray


def _segment_split(split: Any, mask: np.ndarray) -> Any:
    """The split's windows narrowed to the rows of ``mask`` (positions of ``split.rows``)."""
    rows = split.rows[mask]
    sizes, start = {}, 0
    for name, part in split.parts.items():
        sizes[name] = int(mask[start : start + len(part)].sum())
        start += len(part)
    return replace(split, rows=rows, parts=window_slices(rows, sizes))


def _segment_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The global config for a segment's procedure: what the sentinel flags is said, not stopped
    on (the global run already decided on leakage), and no SHAP sample (the report's is global)."""
    segment = copy.deepcopy(dict(config))
    segment["guards"] = {**segment["guards"], "leakage_action": WARN}
    segment["evaluation"] = {**segment["evaluation"], "shap_rows": 0}
    segment["data"] = {**segment["data"], "segments": None}
    return segment


def _one_segment(
    name: str,
    values: tuple[str, ...],
    windows: Windows,
    judged: _Judged,
    metadata: Mapping[str, FeatureMeta],
    config: Mapping[str, Any],
    settings: SegmentSettings,
    minimum: tuple[int, int],
    progress: bool,
) -> tuple[SegmentDecision, tuple[LeadScorer, np.ndarray] | None]:
    """One segment's decision; when it gets its own model, that scorer and its calibrated
    probabilities of the segment's test rows (as judged)."""
    started = time.perf_counter()
    development = windows.split.development()
    counts = {
        "rows": len(development),
        "positives": int(development[s.LABEL].sum()),
        "test_rows": len(judged.labels),
        "test_positives": int(judged.labels.sum()),
    }
    base = {"name": name, "values": values, **counts}
    global_metrics = binary_metrics(judged.labels, judged.global_probability) if len(judged.labels) else {}
    note = minimum_data_note(development, *minimum)
    if note is not None:
        reason = (
            f"global model: too little data ({counts['rows']:,} snapshots, {counts['positives']:,} won "
            f"before the test window; a model of its own needs at least {minimum[0]:,} and {minimum[1]:,})"
        )
        return SegmentDecision(**base, chosen=False, reason=reason, global_metrics=global_metrics), None
    if len(np.unique(judged.labels)) < 2:
        outcome = "no won lead" if not judged.labels.any() else "no lost lead"
        reason = (
            f"global model: its {counts['test_rows']:,} test snapshots hold {outcome}, "
            "so no model can be judged on them"
        )
        return SegmentDecision(**base, chosen=False, reason=reason, global_metrics=global_metrics), None
    try:
        own = train_on_windows(windows, metadata, config, progress=progress)
    except LeadmlError as error:
        logger.warning("segment %s: its own model could not be trained: %s", name, error)
        reason = f"global model: a model of its own could not be trained ({error})"
        return SegmentDecision(**base, chosen=False, reason=reason, global_metrics=global_metrics), None
    probability = own.probabilities[own.model_name]
    segment_metrics = binary_metrics(judged.labels, probability)
    metric, words = settings.metric, METRICS[settings.metric]
    share = paired_share_better(
        judged.labels,
        probability,
        judged.global_probability,
        metric=metric,
        n_boot=RESAMPLES,
        seed=int(config["evaluation"]["seed"]),
        groups=judged.leads,
    )
    gain = segment_metrics[metric] - global_metrics[metric]
    gain = gain if metric == "roc_auc" else -gain  # log loss: what it saves
    chosen = bool(gain >= settings.margin and share >= settings.confidence)
    digits = 3 if metric == "roc_auc" else 4
    figures = (
        f"{words} {segment_metrics[metric]:.{digits}f} against {global_metrics[metric]:.{digits}f} for the "
        f"global model on its {counts['test_rows']:,} test snapshots"
    )
    if chosen:
        reason = f"own model: {figures}, better in {share:.0%} of resamples"
    elif gain < settings.margin:
        reason = f"global model: its own model was not better by {settings.margin:g} {words} ({figures})"
    else:
        reason = (
            f"global model: its own model's gain could be chance ({figures}; better in only {share:.0%} "
            f"of resamples, {settings.confidence:.0%} needed)"
        )
    decision = SegmentDecision(
        **base,
        chosen=chosen,
        reason=reason,
        global_metrics=global_metrics,
        segment_metrics=segment_metrics,
        share_better=share,
        model_name=own.model_name,
        seconds=round(time.perf_counter() - started, 3),
    )
    return decision, ((own.scorer, probability) if chosen else None)
