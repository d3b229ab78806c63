"""The leadership report: one self-contained HTML page and a ranked CSV from a scored run.

Sections: overview (tiers, expected conversions and revenue by tier, source and owner;
the score distribution; the biggest movers; model health), the ranked leads (sortable and
filterable in the page), lead cards (a waterfall from the base rate to the lead's
probability, sub-scores, recent activity) and a conversion analysis of closed leads.

Everything is computed here from files: the scored partition and its run record, the
validated tables the scoring run read, the training snapshots, and the model that scored
(loaded once, for the waterfalls and the conversion analysis). Nothing needs the page to
reach a network; every text from the data goes through autoescaping templates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data import wording
from leadml.data.features import LABEL, SOURCE_FAMILY, FeatureMeta, FeatureSettings, open_lead_features
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.estimation import realised_roc_auc
from leadml.modelling.evaluate import assign_tiers
from leadml.modelling.reasons import (
    group_words,
    grouped_reasons,
    movement_sentence,
    movements,
)
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY, LeadScorer, as_model_input
from leadml.reporting.forecast import checked_positive, whole_number
from leadml.reporting.html import finite

logger = logging.getLogger(__name__)

REASON_COLUMNS = [f"positive_reason_{rank}" for rank in (1, 2, 3)]
RISK_COLUMNS = [f"negative_reason_{rank}" for rank in (1, 2, 3)]
CHANGE = "change"


# the smallest value each whole-number setting of ReportSettings accepts
_WHOLE_MINIMUMS = {
    "top_leads": 0,
    "top_accounts": 0,
    "table_rows": 1,
    "page_rows": 1,
    "movers": 0,
    "timeline_days": 0,
    "timeline_events": 0,
    "waterfall_steps": 1,
    "analysis_rows": 1,
    "seed": 0,
}


@dataclass(frozen=True)
class ReportSettings:
    top_leads: int = 20  # lead cards
    top_accounts: int = 25  # accounts in the Accounts section (the accounts CSV has every one)
    table_rows: int = 50_000  # leads the page's ranked table holds (the CSV has every lead)
    page_rows: int = 100  # rows of the ranked table shown at once (previous / next)
    movers: int = 10
    personal_columns: Sequence[str] = ()  # personal data shown only when listed here
    timeline_days: int = 30
    timeline_events: int = 12
    waterfall_steps: int = 8  # largest groups shown; the rest is one "other factors" step
    analysis_rows: int = 20_000  # closed leads explained for the conversion analysis
    seed: int = 0
    drift_psi: float = 0.1  # a feature shifted more (PSI) is described in words (as score.psi_warn)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ReportSettings:
        values = known_settings(cls, mapping, "report")
        values = {k: v for k, v in values.items() if v is not None}
        for name, minimum in _WHOLE_MINIMUMS.items():  # "abc" or -5 top leads: a message, not 551 cards
            if name in values:
                values[name] = whole_number(values[name], f"report.settings.{name}", minimum)
        if "drift_psi" in values:
            values["drift_psi"] = checked_positive(values["drift_psi"], "report.settings.drift_psi")
        if "personal_columns" in values:
            values["personal_columns"] = tuple(values["personal_columns"])
        unknown = set(values.get("personal_columns", ())) - set(s.PERSONAL_DATA_COLUMNS)
        if unknown:
            raise LeadmlError(
                f"report.personal_columns: {sorted(unknown)} are not personal-data columns "
                f"(choose from {list(s.PERSONAL_DATA_COLUMNS)})"
            )
        return cls(**values)


# --------------------------------------------------------------------------- reading


# --------------------------------------------------------------------------- overview
def flat_details(open_rows: pd.DataFrame, data: Mapping[str, Any]) -> pd.DataFrame:
    """A flat table's open leads with the column of the ``source`` family (``data.families``)
    also under the report's ``source`` name, so the "By source" table has it."""
    families = data.get("families") or {}
    column = next((c for c, family in families.items() if family == "source" and c in open_rows), None)
    if column is None or s.SOURCE in open_rows.columns:
        return open_rows
    return open_rows.assign(**{s.SOURCE: open_rows[column].astype("object")})


def with_lead_details(
    scored: pd.DataFrame, leads: pd.DataFrame, accounts: pd.DataFrame, personal: Sequence[str]
) -> pd.DataFrame:
    """Scored rows with source, owner, company and the configured personal columns, best first."""
    wanted = [c for c in (s.SOURCE, s.OWNER, s.ACCOUNT_ID, *personal) if c in leads.columns]
    details = leads.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[wanted]
    frame = scored.join(details, on=s.LEAD_ID)
    if s.ACCOUNT_ID in frame.columns and s.COMPANY_NAME in accounts.columns:
        companies = accounts.drop_duplicates(s.ACCOUNT_ID).set_index(s.ACCOUNT_ID)[s.COMPANY_NAME]
        frame["company"] = frame.pop(s.ACCOUNT_ID).map(companies)
    previous = frame.get("previous_probability")
    frame[CHANGE] = frame[PROBABILITY] - previous if previous is not None else np.nan
    return frame.sort_values(PROBABILITY, ascending=False, kind="stable", ignore_index=True)


def with_source_labels(frame: pd.DataFrame, scorer: LeadScorer) -> pd.DataFrame:
    """``frame`` with its ``source`` in display words ("Web Organic", or ``data.labels``), for the page.

    The words of the model's source feature (the CRM's ``source``, or a flat table's column of the
    source family); the ranked CSV keeps the stored values a CRM import matches on.
    """
    if s.SOURCE not in frame.columns:
        return frame
    metadata = [FeatureMeta(**meta) for meta in scorer.metadata.values()]
    own = [m for m in metadata if m.name == s.SOURCE] or [m for m in metadata if m.family == SOURCE_FAMILY]
    labels = own[0].labels if own else {}
    values = frame[s.SOURCE].astype(object)
    words = values.map(lambda value: wording.label(value, labels), na_action="ignore")
    return frame.assign(**{s.SOURCE: words.where(values.notna(), None)})


def tier_order(thresholds: Mapping[str, float], floor_tier: str, present: Sequence[str]) -> list[str]:
    ordered = [t for t, _ in sorted(thresholds.items(), key=lambda item: -item[1])] + [floor_tier]
    return ordered + sorted(set(present) - set(ordered))


def _sum_or_nan(values: pd.Series) -> float:
    """The sum, or NaN when no value is known (no deal values: shown as missing, not "$0")."""
    return float(values.sum(min_count=1))


def breakdown(frame: pd.DataFrame, by: str, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Leads, share, mean probability, expected conversions and revenue per value of ``by``."""
    values = frame[by].astype(object).where(frame[by].notna(), "(unknown)")
    revenue = frame["expected_value"] if "expected_value" in frame.columns else pd.Series(np.nan, frame.index)
    table = (
        pd.DataFrame({by: values, PROBABILITY: frame[PROBABILITY], "revenue": revenue})
        .groupby(by, sort=False)
        .agg(leads=(PROBABILITY, "size"), mean_probability=(PROBABILITY, "mean"),
             expected_conversions=(PROBABILITY, "sum"), expected_revenue=("revenue", _sum_or_nan))
        .reset_index()
    )  # fmt: skip
    table["share"] = table["leads"] / max(len(frame), 1)
    if order is not None:
        rank = {value: i for i, value in enumerate(order)}
        return table.sort_values(by, key=lambda c: c.map(rank).fillna(len(rank)), ignore_index=True)
    return table.sort_values("expected_conversions", ascending=False, ignore_index=True)


def movers(frame: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` leads whose probability rose most, and fell most, since the previous run."""
    known = frame[frame[CHANGE].notna()]
    up = known[known[CHANGE] > 0].nlargest(n, CHANGE)
    down = known[known[CHANGE] < 0].nsmallest(n, CHANGE)
    return up, down


def movement_texts(
    today: pd.DataFrame,
    before: pd.DataFrame,
    sentences: Mapping[str, Mapping[str, str]],
    words: Mapping[str, str],
) -> dict[str, str]:
    """Why each lead of ``today`` moved since ``before`` (its previous run's rows, by lead id), in
    today's words: "rose 12 points: about 4 pricing-page visits lately (+9), ...".

    The points are each group's exact share of the change (``reasons.movements``); a group is
    quoted by its sentence for the lead today
    (``sentences[lead][group]``), else its name in ``words``. Leads without a previous run, or
    runs without the groups' contributions, get no text.
    """
    moved = movements(today.reset_index(drop=True), before.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID))
    if moved is None:
        return {}
    texts = {}
    for i, lead in enumerate(today[s.LEAD_ID].to_numpy()[moved.rows]):
        own = sentences.get(lead, {})
        named = [
            (own.get(g) or words.get(g, g), float(moved.points[i, k])) for k, g in enumerate(moved.groups)
        ]
        texts[lead] = movement_sentence(100.0 * moved.change_probability[i], named)
    return texts


def flat_prediction_outcomes(earlier: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Every earlier prediction (:func:`leadml.adapters.sinks.earlier_predictions`) of an open lead
    of a flat table with ``resolved`` (the lead now carries a label: won or lost in today's file)
    and ``won`` (that label; 0 while unresolved)."""
    labels = labelled.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[LABEL]
    label = earlier[s.LEAD_ID].map(labels)
    return earlier.assign(resolved=label.notna().to_numpy(), won=label.fillna(0).astype("int64").to_numpy())


def flat_resolved_predictions(earlier: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Earlier runs' predictions (:func:`leadml.adapters.sinks.earlier_predictions`) of open leads of
    a flat table that now carry a label (won or lost in today's file), against that label; each
    lead once, with its latest prediction."""
    return _latest_resolved(flat_prediction_outcomes(earlier, labelled))


def prediction_outcomes(
    earlier: pd.DataFrame, as_of: pd.Timestamp, outcomes: pd.DataFrame, horizon_days: int
) -> pd.DataFrame:
    """Every earlier prediction with ``resolved`` (its outcome is known on ``as_of``) and ``won``.

    A prediction of run T is resolved when the lead closed before ``as_of``, or when its
    horizon (T + ``horizon_days``) has passed with the lead still open (not converted). The
    outcome is "won within the horizon of T", what the probability was a probability of.
    """
    closed = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    earlier = earlier.copy()
    if earlier.empty:
        return earlier.assign(resolved=pd.Series(dtype="bool"), won=pd.Series(dtype="int64"))
    closed_at = pd.to_datetime(earlier[s.LEAD_ID].map(closed[s.CLOSED_AT]), utc=True)
    status = earlier[s.LEAD_ID].map(closed[s.STATUS])
    deadline = earlier["run_date"] + pd.Timedelta(days=horizon_days)
    earlier["resolved"] = (closed_at.notna() & (closed_at < as_of)) | (deadline <= as_of)
    earlier["won"] = ((status == s.WON) & (closed_at <= deadline) & (closed_at < as_of)).astype(int)
    return earlier


def resolved_predictions(
    earlier: pd.DataFrame, as_of: pd.Timestamp, outcomes: pd.DataFrame, horizon_days: int
) -> pd.DataFrame:
    """Earlier runs' predictions whose outcome is now known (:func:`prediction_outcomes`), against
    what happened; each lead once, with its latest resolved prediction. ``earlier``: the
    predictions of the runs before ``as_of`` (:func:`leadml.adapters.sinks.earlier_predictions`).
    """
    if earlier.empty:
        return earlier.assign(won=pd.Series(dtype="int64"))
    return _latest_resolved(prediction_outcomes(earlier, as_of, outcomes, horizon_days))


def _latest_resolved(judged: pd.DataFrame) -> pd.DataFrame:
    """Each lead once, with its latest resolved prediction that was shown (a holdout's is blank)."""
    resolved = judged[judged["resolved"] & judged[PROBABILITY].notna()].drop(columns="resolved")
    latest = resolved.sort_values("run_date").drop_duplicates(s.LEAD_ID, keep="last")
    return latest.reset_index(drop=True)


# earlier runs shown in the table of estimated against realised performance, the latest first
RUNS_SHOWN = 12


def estimated_against_realised(
    judged: pd.DataFrame, records: Mapping[pd.Timestamp, Mapping[str, Any]], runs: int = RUNS_SHOWN
) -> pd.DataFrame:
    """Per earlier run whose every outcome is known: the performance it estimated before them
    (``_scoring_run.json``'s ``estimated``) against the realised one, the latest ``runs`` runs first.

    ``judged``: the runs' predictions with ``resolved`` and ``won`` (:func:`prediction_outcomes`
    or :func:`flat_prediction_outcomes`); ``records``: each run's record by run date. A run with
    a lead still open is left out: the realised figure of the leads that closed first would be
    biased (early closers are mostly the clear wins and losses). A run recorded before leadml
    estimated shows its realised figures only.

    A run under an experiment gives one row per arm (``arm``): the arm's leads, judged by the
    probability its own model gave them (``own_arm_probability``, a holdout's too) against the
    arm's estimate (``experiment.arms[i].estimated``) and tier thresholds; arms' models never mix.
    """
    rows = []
    for run_date, run in judged.groupby("run_date", sort=True):
        if not run["resolved"].all():
            continue
        record = records.get(run_date) or {}
        arms = (record.get("experiment") or {}).get("arms") or []
        if arms and s.OWN_ARM_PROBABILITY in run.columns:
            floor = str(record.get("floor_tier") or "D")
            for arm in arms:
                mine = run[run[s.ARM] == arm.get("name")]
                rows.append(
                    _estimate_row(run_date, mine[s.OWN_ARM_PROBABILITY], mine["won"], arm, floor)
                    | {s.ARM: arm.get("name")}
                )
        else:
            rows.append(_estimate_row(run_date, run[PROBABILITY], run["won"], record, None))
    table = pd.DataFrame(rows, columns=ESTIMATE_COLUMNS)
    latest = sorted(set(table["run_date"]), reverse=True)[:runs]
    table = table[table["run_date"].isin(latest)]
    return table.sort_values("run_date", ascending=False, kind="stable").reset_index(drop=True)


def _estimate_row(
    run_date: pd.Timestamp,
    probabilities: pd.Series,
    converted: pd.Series,
    record: Mapping[str, Any],
    floor_tier: str | None,
) -> dict[str, Any]:
    """One row of :func:`estimated_against_realised`: ``record`` holds ``estimated`` and
    ``thresholds`` (a run record, or an arm of its experiment, whose floor tier is ``floor_tier``)."""
    estimated = record.get("estimated") or {}
    probability = probabilities.to_numpy(dtype=np.float64)
    won = converted.to_numpy(dtype=bool)
    low, high = estimated.get("roc_auc_interval") or (None, None)
    top = estimated.get("top_tier")
    thresholds = record.get("thresholds") or {}
    floor = floor_tier or str(record.get("floor_tier") or "D")
    in_top = (
        assign_tiers(probability, thresholds, floor) == top
        if top is not None and thresholds
        else np.zeros(len(probability), dtype=bool)
    )
    estimated_auc = _float_or_nan(estimated.get("roc_auc"))
    realised_auc = realised_roc_auc(won, probability)
    return {
        "run_date": run_date,
        "arm": None,
        "leads": len(probability),
        "converted": int(won.sum()),
        "expected": float(probability.sum()),
        "estimated_roc_auc": estimated_auc,
        "estimated_low": _float_or_nan(low),
        "estimated_high": _float_or_nan(high),
        "realised_roc_auc": realised_auc,
        "difference": realised_auc - estimated_auc,
        "within": bool(_float_or_nan(low) <= realised_auc <= _float_or_nan(high)),
        "top_tier": top,
        "estimated_precision": _float_or_nan(estimated.get("top_tier_precision")),
        "realised_precision": float(won[in_top].mean()) if in_top.any() else float("nan"),
        "test_roc_auc": _float_or_nan(estimated.get("test_roc_auc")),
        "warned": bool(estimated.get("warning")),
    }


ESTIMATE_COLUMNS = [
    "run_date", "arm", "leads", "converted", "expected", "estimated_roc_auc", "estimated_low",
    "estimated_high", "realised_roc_auc", "difference", "within", "top_tier", "estimated_precision",
    "realised_precision", "test_roc_auc", "warned",
]  # fmt: skip


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def calibration_table(resolved: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """Predicted against realised conversion in equal-count bins of the predicted probability."""
    if resolved.empty:
        return pd.DataFrame(columns=["bin", "leads", "predicted", "realised"])
    order = resolved[PROBABILITY].rank(method="first")
    group = np.minimum((order - 1) * bins // len(resolved), bins - 1).astype(int)
    table = resolved.groupby(group).agg(
        leads=(PROBABILITY, "size"),
        low=(PROBABILITY, "min"),
        high=(PROBABILITY, "max"),
        predicted=(PROBABILITY, "mean"),
        realised=("won", "mean"),
    )
    return table.reset_index(names="bin")


# --------------------------------------------------------------------------- points from a typical lead
# a probability this close to 0 or 1 is taken as this for its log-odds (isotonic calibration may give 0)
PROBABILITY_FLOOR = 1e-9
BASE_LABEL = "typical lead (training base rate)"


def logit(probability: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return np.log(p / (1 - p))


def logistic(log_odds: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(log_odds, dtype=np.float64)))


def base_rate(scorer: LeadScorer, base_value: float) -> float:
    """Where a lead card starts: the share of training rows won (``scorer.trained["rate"]``).

    A sales leader knows "about 1 lead in 10 converts"; the explainer's base value (the mean
    raw margin) put through the calibrator is a lower, unfamiliar figure. A model saved before
    the rate was recorded falls back on that calibrated base value (NaN when it is not known).
    """
    rate = (scorer.trained or {}).get("rate")
    if isinstance(rate, int | float) and 0 < float(rate) < 1:
        return float(rate)
    if not np.isfinite(base_value):
        return float("nan")
    return float(scorer.calibrator.predict_proba(np.array([base_value], dtype=np.float64))[0])


def shared_log_odds(contributions: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """(rows x groups) each group's share of ``distance`` (log-odds): l = c + R * |c| / sum |c|.

    ``contributions`` c add up to the model's margin minus its base value; ``distance`` is what
    the card must cover, logit(probability) - logit(base rate). The residual R = distance - sum c
    (calibration, and the gap between the explainer's base value and the base rate) is shared in
    proportion to |c|, so each row's l add up to its distance. A row whose c are all zero shares
    it evenly.
    """
    c = np.atleast_2d(np.asarray(contributions, dtype=np.float64))
    magnitude = np.abs(c)
    total = magnitude.sum(axis=1, keepdims=True)
    weights = np.divide(magnitude, total, out=np.full_like(c, 1.0 / max(c.shape[1], 1)), where=total > 0)
    residual = np.asarray(distance, dtype=np.float64).reshape(-1, 1) - c.sum(axis=1, keepdims=True)
    return c + residual * weights


def shared_points(start: float, probability: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """(rows x groups) each group's percentage points from ``start`` to the row's ``probability``.

    Each group gets the share of the probability change that its log-odds ``shared`` (from
    :func:`shared_log_odds`, adding up to logit(probability) - logit(start)) is of the row's
    log-odds change: the straight path from the base rate to the lead in log-odds, integrated
    (Aumann-Shapley, "integrated gradients"). So the points add up to the change exactly, keep
    the sign and the order of size of the log-odds, and do not depend on the order the bars are
    drawn in (a walk through the logistic curve would give the same push more points nearer 50%).
    """
    shared = np.atleast_2d(np.asarray(shared, dtype=np.float64))
    probability = np.asarray(probability, dtype=np.float64).reshape(-1)
    distance = shared.sum(axis=1)
    change = probability - start
    # the mean slope of the logistic curve between the two; at no distance, its slope there
    slope = np.divide(
        change, distance, out=np.full_like(change, start * (1 - start)), where=np.abs(distance) > 1e-12
    )
    return 100.0 * shared * slope[:, None]


def drawing_order(points: np.ndarray) -> np.ndarray:
    """(rows x groups) the order bars are drawn in: for the lead, largest first, then against it,
    largest first; so the bars climb from the base rate and come down to the lead, never below 0%."""
    points = np.atleast_2d(points)
    key = np.where(points >= 0, -points, 1e300 - points)  # every positive before every negative
    return np.argsort(key, axis=1, kind="stable")


# --------------------------------------------------------------------------- lead cards
@dataclass
class LeadCard:
    row: dict[str, Any]
    steps: list[dict[str, Any]]
    timeline: list[dict[str, str]]
    scale_max: float = 1.0
    extras: dict[str, Any] = field(default_factory=dict)


def waterfall_steps(
    start: float, probability: float, contributions: np.ndarray, labels: Sequence[str], steps: int
) -> list[dict[str, Any]]:
    """Bars from a typical lead (the training base rate ``start``) to the lead's ``probability``.

    Method: the groups' exact contributions c_g are in log-odds and add up to margin - base
    value. The distance to cover is L = logit(probability) - logit(start); the residual
    R = L - sum c_g (the calibrator, and the gap between the explainer's base value and the
    base rate) is shared over the groups in proportion to |c_g|: l_g = c_g + R * |c_g| / sum |c|
    (:func:`shared_log_odds`). Each group gets the share l_g / L of the change in points
    (:func:`shared_points`), so the points add up to probability - start exactly and follow the
    size of the contributions. The ``steps`` largest are drawn for the lead first, then against
    it, each largest first (:func:`drawing_order`); the rest is one "N other factors" step,
    last, which lands exactly on the table's probability. Only percentage points are shown.
    """
    contributions = np.asarray(contributions, dtype=np.float64)
    distance = logit(probability) - logit(start)
    shared = shared_log_odds(contributions, np.array([distance]))
    points = shared_points(start, np.array([probability]), shared)[0]
    by_size = np.argsort(-np.abs(points), kind="stable")
    shown, rest = by_size[:steps], by_size[steps:]
    shown = shown[drawing_order(points[shown])[0]]
    names = [str(labels[g]) for g in shown]
    moves = [float(points[g]) for g in shown]
    if len(rest):
        names.append(f"{len(rest)} other factor{'s' if len(rest) > 1 else ''}")
        moves.append(float(points[rest].sum()))
    out = [{"label": BASE_LABEL, "start": 0.0, "end": start, "kind": "total"}]
    at = start
    for i, (name, move) in enumerate(zip(names, moves, strict=True)):
        after = (
            probability if i == len(names) - 1 else at + move / 100
        )  # the last lands on the table's figure
        out.append({"label": name, "start": float(at), "end": float(after), "points": move,
                    "kind": "pos" if move >= 0 else "neg"})  # fmt: skip
        at = after
    out.append({"label": "this lead", "start": 0.0, "end": float(probability), "kind": "total"})
    return out


def sub_score_points(start: float, row: Mapping[str, Any]) -> dict[str, float]:
    """The points from a typical lead that fit, engagement and the rest of the groups give.

    The row's sub-scores are sums of contributions (log-odds) of the fit and the engagement
    features; the rest is margin - base value - both. They are put in points the way the
    waterfall is (:func:`waterfall_steps`), so the three add up to probability - start.
    Empty when the row has no sub-scores.
    """
    needed = ("fit_score", "engagement_score", MARGIN, BASE_VALUE, PROBABILITY)
    if not all(finite(row.get(name)) for name in needed):
        return {}
    fit, engagement = float(row["fit_score"]), float(row["engagement_score"])
    rest = float(row[MARGIN]) - float(row[BASE_VALUE]) - fit - engagement
    probability = float(row[PROBABILITY])
    shared = shared_log_odds(np.array([fit, engagement, rest]), np.array([logit(probability) - logit(start)]))
    points = shared_points(start, np.array([probability]), shared)[0]
    return {"fit": float(points[0]), "engagement": float(points[1]), "other": float(points[2])}


def lead_timeline(
    activities: pd.DataFrame, lead_id: str, as_of: pd.Timestamp, days: int, n: int
) -> list[dict]:
    """The lead's latest events before ``as_of`` within ``days``, newest first, in words."""
    mine = activities[activities[s.LEAD_ID] == lead_id]
    stamps = pd.to_datetime(mine[s.TIMESTAMP], utc=True)
    recent = mine[(stamps < as_of) & (stamps >= as_of - pd.Timedelta(days=days))]
    recent = recent.assign(**{s.TIMESTAMP: stamps}).sort_values(s.TIMESTAMP, ascending=False).head(n)
    events = []
    for _, event in recent.iterrows():
        what = str(event[s.ACTIVITY_TYPE]).replace("_", " ")
        page = event.get(s.PAGE_CATEGORY)
        if isinstance(page, str) and page:
            what += f" ({page.replace('_', ' ')} page)"
        events.append({"when": f"{event[s.TIMESTAMP]:%Y-%m-%d %H:%M}", "what": what})
    return events


def group_sentences(
    leads: Sequence[str], features: pd.DataFrame, scorer: LeadScorer
) -> dict[str, dict[str, str]]:
    """Each lead's sentence for every group today (lead -> group -> words), from its features."""
    if not len(leads) or not scorer.can_explain:
        return {}
    chosen = features.set_index(s.LEAD_ID).reindex(list(leads)).reset_index()
    chosen = as_model_input(chosen, scorer.feature_names).assign(**{s.LEAD_ID: chosen[s.LEAD_ID]})
    _, groups, sentences = grouped_reasons(scorer.explain(chosen[scorer.feature_names]), scorer, chosen)
    return {lead: dict(zip(groups, sentences[i], strict=True)) for i, lead in enumerate(chosen[s.LEAD_ID])}


def card_leads(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The leads that get a card: the first ``n`` of ``frame`` shown a score. A lead of an experiment's
    holdout arm (tier hidden) has a blank probability: it gets no card, as its sales team sees none."""
    return frame[frame[PROBABILITY].notna()].head(n)


def lead_cards(
    top: pd.DataFrame,
    features: pd.DataFrame,
    scorer: LeadScorer,
    settings: ReportSettings,
    timeline: Callable[[str], list[dict]],
    arm_scorers: Mapping[str, LeadScorer] | None = None,
) -> list[LeadCard]:
    """A card for each lead of ``top``: its waterfall, sub-scores and recent activity.

    ``features`` are the leads' features as of the run's date (rebuilt; other leads' rows are
    left out), explained by the model that scored them: ``scorer``, or under an experiment the
    model of the lead's arm (``arm_scorers``, by arm name; ``scorer`` for a lead of no arm named
    there). The waterfall starts at that model's training base rate and its last step is the
    probability in the table. A lead shown no score (a holdout's) and a lead whose model gives
    no reasons (the points sheet) get no card. ``timeline(lead_id)`` gives its recent events.
    """
    top = top[top[PROBABILITY].notna()]
    chosen = _card_scorers(top, scorer, arm_scorers or {})
    explained: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    for one in {id(model): model for model in chosen}.values():
        if not one.can_explain:
            continue
        rows = [i for i, model in enumerate(chosen) if model is one]
        explained.update(zip(rows, _card_explanations(top.iloc[rows], features, one), strict=True))
    cards = []
    for i, row in enumerate(top.to_dict("records")):
        if i not in explained:
            continue
        summed, sentences, start = explained[i]
        probability = float(row[PROBABILITY])
        steps = waterfall_steps(start, probability, summed, sentences, settings.waterfall_steps)
        scale = max(max(step["start"], step["end"]) for step in steps)
        events = timeline(row[s.LEAD_ID])
        extras = {"sub_scores": sub_score_points(start, row)}
        cards.append(LeadCard(row=row, steps=steps, timeline=events, scale_max=scale * 1.08, extras=extras))
    return cards


def _card_scorers(
    top: pd.DataFrame, scorer: LeadScorer, arm_scorers: Mapping[str, LeadScorer]
) -> list[LeadScorer]:
    """The model explaining each lead of ``top``: its arm's under an experiment, else ``scorer``."""
    if not arm_scorers or s.ARM not in top.columns:
        return [scorer] * len(top)
    return [arm_scorers.get(str(arm), scorer) for arm in top[s.ARM]]


def _card_explanations(
    top: pd.DataFrame, features: pd.DataFrame, scorer: LeadScorer
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Per lead of ``top``, explained by ``scorer``: its groups' log-odds, their sentences, and the
    training base rate the waterfall starts from."""
    features = features.set_index(s.LEAD_ID).reindex(top[s.LEAD_ID]).reset_index()
    features = as_model_input(features, scorer.feature_names).assign(**{s.LEAD_ID: features[s.LEAD_ID]})
    contributions = scorer.explain(features[scorer.feature_names])
    summed, _, sentences = grouped_reasons(contributions, scorer, features)
    start = base_rate(scorer, float(contributions[BASE_VALUE].iloc[0]))
    return [(summed[i], sentences[i], start) for i in range(len(top))]


def crm_lead_features(
    leads: pd.DataFrame, tables: Mapping[str, pd.DataFrame], scorer: LeadScorer, as_of: pd.Timestamp
) -> pd.DataFrame:
    """The features of ``leads`` as of ``as_of``, rebuilt from the CRM tables as the model builds them."""
    ids = set(leads[s.LEAD_ID])
    subset = {name: frame[frame[s.LEAD_ID].isin(ids)] if s.LEAD_ID in frame.columns else frame
              for name, frame in tables.items()}  # fmt: skip
    return open_lead_features(subset, as_of, FeatureSettings.from_mapping(scorer.feature_settings))


# --------------------------------------------------------------------------- conversion analysis
def first_snapshots(snapshots: pd.DataFrame, outcomes: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """Each closed lead's first training snapshot (how it looked soon after it came in), sampled."""
    closed = set(outcomes.loc[outcomes[s.STATUS].isin([s.WON, s.LOST]), s.LEAD_ID])
    first = snapshots[snapshots[s.LEAD_ID].isin(closed)].sort_values([s.LEAD_ID, s.AS_OF])
    first = first.drop_duplicates(s.LEAD_ID, keep="first")
    if len(first) > rows:
        first = first.sample(n=rows, random_state=seed)
    return first.reset_index(drop=True)


def conversion_analysis(
    snapshots: pd.DataFrame,
    leads: pd.DataFrame,
    outcomes: pd.DataFrame,
    scorer: LeadScorer,
    thresholds: Mapping[str, float],
    floor_tier: str,
    settings: ReportSettings,
) -> dict[str, Any]:
    """Closed leads per source and per tier: leads, won, rate, days to convert, and why.

    Two rates: won of closed (the sales team's conversion rate, whenever the win came) and
    won within the horizon of the snapshot, the event the model's probability is about, so
    the mean probability is compared with the latter.

    The tier is the one the model gives the lead's first snapshot under today's thresholds;
    the reasons are the groups with the largest mean contribution among won leads and the
    most negative among lost ones.
    """
    first = first_snapshots(snapshots, outcomes, settings.analysis_rows, settings.seed)
    if first.empty:
        return {"rows": 0}
    closed = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    created = leads.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.CREATED_AT]
    features = as_model_input(first, scorer.feature_names)
    if scorer.can_explain:
        predicted, contributions = scorer.predict_explained(features)
    else:
        predicted, contributions = scorer.predict(features), None
    sources = leads.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.SOURCE]
    frame = pd.DataFrame({
        s.LEAD_ID: first[s.LEAD_ID].to_numpy(),
        s.SOURCE: first[s.LEAD_ID].map(sources).to_numpy(),
        PROBABILITY: predicted[PROBABILITY].to_numpy(),
    })  # fmt: skip
    frame["tier"] = assign_tiers(frame[PROBABILITY].to_numpy(), thresholds, floor_tier)
    frame["won"] = (first[s.LEAD_ID].map(closed[s.STATUS]) == s.WON).to_numpy()
    # what the probability is about: won within the horizon of that snapshot (its label)
    frame["won_in_horizon"] = pd.to_numeric(first[s.LABEL], errors="coerce").to_numpy()
    closed_at = pd.to_datetime(first[s.LEAD_ID].map(closed[s.CLOSED_AT]), utc=True)
    created_at = pd.to_datetime(first[s.LEAD_ID].map(created), utc=True)
    days = (closed_at - created_at).dt.total_seconds() / 86400
    frame["days_to_convert"] = days.where(frame["won"].to_numpy()).to_numpy()
    tiers = tier_order(thresholds, floor_tier, frame["tier"].unique())
    result: dict[str, Any] = {
        "rows": len(frame),
        "by_source": _conversion_table(frame, s.SOURCE),
        "by_tier": _conversion_table(frame, "tier", tiers),
    }
    if contributions is not None:
        metadata = {name: FeatureMeta(**meta) for name, meta in scorer.metadata.items()}
        labelled = features.assign(**{s.LEAD_ID: first[s.LEAD_ID]})
        summed, groups, _ = grouped_reasons(contributions, scorer, labelled)
        words = [group_words(g, metadata) for g in groups]
        won = frame["won"].to_numpy()
        start = base_rate(scorer, float(contributions[BASE_VALUE].iloc[0]))
        result["won_reasons"] = _mean_reasons(summed[won], words, start, largest=True)
        result["lost_reasons"] = _mean_reasons(summed[~won], words, start, largest=False)
    return result


def _conversion_table(frame: pd.DataFrame, by: str, order: Sequence[str] | None = None) -> pd.DataFrame:
    values = frame[by].astype(object).where(frame[by].notna(), "(unknown)")
    table = (
        frame.assign(**{by: values})
        .groupby(by, sort=False)
        .agg(leads=("won", "size"), won=("won", "sum"), mean_probability=(PROBABILITY, "mean"),
             won_in_horizon=("won_in_horizon", "mean"), days_to_convert=("days_to_convert", "mean"))
        .reset_index()
    )  # fmt: skip
    table["conversion_rate"] = table["won"] / table["leads"]
    if order is not None:
        rank = {value: i for i, value in enumerate(order)}
        return table.sort_values(by, key=lambda c: c.map(rank).fillna(len(rank)), ignore_index=True)
    return table.sort_values("leads", ascending=False, ignore_index=True)


def _mean_reasons(
    summed: np.ndarray, words: Sequence[str], start: float, largest: bool, n: int = 5
) -> list[dict[str, Any]]:
    """The groups with the largest mean contribution (or most negative), in points for a typical lead.

    A mean contribution (log-odds) is put in points as the waterfall's first step would be:
    what it alone moves a lead at the training base rate ``start``.
    """
    if len(summed) == 0:
        return []
    mean = summed.mean(axis=0)
    order = np.argsort(-mean if largest else mean, kind="stable")[:n]
    points = 100 * (logistic(logit(start) + mean) - start)
    return [{"reason": words[g], "points": float(points[g])} for g in order
            if (mean[g] > 0 if largest else mean[g] < 0)]  # fmt: skip


# --------------------------------------------------------------------------- the ranked table in the page
POINT_COLUMNS = [c.replace("_reason_", "_contribution_") for c in (*REASON_COLUMNS, *RISK_COLUMNS)]
TABLE_TEXT = ("company", s.SOURCE, s.OWNER, "trend")  # shown when the frame has them


def reason_points(
    frame: pd.DataFrame, start: float | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Each row's reasons (positive 1-3, then negative 1-3) in the order its compact card walks them.

    Returns (rows x 6) indices into ``REASON_COLUMNS + RISK_COLUMNS``, and the points each step
    adds and the points of the rest of the groups ("other factors", always last), both None when
    the rows carry no contributions or there is no ``start`` (the reasons keep their rank). The
    six contributions and the rest (margin - base value - their sum) are put in points as
    :func:`waterfall_steps` does, so a row's steps add up to probability - ``start`` exactly.
    A missing reason adds nothing and comes last.
    """
    texts = frame.reindex(columns=[*REASON_COLUMNS, *RISK_COLUMNS])
    present = texts.notna().to_numpy()
    needed = [*POINT_COLUMNS, MARGIN, BASE_VALUE]
    if start is None or not set(needed) <= set(frame.columns):
        return np.tile(np.arange(len(POINT_COLUMNS)), (len(frame), 1)), None, None
    contributions = np.where(present, frame[POINT_COLUMNS].to_numpy(dtype=np.float64), 0.0)
    contributions = np.nan_to_num(contributions)
    total = (frame[MARGIN] - frame[BASE_VALUE]).to_numpy(dtype=np.float64)
    groups = np.column_stack([contributions, total - contributions.sum(axis=1)])
    probability = frame[PROBABILITY].to_numpy(dtype=np.float64)
    shared = shared_log_odds(groups, logit(probability) - logit(start))
    points = shared_points(start, probability, shared)
    order = drawing_order(np.where(present, points[:, :-1], -1e200))  # a missing reason last
    return order, np.take_along_axis(points[:, :-1], order, axis=1), points[:, -1]


class _Strings:
    """Texts stored once in the page's table: a reason repeated over thousands of rows is one entry."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, value: Any) -> int | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return None
        return self.index.setdefault(str(value), len(self.index))

    @property
    def texts(self) -> list[str]:
        return list(self.index)


def _number(value: Any, digits: int) -> float | None:
    return round(float(value), digits) if finite(value) else None


def page_table(
    frame: pd.DataFrame, start: float | None, personal: Sequence[str], rows: int
) -> dict[str, Any]:
    """The best ``rows`` leads of ``frame`` as the page's script reads them (plain JSON values).

    ``columns`` names each row's fields, ``text`` those held as an index into ``strings``;
    ``reasons`` is a row's reasons in its card's order as [text, points or null, column]
    (0-2: ``positive_reason_1..3``, 3-5: ``negative_reason_1..3``), ``other`` the points of
    the rest of its groups. ``start``: the training base rate the points start from (None:
    no points). Rows are best first; ``total`` counts every lead, also those left out.
    """
    table = frame.head(rows)
    text_columns = [s.LEAD_ID, *personal, *[c for c in TABLE_TEXT if c in table.columns], "tier"]
    strings = _Strings()
    order, points, other = reason_points(table, start)
    reason_texts = table.reindex(columns=[*REASON_COLUMNS, *RISK_COLUMNS]).to_numpy(dtype=object)
    probability = table[PROBABILITY].to_numpy(dtype=np.float64)
    change = table[CHANGE].to_numpy(dtype=np.float64) if CHANGE in table else np.full(len(table), np.nan)
    out_rows = []
    step_points = np.full(order.shape, np.nan) if points is None else points
    for i, values in enumerate(table[text_columns].itertuples(index=False, name=None)):
        reasons = [
            [strings(reason_texts[i, j]), _number(step_points[i, k], 2), int(j)]
            for k, j in enumerate(order[i])
            if isinstance(reason_texts[i, j], str) and reason_texts[i, j]
        ]
        figures = [_number(probability[i], 6), _number(change[i], 6)]
        row_other = None if other is None else _number(other[i], 2)
        out_rows.append([*(strings(v) for v in values), *figures, reasons, row_other])
    return {
        "columns": [*text_columns, PROBABILITY, CHANGE, "reasons", "other"],
        "text": text_columns,
        "strings": strings.texts,
        "rows": out_rows,
        "total": len(frame),
        "start": start,
    }


# --------------------------------------------------------------------------- the ranked CSV
def ranked_csv(frame: pd.DataFrame, personal: Sequence[str]) -> pd.DataFrame:
    """Every lead, best first, with what a CRM import needs; personal data only where configured."""
    columns = [s.LEAD_ID, *[c for c in personal if c in frame.columns], "company", s.SOURCE, s.OWNER,
               "tier", PROBABILITY, "percentile", "trend", CHANGE, "expected_value",
               *REASON_COLUMNS, *RISK_COLUMNS, "model_version", s.AS_OF]  # fmt: skip
    ranked = frame[[c for c in columns if c in frame.columns]].copy()
    for column in ranked.columns:
        if column != s.AS_OF and not pd.api.types.is_numeric_dtype(ranked[column]):
            ranked[column] = inert_in_spreadsheets(ranked[column])
    ranked = _rounded(ranked)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    if s.AS_OF in ranked.columns:
        ranked[s.AS_OF] = pd.to_datetime(ranked[s.AS_OF], utc=True).dt.strftime("%Y-%m-%d")
    return ranked


# decimals of the CSV's figures: probabilities and their change to 4 places, money to whole units
CSV_DECIMALS = {PROBABILITY: 4, "percentile": 4, CHANGE: 4, "expected_value": 0}


def _rounded(ranked: pd.DataFrame) -> pd.DataFrame:
    """Figures as a CRM import shows them (0.7803, not 0.7802511524074309); contributions to 2 places."""
    decimals = dict(CSV_DECIMALS)
    decimals.update({c: 2 for c in ranked.columns if "_contribution_" in c})
    for column, digits in decimals.items():
        if column in ranked.columns and pd.api.types.is_numeric_dtype(ranked[column]):
            ranked[column] = ranked[column].round(digits)
            if digits == 0:
                ranked[column] = ranked[column].astype("Int64")  # whole units: "4001", not "4001.0"
    return ranked


def inert_in_spreadsheets(column: pd.Series) -> pd.Series:
    """Text that a spreadsheet would run as a formula (=, +, -, @ first) gets a leading quote.

    The CSV is opened in Excel and imported into CRMs: a company named ``=HYPERLINK(...)``
    must stay a name (OWASP's advice against CSV injection).
    """
    text = column.astype(object)
    risky = text.map(lambda value: isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"))
    return text.where(~risky, "'" + text.astype(str))


# --------------------------------------------------------------------------- the stage
