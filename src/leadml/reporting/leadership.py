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
from leadml.data.features import LABEL, FeatureMeta, FeatureSettings, open_lead_features
from leadml.errors import LeadmlError, known_settings
from leadml.modelling.evaluate import assign_tiers
from leadml.modelling.reasons import grouped_reasons
from leadml.modelling.scorer import BASE_VALUE, PROBABILITY, LeadScorer, as_model_input

logger = logging.getLogger(__name__)

REASON_COLUMNS = [f"positive_reason_{rank}" for rank in (1, 2, 3)]
RISK_COLUMNS = [f"negative_reason_{rank}" for rank in (1, 2, 3)]
CHANGE = "change"
# words for the groups whose column name does not read well; the others are worded from
# their 7-day count's sentence ("pricing-page visits") or their column name
GROUP_WORDS = {
    "job_title": "seniority",
    "email": "corporate e-mail domain",
    "created_at": "lead age",
    "founded_year": "company age",
    "country": "country",
    "activity": "all activity",
}


@dataclass(frozen=True)
class ReportSettings:
    top_leads: int = 20  # lead cards
    table_rows: int = 1000  # rows of the ranked table in the page (the CSV has every lead)
    movers: int = 10
    personal_columns: Sequence[str] = ()  # personal data shown only when listed here
    timeline_days: int = 30
    timeline_events: int = 12
    waterfall_steps: int = 8  # largest groups shown; the rest is one "other factors" step
    analysis_rows: int = 20_000  # closed leads explained for the conversion analysis
    seed: int = 0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ReportSettings:
        values = known_settings(cls, mapping, "report")
        values = {k: v for k, v in values.items() if v is not None}
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


def flat_resolved_predictions(earlier: pd.DataFrame, labelled: pd.DataFrame) -> pd.DataFrame:
    """Earlier runs' predictions (:func:`leadml.adapters.sinks.earlier_predictions`) of open leads of
    a flat table that now carry a label (won or lost in today's file), against that label; each
    lead once, with its latest prediction."""
    labels = labelled.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[LABEL]
    resolved = earlier[earlier[s.LEAD_ID].isin(labels.index)]
    resolved = resolved.sort_values("run_date").drop_duplicates(s.LEAD_ID, keep="last")
    return resolved.assign(won=resolved[s.LEAD_ID].map(labels).astype("int64")).reset_index(drop=True)


def resolved_predictions(
    earlier: pd.DataFrame, as_of: pd.Timestamp, outcomes: pd.DataFrame, horizon_days: int
) -> pd.DataFrame:
    """Earlier runs' predictions whose outcome is now known, against what happened.

    A prediction of run T is resolved when the lead closed before ``as_of``, or when its
    horizon (T + ``horizon_days``) has passed with the lead still open (not converted). The
    outcome is "won within the horizon of T", what the probability was a probability of.
    Each lead counts once, with its latest resolved prediction. ``earlier``: the predictions of
    the runs before ``as_of`` (:func:`leadml.adapters.sinks.earlier_predictions`).
    """
    closed = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    earlier = earlier.copy()
    if earlier.empty:
        return earlier.assign(won=pd.Series(dtype="int64"))
    closed_at = pd.to_datetime(earlier[s.LEAD_ID].map(closed[s.CLOSED_AT]), utc=True)
    status = earlier[s.LEAD_ID].map(closed[s.STATUS])
    deadline = earlier["run_date"] + pd.Timedelta(days=horizon_days)
    resolved = (closed_at.notna() & (closed_at < as_of)) | (deadline <= as_of)
    earlier["won"] = ((status == s.WON) & (closed_at <= deadline) & (closed_at < as_of)).astype(int)
    latest = earlier[resolved].sort_values("run_date").drop_duplicates(s.LEAD_ID, keep="last")
    return latest.reset_index(drop=True)


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


# --------------------------------------------------------------------------- lead cards
@dataclass
class LeadCard:
    row: dict[str, Any]
    steps: list[dict[str, Any]]
    timeline: list[dict[str, str]]
    scale_max: float = 1.0
    extras: dict[str, Any] = field(default_factory=dict)


def probability_of(scorer: LeadScorer, margins: np.ndarray) -> np.ndarray:
    """Calibrated probability of raw log-odds margins: how a waterfall is put in probability terms."""
    return np.asarray(
        scorer.calibrator.predict_proba(np.asarray(margins, dtype=np.float64)), dtype=np.float64
    )


def waterfall_steps(
    scorer: LeadScorer, base_value: float, contributions: np.ndarray, sentences: np.ndarray, steps: int
) -> list[dict[str, Any]]:
    """Steps from the base rate to the lead's probability, largest group contributions first.

    Contributions add in log-odds; each step shows the calibrated probability before and
    after it, so the last step ends exactly on the lead's probability.
    """
    order = np.argsort(-np.abs(contributions), kind="stable")
    shown, rest = order[:steps], order[steps:]
    labels = [str(sentences[g]) for g in shown]
    deltas = [float(contributions[g]) for g in shown]
    if len(rest):
        labels.append(f"{len(rest)} other factors")
        deltas.append(float(contributions[rest].sum()))
    margins = base_value + np.concatenate([[0.0], np.cumsum(deltas)])
    probabilities = probability_of(scorer, margins)
    out = [
        {
            "label": "base rate (an average lead)",
            "start": 0.0,
            "end": float(probabilities[0]),
            "kind": "total",
        }
    ]
    for i, (label, delta) in enumerate(zip(labels, deltas, strict=True)):
        out.append({
            "label": label, "log_odds": delta, "start": float(probabilities[i]),
            "end": float(probabilities[i + 1]), "kind": "pos" if delta >= 0 else "neg",
        })  # fmt: skip
    out.append({"label": "this lead", "start": 0.0, "end": float(probabilities[-1]), "kind": "total"})
    return out


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


def lead_cards(
    top: pd.DataFrame,
    features: pd.DataFrame,
    scorer: LeadScorer,
    settings: ReportSettings,
    timeline: Callable[[str], list[dict]],
) -> list[LeadCard]:
    """A card for each lead of ``top``: its waterfall, sub-scores and recent activity.

    ``features`` are the leads' features as of the run's date (rebuilt for these leads only),
    explained by the model that scored them: the waterfall's last step is the probability in
    the table. ``timeline(lead_id)`` gives the lead's recent events in words.
    """
    if top.empty or not scorer.can_explain:
        return []
    features = features.set_index(s.LEAD_ID).reindex(top[s.LEAD_ID]).reset_index()
    features = as_model_input(features, scorer.feature_names).assign(**{s.LEAD_ID: features[s.LEAD_ID]})
    contributions = scorer.explain(features[scorer.feature_names])
    summed, _, sentences = grouped_reasons(contributions, scorer, features)
    base = contributions[BASE_VALUE].to_numpy()
    cards = []
    for i, row in enumerate(top.to_dict("records")):
        steps = waterfall_steps(scorer, float(base[i]), summed[i], sentences[i], settings.waterfall_steps)
        scale = max(max(step["start"], step["end"]) for step in steps)
        events = timeline(row[s.LEAD_ID])
        cards.append(LeadCard(row=row, steps=steps, timeline=events, scale_max=min(1.0, scale * 1.08)))
    return cards


def crm_card_features(
    top: pd.DataFrame, tables: Mapping[str, pd.DataFrame], scorer: LeadScorer, as_of: pd.Timestamp
) -> pd.DataFrame:
    """The features of ``top``'s leads as of ``as_of``, rebuilt from the CRM tables."""
    ids = set(top[s.LEAD_ID])
    subset = {name: frame[frame[s.LEAD_ID].isin(ids)] if s.LEAD_ID in frame.columns else frame
              for name, frame in tables.items()}  # fmt: skip
    return open_lead_features(subset, as_of, FeatureSettings.from_mapping(scorer.feature_settings))


# --------------------------------------------------------------------------- conversion analysis
def group_words(group: str, metadata: Mapping[str, FeatureMeta]) -> str:
    """A group's name in words: "pricing-page visits", "employees", "lead source"."""
    if group in GROUP_WORDS:
        return GROUP_WORDS[group]
    weekly = metadata.get(f"n_{group}_7d")
    if weekly is not None and weekly.template.startswith("{value:.0f} "):
        return weekly.template.removeprefix("{value:.0f} ").removesuffix(" in the last 7 days")
    return "lead source" if group == s.SOURCE else group.replace("_", " ")


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
        result["won_reasons"] = _mean_reasons(summed[won], words, largest=True)
        result["lost_reasons"] = _mean_reasons(summed[~won], words, largest=False)
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
    summed: np.ndarray, words: Sequence[str], largest: bool, n: int = 5
) -> list[dict[str, Any]]:
    if len(summed) == 0:
        return []
    mean = summed.mean(axis=0)
    order = np.argsort(-mean if largest else mean, kind="stable")[:n]
    return [{"reason": words[g], "mean_log_odds": float(mean[g])} for g in order
            if (mean[g] > 0 if largest else mean[g] < 0)]  # fmt: skip


# --------------------------------------------------------------------------- the ranked CSV
def ranked_csv(frame: pd.DataFrame, personal: Sequence[str]) -> pd.DataFrame:
    """Every lead, best first, with what a CRM import needs; personal data only where configured."""
    columns = [s.LEAD_ID, *[c for c in personal if c in frame.columns], "company", s.SOURCE, s.OWNER,
               "tier", PROBABILITY, "percentile", "trend", CHANGE, "expected_value",
               *REASON_COLUMNS, *RISK_COLUMNS, "model_version", s.AS_OF]  # fmt: skip
    ranked = frame[[c for c in columns if c in frame.columns]].copy()
    for column in ranked.columns:
        if column != s.AS_OF and not pd.api.types.is_numeric_dtype(ranked[column]):
            ranked[column] = _inert_in_spreadsheets(ranked[column])
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    if s.AS_OF in ranked.columns:
        ranked[s.AS_OF] = pd.to_datetime(ranked[s.AS_OF], utc=True).dt.strftime("%Y-%m-%d")
    return ranked


def _inert_in_spreadsheets(column: pd.Series) -> pd.Series:
    """Text that a spreadsheet would run as a formula (=, +, -, @ first) gets a leading quote.

    The CSV is opened in Excel and imported into CRMs: a company named ``=HYPERLINK(...)``
    must stay a name (OWASP's advice against CSV injection).
    """
    text = column.astype(object)
    risky = text.map(lambda value: isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"))
    return text.where(~risky, "'" + text.astype(str))


# --------------------------------------------------------------------------- the stage
