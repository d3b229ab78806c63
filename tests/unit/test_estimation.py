"""Performance before outcomes (leadml.modelling.estimation): exact against brute force and
against labels drawn from the probabilities; the check against the test window."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leadml.data import schema as s
from leadml.modelling.estimation import (
    average_ranks,
    check_estimate,
    estimate_performance,
    estimate_scored_run,
    expected_roc_auc,
    realised_roc_auc,
    recorded_test_roc_auc,
    roc_auc_interval,
)
from leadml.modelling.evaluate import TierSettings
from leadml.modelling.scorer import PROBABILITY
from leadml.reporting.leadership import estimated_against_realised, prediction_outcomes


def _brute_force_auc(p: np.ndarray, scores: np.ndarray) -> float:
    """E[concordant pairs] / E[positive x negative pairs], pair by pair."""
    concordant = pairs = 0.0
    for i, j in itertools.permutations(range(len(p)), 2):
        weight = p[i] * (1 - p[j])  # i converts, j does not
        pairs += weight
        concordant += weight * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
    return concordant / pairs


def simulated_roc_aucs(
    probabilities: np.ndarray,
    scores: np.ndarray | None = None,
    draws: int = 400,
    seed: int = 5,
) -> np.ndarray:
    """The realised ROC AUC of ``draws`` sets of outcomes drawn from ``probabilities`` (seeded): the
    reference the estimate and its interval are checked against.

    The scores' ranks are fixed, so each draw's AUC is one product with its outcome vector
    (Mann-Whitney U); draws in blocks keep memory at 20 columns. A draw with no
    converter or no non-converter has no AUC and is dropped.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    ranks = average_ranks(p if scores is None else np.asarray(scores, dtype=np.float64))
    rng = np.random.default_rng(seed)
    aucs = []
    for start in range(0, draws, 20):
        width = min(20, draws - start)
        converted = rng.random((width, len(p))) < p  # one row per draw
        positives = converted.sum(axis=1).astype(np.float64)
        negatives = len(p) - positives
        rank_sums = converted @ ranks
        with np.errstate(divide="ignore", invalid="ignore"):
            aucs.append((rank_sums - positives * (positives + 1) / 2) / (positives * negatives))
    found = np.concatenate(aucs) if aucs else np.empty(0)
    return found[np.isfinite(found)]


@pytest.mark.parametrize("seed", range(6))
def test_expected_auc_is_exact_against_every_pair(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.round(rng.beta(1, 4, size=11), 1)  # rounded: tied scores, and probabilities of 0
    scores = np.round(rng.random(11), 1)
    assert expected_roc_auc(p) == pytest.approx(_brute_force_auc(p, p), abs=1e-12)
    assert expected_roc_auc(p, scores) == pytest.approx(_brute_force_auc(p, scores), abs=1e-12)


def test_expected_auc_of_two_leads_and_of_no_pairs() -> None:
    assert expected_roc_auc(np.array([0.9, 0.1])) == pytest.approx(0.81 / (0.81 + 0.01))
    assert np.isnan(expected_roc_auc(np.array([0.4])))
    assert np.isnan(expected_roc_auc(np.array([1.0, 1.0, 1.0])))  # nobody can fail to convert


def test_realised_auc_agrees_with_scikit_learn_ties_included() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 2)
    converted = rng.random(500) < scores
    assert realised_roc_auc(converted, scores) == pytest.approx(roc_auc_score(converted, scores), abs=1e-12)
    assert np.isnan(realised_roc_auc(np.zeros(5, dtype=bool), scores[:5]))
    assert list(average_ranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]


def test_labels_drawn_from_the_probabilities_average_to_the_estimate() -> None:
    """The realised AUC of outcomes drawn from calibrated probabilities centres on the estimate;
    ratio of expectations against expectation of the ratio: a gap far below the draws' spread."""
    rng = np.random.default_rng(11)
    p = rng.beta(0.8, 6, size=3000)
    realised = simulated_roc_aucs(p, draws=400, seed=5)
    estimate = expected_roc_auc(p)
    assert len(realised) == 400
    assert abs(realised.mean() - estimate) < 3 * realised.std() / np.sqrt(len(realised))
    assert abs(realised.mean() - estimate) < 0.002
    # the draws' own AUCs, by scikit-learn, are what simulated_roc_aucs says they are
    again = np.random.default_rng(5).random((20, len(p))) < p
    assert realised[:20] == pytest.approx([roc_auc_score(row, p) for row in again], abs=1e-12)


@pytest.mark.parametrize(("leads", "shape"), [(300, (0.8, 6)), (3000, (0.8, 6)), (3000, (2, 2))])
def test_the_interval_holds_the_simulated_outcomes_auc(leads: int, shape: tuple[float, float]) -> None:
    """The delta method's interval against the quantiles of 400 simulated outcome draws."""
    p = np.random.default_rng(leads).beta(*shape, size=leads)
    simulated = simulated_roc_aucs(p, draws=400, seed=1)
    low, high = roc_auc_interval(p)
    width = np.quantile(simulated, 0.975) - np.quantile(simulated, 0.025)
    assert high - low == pytest.approx(width, rel=0.15)
    assert low == pytest.approx(np.quantile(simulated, 0.025), abs=0.15 * width)
    assert high == pytest.approx(np.quantile(simulated, 0.975), abs=0.15 * width)


def test_estimate_of_a_run_per_tier_and_its_interval() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(1, 5, size=2000)
    settings = TierSettings(method="probability", thresholds={"A": 0.4, "B": 0.2, "C": 0.05})
    estimate = estimate_scored_run(p, settings)
    assert estimate.top_tier == "A"
    assert estimate.top_tier_leads == int((p >= 0.4).sum())
    assert estimate.top_tier_precision == pytest.approx(p[p >= 0.4].mean())
    assert list(estimate.conversions_by_tier) == ["A", "B", "C", "D"]
    assert sum(estimate.conversions_by_tier.values()) == pytest.approx(p.sum())
    assert sum(estimate.share_by_tier.values()) == pytest.approx(1.0)
    assert estimate.roc_auc_low < estimate.roc_auc < estimate.roc_auc_high
    assert estimate.roc_auc_high - estimate.roc_auc_low < 0.1
    # seeded: the same scores give the same interval
    assert estimate_scored_run(p, settings) == estimate
    record = estimate.record()
    assert record["roc_auc_interval"] == [estimate.roc_auc_low, estimate.roc_auc_high]


def test_an_empty_top_tier_and_an_empty_run_have_no_figures() -> None:
    p = np.array([0.01, 0.02, 0.03])
    estimate = estimate_performance(p, np.array(["C", "C", "D"]), ["A", "B", "C", "D"])
    assert estimate.top_tier == "C"  # the highest tier that holds a lead
    empty = estimate_performance(np.empty(0), np.empty(0, dtype=object), ["A", "D"])
    assert empty.top_tier is None and np.isnan(empty.roc_auc) and np.isnan(empty.top_tier_precision)
    assert empty.record()["roc_auc"] is None


def test_the_check_warns_only_past_the_allowed_drop() -> None:
    assert check_estimate(0.80, 0.84, 0.05).warning is None
    warned = check_estimate(0.78, 0.84, 0.05)
    assert warned.drop == pytest.approx(0.06)
    assert (
        "0.780" in warned.warning
        and "0.840" in warned.warning
        and "estimate_warning_drop=0.05" in warned.warning
    )
    assert check_estimate(0.50, 0.84, None).warning is None  # null: never warns
    unknown = check_estimate(0.5, None, 0.05)
    assert unknown.warning is None and unknown.drop is None
    assert recorded_test_roc_auc({"test_roc_auc": 0.81}) == 0.81
    assert recorded_test_roc_auc({"refit": True}) is None
    assert recorded_test_roc_auc(None) is None


def test_the_report_compares_runs_whose_outcomes_are_all_in() -> None:
    """A run whose horizon passed is shown with its realised AUC; one with leads still open is not."""
    rng = np.random.default_rng(4)
    runs = [pd.Timestamp("2025-01-01", tz="UTC"), pd.Timestamp("2025-03-01", tz="UTC")]
    leads = [f"L{i}" for i in range(400)]
    p = rng.beta(1, 4, size=400)
    won = rng.random(400) < p
    earlier = pd.concat(
        [pd.DataFrame({s.LEAD_ID: leads, PROBABILITY: p, "run_date": day}) for day in runs], ignore_index=True
    )
    outcomes = pd.DataFrame(
        {
            s.LEAD_ID: [lead for lead, w in zip(leads, won, strict=True) if w],
            s.STATUS: s.WON,
            s.CLOSED_AT: pd.Timestamp("2025-02-01", tz="UTC"),
        }
    )
    as_of = pd.Timestamp("2025-04-15", tz="UTC")  # the first run's 90 days passed, not the second's
    settings = TierSettings(method="probability", thresholds={"A": 0.4, "B": 0.2, "C": 0.05})
    estimate = estimate_scored_run(p, settings)
    records = {
        runs[0]: {
            "estimated": {**estimate.record(), "test_roc_auc": 0.9, "warning": "estimated ROC AUC fell"},
            "thresholds": {"A": 0.4, "B": 0.2, "C": 0.05},
            "floor_tier": "D",
        }
    }
    judged = prediction_outcomes(earlier, as_of, outcomes, 90)
    table = estimated_against_realised(judged, records)
    assert list(table["run_date"]) == [runs[0]]
    row = table.iloc[0]
    assert row["estimated_roc_auc"] == pytest.approx(estimate.roc_auc)
    assert row["realised_roc_auc"] == pytest.approx(roc_auc_score(won, p))
    assert row["realised_precision"] == pytest.approx(won[p >= 0.4].mean())
    assert row["converted"] == won.sum() and row["warned"]


def test_a_run_under_an_experiment_is_judged_per_arm_by_each_arms_own_model() -> None:
    """One row per arm: its leads, the probability its own model gave them (a holdout's, blank to
    sales, too), against the arm's estimate; the visible probabilities of other arms never mix in."""
    rng = np.random.default_rng(7)
    n, run = 600, pd.Timestamp("2025-01-01", tz="UTC")
    champion, points = rng.beta(1, 4, size=n), rng.uniform(0.05, 0.4, size=n)
    won = rng.random(n) < champion
    arm = np.where(np.arange(n) % 3 == 0, "points", np.where(np.arange(n) % 3 == 1, "champion", "holdout"))
    own = np.where(arm == "points", points, champion)
    visible = np.where(arm == "holdout", np.nan, own)
    earlier = pd.DataFrame(
        {s.LEAD_ID: [f"L{i}" for i in range(n)], PROBABILITY: visible, "run_date": run, s.ARM: arm,
         s.OWN_ARM_PROBABILITY: own}
    )  # fmt: skip
    outcomes = pd.DataFrame(
        {
            s.LEAD_ID: earlier[s.LEAD_ID][won],
            s.STATUS: s.WON,
            s.CLOSED_AT: pd.Timestamp("2025-02-01", tz="UTC"),
        }
    )
    thresholds = {"A": 0.3, "B": 0.15, "C": 0.05}
    settings = TierSettings(method="probability", thresholds=thresholds)
    arms = []
    for name in ("champion", "points", "holdout"):
        mine = arm == name
        estimate = estimate_scored_run(own[mine], settings)
        arms.append({"name": name, "thresholds": thresholds, "estimated": estimate.record()})
    records = {run: {"estimated": {"roc_auc": 0.99}, "thresholds": thresholds, "experiment": {"arms": arms}}}
    judged = prediction_outcomes(earlier, pd.Timestamp("2025-06-01", tz="UTC"), outcomes, 90)
    table = estimated_against_realised(judged, records)
    assert table[s.ARM].tolist() == ["champion", "points", "holdout"]
    for row, described in zip(table.to_dict("records"), arms, strict=True):
        mine = arm == row[s.ARM]
        assert row["leads"] == mine.sum() and row["converted"] == won[mine].sum()
        assert row["estimated_roc_auc"] == pytest.approx(described["estimated"]["roc_auc"])
        assert row["realised_roc_auc"] == pytest.approx(roc_auc_score(won[mine], own[mine]))
        assert row["realised_precision"] == pytest.approx(won[mine & (own >= 0.3)].mean())
    # a run without an experiment keeps one row, with no arm
    plain = prediction_outcomes(
        earlier[[s.LEAD_ID, "run_date"]].assign(**{PROBABILITY: champion}),
        pd.Timestamp("2025-06-01", tz="UTC"), outcomes, 90,
    )  # fmt: skip
    table = estimated_against_realised(plain, {run: {"thresholds": thresholds}})
    assert len(table) == 1 and table[s.ARM].iloc[0] is None
    assert table["realised_roc_auc"].iloc[0] == pytest.approx(roc_auc_score(won, champion))
