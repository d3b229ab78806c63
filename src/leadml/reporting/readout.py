"""The readout of an experiment of scoring: each arm's leads against what became of them.

A lead enters the experiment on the first night it is scored under it (its *exposure*), in its
arm (:mod:`leadml.scoring.experiment`), with the tier its arm's model gave it that night. That
tier is fixed before the sales team acted on any score, so comparing arms by it compares like
with like; a tier reached later would depend on what the team did (a treated lead gets more
activity and climbs). A lead's outcome is what the nightly report judges: won within the
horizon after its exposure, known once it closed or the horizon passed.

The arms are compared on their top tier (``readout.compare: top_tier``, the leads a team works
first, where a better model shows soonest) or on all their leads (``all``), each arm against the
baseline arm (the first), with the always-valid test of :mod:`leadml.modelling.sequential`
recomputed at every night since the start, so the readout may be looked at every night.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.errors import LeadmlError, known_settings
from leadml.modelling import sequential

ARM, FIRST_SEEN, TIER, PROBABILITY = s.ARM, "first_seen", "tier", "probability"
RESOLVED_ON, WON, DAYS_TO_CLOSE, DEAL_VALUE = "resolved_on", "won", "days_to_close", "deal_value"
COMPARE = ("top_tier", "all")
Z95 = 1.959963984540054

# the decisions, in the words the page and the CLI use
TOO_EARLY, KEEP_RUNNING, WINS, LOSES, NO_DIFFERENCE, CHECK_ASSIGNMENT = (
    "too early", "keep running", "wins", "loses", "no difference", "check the assignment",
)  # fmt: skip


class ReadoutError(LeadmlError):
    """A malformed ``readout`` setting, or no experiment to read: exit code 1, as any bad config."""

    exit_code = 1


@dataclass(frozen=True)
class ReadoutSettings:
    """``readout.test`` of conf/experiment.yaml (the README's "Experiments" section explains each)."""

    compare: str = "top_tier"
    top_tier: str | None = None  # None: the first tier of the run's thresholds (A)
    alpha: float = 0.05
    power: float = 0.8
    min_lift: float = 0.10
    srm_alpha: float = 0.001

    def __post_init__(self) -> None:
        if self.compare not in COMPARE:
            known = ", ".join(COMPARE)
            raise ReadoutError(f"readout.test.compare must be one of {known}, got {self.compare!r}")
        for key in ("alpha", "power", "srm_alpha"):
            value = getattr(self, key)
            if not 0.0 < value < 1.0:
                raise ReadoutError(f"readout.test.{key} must lie between 0 and 1, got {value!r}")
        if not self.min_lift > 0.0:
            raise ReadoutError(
                f"readout.test.min_lift must be above 0 (0.10: a 10% lift), got {self.min_lift!r}"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> ReadoutSettings:
        values = known_settings(cls, mapping or {}, "readout.test")
        try:
            return cls(**{k: v for k, v in values.items() if v is not None or k == "top_tier"})
        except TypeError as error:
            raise ReadoutError(f"readout.test: {error}") from None


@dataclass(frozen=True)
class ArmPlan:
    """An arm as the run record describes it (``experiment.arms[*]`` of ``_scoring_run.json``)."""

    name: str
    share: float
    show_score: bool
    model_uri: str
    model_version: str | None


@dataclass(frozen=True)
class Readout:
    """Everything the page, the JSON and the CLI say about one experiment on one date."""

    experiment: str
    as_of: pd.Timestamp
    compare: str
    top_tier: str
    baseline: str
    arms: pd.DataFrame  # one row per arm: leads, outcomes, conversion, top tier, deals, revenue
    tiers: pd.DataFrame  # arm x tier: leads, resolved, conversion
    comparisons: pd.DataFrame  # one row per arm against the baseline
    looks: pd.DataFrame  # night x arm: difference against the baseline with its always-valid interval
    plan: Mapping[str, Any]  # the sample the test needs: rate, compared leads, all leads, weeks
    sample_ratio_p: float
    decision: str  # one of the decisions above
    sentence: str  # the decision in words, with what to do
    winner: str | None = None  # the arm that beat the baseline (a decision of "wins")
    notes: tuple[str, ...] = field(default_factory=tuple)


def first_exposures(predictions: pd.DataFrame, arms: Sequence[ArmPlan]) -> pd.DataFrame:
    """Each lead's first prediction under the experiment: its arm, the night, and the tier and
    probability its own arm's model gave it (``arm_<arm>_tier``: a hidden arm's lead too).

    ``predictions``: the experiment's rows of every night (lead id, ``run_date``, ``arm`` and the
    arms' side columns), for the nights since the experiment started.
    """
    first = predictions.sort_values("run_date", kind="stable").drop_duplicates(s.LEAD_ID, keep="first")
    tier = pd.Series(pd.NA, index=first.index, dtype=object)
    probability = pd.Series(np.nan, index=first.index, dtype="float64")
    for arm in arms:
        mine = first[ARM] == arm.name
        tier[mine] = first.loc[mine, s.arm_column(arm.name, TIER)]
        probability[mine] = first.loc[mine, s.arm_column(arm.name, PROBABILITY)].astype("float64")
    known = first[ARM].isin([arm.name for arm in arms])
    return pd.DataFrame(
        {
            s.LEAD_ID: first[s.LEAD_ID].to_numpy(),
            ARM: first[ARM].to_numpy(),
            FIRST_SEEN: first["run_date"].to_numpy(),
            TIER: tier.to_numpy(),
            PROBABILITY: probability.to_numpy(),
        }
    )[known.to_numpy()].reset_index(drop=True)


def crm_outcomes(exposures: pd.DataFrame, outcomes: pd.DataFrame, horizon_days: int) -> pd.DataFrame:
    """``exposures`` with ``won`` (within the horizon after the exposure), its days to close and deal
    value, and ``resolved_on``: the end of that horizon, when the outcome is final either way.

    A lead counts only from the end of its horizon, even when it closed earlier. Counting leads as
    they close would count the quick wins first: the conversion of the leads closed so far runs
    far above the conversion within the horizon for months (and faster closing in one arm would
    read as more conversion). Waiting for the horizon keeps every night's figure unbiased.
    """
    closed = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    lead = exposures[s.LEAD_ID]
    closed_at = pd.to_datetime(lead.map(closed[s.CLOSED_AT]), utc=True)
    deadline = exposures[FIRST_SEEN] + pd.Timedelta(days=horizon_days)
    won = closed_at.notna() & (closed_at <= deadline) & (lead.map(closed[s.STATUS]) == s.WON)
    has_value = s.DEAL_VALUE in closed.columns
    value = lead.map(closed[s.DEAL_VALUE]) if has_value else pd.Series(np.nan, lead.index)
    days = (closed_at - exposures[FIRST_SEEN]).dt.total_seconds() / 86400.0
    return exposures.assign(
        **{
            RESOLVED_ON: deadline,
            WON: won.to_numpy(),
            DAYS_TO_CLOSE: days.where(won).clip(lower=0.0),
            DEAL_VALUE: pd.to_numeric(value, errors="coerce").where(won),
        }
    )


def flat_outcomes(exposures: pd.DataFrame, labels: pd.Series, open_nights: pd.DataFrame) -> pd.DataFrame:
    """A flat table's version of :func:`crm_outcomes`: a lead is resolved once today's file gives it
    a label, on the first night after its exposure it was no longer among the open leads scored
    (``open_nights``: lead id and ``run_date`` of every scored row). A flat table has no dates of
    closing nor deal values, so those columns are missing."""
    label = exposures[s.LEAD_ID].map(labels.groupby(level=0).first())
    nights = pd.DatetimeIndex(pd.to_datetime(open_nights["run_date"], utc=True).unique()).sort_values()
    last = pd.to_datetime(
        exposures[s.LEAD_ID].map(open_nights.groupby(s.LEAD_ID)["run_date"].max()), utc=True
    )
    after = nights.searchsorted(pd.DatetimeIndex(last), side="right")
    gone = pd.Series(nights.append(pd.DatetimeIndex([pd.NaT], tz="UTC"))[after], index=exposures.index)
    resolved = label.notna()
    return exposures.assign(
        **{
            RESOLVED_ON: pd.to_datetime(gone.where(resolved), utc=True),
            WON: (label.fillna(0).astype("int64") == 1).to_numpy() & resolved.to_numpy(),
            DAYS_TO_CLOSE: np.nan,
            DEAL_VALUE: np.nan,
        }
    )


def _rate_interval(wins: float, leads: float) -> tuple[float, float, float]:
    """The rate with its 95% Wilson interval (NaN without leads)."""
    if leads <= 0:
        return math.nan, math.nan, math.nan
    rate = wins / leads
    z2 = Z95 * Z95
    centre = (rate + z2 / (2 * leads)) / (1 + z2 / leads)
    spread = Z95 * math.sqrt(rate * (1 - rate) / leads + z2 / (4 * leads * leads)) / (1 + z2 / leads)
    return rate, max(0.0, centre - spread), min(1.0, centre + spread)


def _mean_interval(values: pd.Series) -> tuple[float, float, float]:
    values = values.dropna()
    if values.empty:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    spread = Z95 * float(values.std(ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, mean - spread, mean + spread


def resolved_by(judged: pd.DataFrame, night: pd.Timestamp) -> pd.Series:
    """Which leads' outcomes count on ``night``: exposed before it and resolved by then."""
    return (judged[FIRST_SEEN] < night) & (judged[RESOLVED_ON] <= night)


def arm_table(judged: pd.DataFrame, arms: Sequence[ArmPlan], known: pd.Series, top_tier: str) -> pd.DataFrame:
    """Per arm: leads, outcomes known (``known``: :func:`resolved_by` on the readout's night),
    conversion with its interval, the top tier's conversion and lift over the arm's whole, median
    days to close, mean deal size with its interval, revenue."""
    rows = []
    for arm in arms:
        mine = judged[ARM] == arm.name
        done = judged[mine & known]
        top = done[done[TIER] == top_tier]
        rate, low, high = _rate_interval(done[WON].sum(), len(done))
        top_rate, top_low, top_high = _rate_interval(top[WON].sum(), len(top))
        deal, deal_low, deal_high = _mean_interval(done[DEAL_VALUE])
        revenue = float(done[DEAL_VALUE].sum(min_count=1))
        rows.append(
            {
                "arm": arm.name,
                "share": arm.share,
                "show_score": arm.show_score,
                "model_version": arm.model_version,
                "leads": int(mine.sum()),
                "resolved": len(done),
                "converted": int(done[WON].sum()),
                "conversion": rate, "conversion_low": low, "conversion_high": high,
                "expected": float(done[PROBABILITY].sum()),
                "top_leads": int((judged.loc[mine, TIER] == top_tier).sum()),
                "top_resolved": len(top),
                "top_converted": int(top[WON].sum()),
                "top_conversion": top_rate, "top_conversion_low": top_low, "top_conversion_high": top_high,
                "top_lift": top_rate / rate if rate else math.nan,
                "median_days_to_close": float(done[DAYS_TO_CLOSE].median()),
                "deal_size": deal, "deal_size_low": deal_low, "deal_size_high": deal_high,
                "revenue": revenue,
                "revenue_per_lead": revenue / len(done) if len(done) else math.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def tier_table(judged: pd.DataFrame, known: pd.Series, order: Sequence[str]) -> pd.DataFrame:
    """Arm x tier (the tier at exposure): leads, outcomes known (``known``: :func:`resolved_by`),
    conversion with its interval."""
    rows = []
    for (arm, tier), group in judged.groupby([ARM, TIER], sort=False):
        done = group[known[group.index]]
        rate, low, high = _rate_interval(done[WON].sum(), len(done))
        rows.append(
            {"arm": arm, "tier": tier, "leads": len(group), "resolved": len(done),
             "converted": int(done[WON].sum()), "conversion": rate, "conversion_low": low,
             "conversion_high": high}
        )  # fmt: skip
    table = pd.DataFrame(rows, columns=["arm", "tier", "leads", "resolved", "converted", "conversion",
                                        "conversion_low", "conversion_high"])  # fmt: skip
    rank = {tier: i for i, tier in enumerate(order)}
    return table.sort_values(["arm", "tier"], key=lambda c: c.map(rank) if c.name == "tier" else c,
                             ignore_index=True)  # fmt: skip


def _compared(judged: pd.DataFrame, compare: str, top_tier: str) -> pd.DataFrame:
    return judged if compare == "all" else judged[judged[TIER] == top_tier]


def _counts_by_night(
    judged: pd.DataFrame, arm: str, nights: Sequence[pd.Timestamp]
) -> tuple[np.ndarray, ...]:
    """Cumulative (wins, outcomes) of ``arm`` on each night: a lead's outcome resolves after its
    exposure, so it counts on every night from ``resolved_on`` (:func:`resolved_by`)."""
    mine = judged[(judged[ARM] == arm) & judged[RESOLVED_ON].notna()]
    order = np.argsort(mine[RESOLVED_ON].to_numpy(), kind="stable")
    resolved_on = mine[RESOLVED_ON].to_numpy()[order]
    won = np.concatenate([[0], np.cumsum(mine[WON].to_numpy(dtype=np.int64)[order])])
    at = np.searchsorted(resolved_on, pd.DatetimeIndex(nights).to_numpy(), side="right")
    return won[at].astype(np.float64), at.astype(np.float64)


def comparison_looks(
    judged: pd.DataFrame, baseline: str, arm: str, nights: Sequence[pd.Timestamp], tau: float, alpha: float
) -> tuple[sequential.Looks, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The always-valid test of ``arm`` against ``baseline`` at each night, and the counts it read."""
    wins_a, leads_a = _counts_by_night(judged, baseline, nights)
    wins_b, leads_b = _counts_by_night(judged, arm, nights)
    return (
        sequential.sequential_looks(wins_a, leads_a, wins_b, leads_b, tau, alpha),
        wins_a,
        leads_a,
        wins_b,
        leads_b,
    )


def _plan(
    compared: pd.DataFrame, judged: pd.DataFrame, baseline: ArmPlan, other: ArmPlan,
    settings: ReadoutSettings, intake_per_week: float | None, horizon_days: int | None,
) -> dict[str, Any]:  # fmt: skip
    """The sample the test needs to find ``min_lift`` with ``power``: from the baseline arm's
    expected rate (its calibrated probabilities, known on the first night), the compared share of
    leads and the intake of new leads per week."""
    expected = compared.loc[compared[ARM] == baseline.name, PROBABILITY].dropna()
    rate = float(expected.mean()) if len(expected) else math.nan
    share = len(compared) / len(judged) if len(judged) else math.nan
    plan: dict[str, Any] = {"rate": rate, "lift": settings.min_lift, "power": settings.power,
                            "alpha": settings.alpha, "compared_share": share}  # fmt: skip
    if not (0.0 < rate < 1.0 and share > 0.0):
        return {**plan, "compared_leads": None, "leads": None, "weeks": None}
    pair = baseline.share + other.share
    needed = sequential.planned_leads(
        rate, settings.min_lift, baseline.share, other.share, settings.alpha, settings.power
    )
    leads = math.ceil(needed / share / pair)  # every arm's leads, at the experiment's shares
    weeks = None
    if intake_per_week:
        waiting = max(leads - len(judged), 0) / intake_per_week
        weeks = math.ceil(waiting + (horizon_days or 0) / 7.0)
    return {**plan, "compared_leads": needed, "leads": leads, "weeks": weeks}


def experiment_readout(
    judged: pd.DataFrame,
    arms: Sequence[ArmPlan],
    nights: Sequence[pd.Timestamp],
    settings: ReadoutSettings,
    *,
    experiment: str,
    top_tier: str,
    tier_order: Sequence[str],
    horizon_days: int | None,
    intake_per_week: float | None,
) -> Readout:
    """The readout on the last of ``nights`` (the scoring runs since the start, oldest first).

    ``judged``: :func:`crm_outcomes` or :func:`flat_outcomes` of :func:`first_exposures`.
    """
    if not arms or len(arms) < 2:
        raise ReadoutError(f"experiment {experiment} has fewer than two arms: nothing to compare")
    if not len(nights):
        raise ReadoutError(f"experiment {experiment} has no scoring run to read")
    as_of, baseline = pd.Timestamp(nights[-1]), arms[0]
    compared = _compared(judged, settings.compare, top_tier)
    counts = judged[ARM].value_counts().reindex([a.name for a in arms], fill_value=0).to_numpy()
    srm = sequential.sample_ratio_p_value(counts, np.array([a.share for a in arms]))
    comparisons, looks = [], []
    for other in arms[1:]:
        plan = _plan(compared, judged, baseline, other, settings, intake_per_week, horizon_days)
        tau = settings.min_lift * plan["rate"] if math.isfinite(plan["rate"]) else 0.01
        test, wins_a, leads_a, wins_b, leads_b = comparison_looks(
            compared, baseline.name, other.name, nights, max(tau, 1e-6), settings.alpha
        )
        difference, p_value, low, high = test.last()
        rate_a = wins_a[-1] / leads_a[-1] if leads_a[-1] else math.nan
        rate_b = wins_b[-1] / leads_b[-1] if leads_b[-1] else math.nan
        comparisons.append(
            {
                "arm": other.name, "baseline": baseline.name,
                "baseline_leads": int(leads_a[-1]), "baseline_converted": int(wins_a[-1]),
                "baseline_rate": rate_a,
                "leads": int(leads_b[-1]), "converted": int(wins_b[-1]), "rate": rate_b,
                "difference": difference, "low": low, "high": high, "p_value": p_value,
                "lift": difference / rate_a if rate_a else math.nan,
                "lift_low": low / rate_a if rate_a else math.nan,
                "lift_high": high / rate_a if rate_a else math.nan,
                "tau": tau, **{f"plan_{k}": v for k, v in plan.items()},
            }
        )  # fmt: skip
        looks.append(
            pd.DataFrame(
                {
                    "night": list(nights),
                    "arm": other.name,
                    "difference": test.difference,
                    "low": test.low,
                    "high": test.high,
                    "p_value": test.p_value,
                    "baseline_resolved": leads_a,
                    "baseline_converted": wins_a,
                    "resolved": leads_b,
                    "converted": wins_b,
                }
            )
        )
    table = pd.DataFrame(comparisons)
    known = resolved_by(judged, as_of)
    decision, sentence, winner = decide(table, srm, settings, experiment, compared_words(settings, top_tier))
    return Readout(
        experiment=experiment, as_of=as_of, compare=settings.compare, top_tier=top_tier,
        baseline=baseline.name, arms=arm_table(judged, arms, known, top_tier),
        tiers=tier_table(judged, known, tier_order), comparisons=table,
        looks=pd.concat(looks, ignore_index=True), plan=_first_plan(table),
        sample_ratio_p=srm, decision=decision, sentence=sentence, winner=winner,
    )  # fmt: skip


def _first_plan(table: pd.DataFrame) -> dict[str, Any]:
    row = table.iloc[0]
    return {k.removeprefix("plan_"): json_value(row[k]) for k in table.columns if k.startswith("plan_")}


def json_value(value: Any) -> Any:
    """A figure of the readout as a plain JSON value: NumPy scalars unwrapped, timestamps as ISO
    text, NaN and infinities as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def compared_words(settings: ReadoutSettings, top_tier: str) -> str:
    return "leads" if settings.compare == "all" else f"tier {top_tier} leads"


def decide(
    comparisons: pd.DataFrame, srm: float, settings: ReadoutSettings, experiment: str, compared: str
) -> tuple[str, str, str | None]:
    """(decision, sentence, winning arm) of the comparisons against the baseline.

    The order matters: a sample ratio mismatch voids every comparison; a significant difference
    ends the experiment whichever way; a difference bounded inside the lift looked for, or the
    planned sample reached without a verdict, is "no difference"; too few outcomes is too early.
    """
    if srm < settings.srm_alpha:
        return (
            CHECK_ASSIGNMENT,
            (
                f"Check the assignment: the arms' lead counts are not the shares configured (sample ratio "
                f"p = {srm:.2g}); a lost night of scores or a changed salt makes every comparison "
                "meaningless. "
                "Do not act on this readout."
            ),
            None,
        )
    rows = list(comparisons.itertuples(index=False))
    ready = [row for row in rows if math.isfinite(row.difference)]
    if not ready:
        needed = rows[0].plan_compared_leads
        weeks = rows[0].plan_weeks
        return (
            TOO_EARLY,
            (
                f"Keep running: too few outcomes yet among {compared} to compare the arms"
                + (f" (about {needed:,} with outcomes needed" if needed else "")
                + (f", about {weeks:,} weeks from the start)" if needed and weeks else ")" if needed else "")
                + "."
            ),
            None,
        )
    significant = [row for row in ready if row.p_value <= settings.alpha]
    winners = sorted((row for row in significant if row.difference > 0), key=lambda r: -r.difference)
    if winners:
        best = winners[0]
        return (
            WINS,
            (
                f"{best.arm} wins: its {compared} converted {best.rate:.1%} against {best.baseline}'s "
                f"{best.baseline_rate:.1%} ({best.lift:+.0%}, always-valid {1 - settings.alpha:.0%} interval "
                f"{best.lift_low:+.0%} to "
                f"{best.lift_high:+.0%}, p = {best.p_value:.3f}). Promote it with "
                f"`leadml-promote experiment={experiment}`."
            ),
            best.arm,
        )
    if significant:
        worst = significant[0]
        return (
            LOSES,
            (
                f"{worst.baseline} wins: {worst.arm}'s {compared} converted {worst.rate:.1%} against "
                f"{worst.baseline_rate:.1%} ({worst.lift:+.0%}, interval {worst.lift_low:+.0%} to "
                f"{worst.lift_high:+.0%}, p = {worst.p_value:.3f}). Stop the experiment and keep "
                f"{worst.baseline}."
            ),
            None,
        )
    bounded = all(
        max(abs(row.low), abs(row.high)) < settings.min_lift * row.baseline_rate for row in ready
    ) and len(ready) == len(rows)
    reached = all(
        row.plan_compared_leads and row.leads + row.baseline_leads >= row.plan_compared_leads for row in rows
    )
    if bounded or reached:
        why = (
            f"any difference is smaller than the {settings.min_lift:.0%} lift the experiment looks for"
            if bounded
            else "the planned sample is reached without a difference the test can tell from chance"
        )
        return NO_DIFFERENCE, f"No difference: {why}. Stop the experiment; keep {rows[0].baseline}.", None
    row = ready[0]
    left = (row.plan_compared_leads or 0) - row.leads - row.baseline_leads
    return (
        KEEP_RUNNING,
        (
            f"Keep running: {row.arm} against {row.baseline} is {row.lift:+.0%} so far (interval "
            f"{row.lift_low:+.0%} to {row.lift_high:+.0%}), not yet told from chance"
            + (
                f"; about {left:,} more {compared} with outcomes to reach the planned sample"
                if left > 0
                else ""
            )
            + "."
        ),
        None,
    )
