"""The experiment readout (leadml.reporting.readout) on simulated experiments with a known truth.

Each simulation is an experiment of weekly scoring runs: new leads join an arm at random by the
shares, a twentieth of them in tier A; a lead's outcome arrives on a day within the horizon. The
acceptance of issue 23: over 200 A/A experiments the readout declares a winner at most as often as
its stated level, read every week; with a challenger that truly converts 20% more tier A leads it
finds the difference with at least its stated power once the planned sample has outcomes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.adapters.layout import FLAT_TABLE, SCORING_RUN_RECORD
from leadml.data import schema as s
from leadml.data.features import LABEL
from leadml.modelling import sequential
from leadml.reporting import readout as r
from leadml.scoring.experiment import ARM, EXPERIMENT, side_column
from leadml.stages.experiment import experiment_stage

ARMS = (
    r.ArmPlan("champion", 0.5, True, "models:/m@champion", "1"),
    r.ArmPlan("challenger", 0.5, True, "models:/m@challenger", "2"),
)
HORIZON = 56
START = pd.Timestamp("2026-01-05", tz="UTC")
TOP_SHARE, TOP_RATE, OTHER_RATE = 0.05, 0.30, 0.04
SIMULATIONS = 200


def simulate(
    rng: np.random.Generator, leads: int, weeks: int, lift: float, settle: bool = True
) -> tuple[pd.DataFrame, list[pd.Timestamp]]:
    """``leads`` new leads spread over ``weeks`` weekly runs (and runs until every outcome is in
    when ``settle``); the challenger's tier A leads convert ``1 + lift`` times as often."""
    arm = np.where(rng.random(leads) < 0.5, "champion", "challenger")
    top = rng.random(leads) < TOP_SHARE
    rate = np.where(top, TOP_RATE, OTHER_RATE) * np.where(top & (arm == "challenger"), 1.0 + lift, 1.0)
    won = rng.random(leads) < rate
    first_seen = START + pd.to_timedelta(7 * rng.integers(0, weeks, leads), unit="D")
    days = rng.uniform(1.0, HORIZON, leads)
    judged = pd.DataFrame(
        {
            s.LEAD_ID: np.arange(leads),
            r.ARM: arm,
            r.FIRST_SEEN: first_seen,
            r.TIER: np.where(top, "A", "C"),
            r.PROBABILITY: np.where(top, TOP_RATE, OTHER_RATE),  # calibrated: the champion's true rate
            r.RESOLVED_ON: first_seen + pd.Timedelta(days=HORIZON),
            r.WON: won,
            r.DAYS_TO_CLOSE: np.where(won, days, np.nan),
            r.DEAL_VALUE: np.where(won, rng.lognormal(9.0, 0.5, leads), np.nan),
        }
    )
    extra = math.ceil(HORIZON / 7) + 1 if settle else 0
    nights = [START + pd.Timedelta(days=7 * week) for week in range(weeks + extra)]
    return judged, nights


def read(judged: pd.DataFrame, nights: list[pd.Timestamp], **settings: object) -> r.Readout:
    return r.experiment_readout(
        judged, ARMS, nights, r.ReadoutSettings(**settings), experiment="test", top_tier="A",
        tier_order=["A", "B", "C", "D"], horizon_days=HORIZON, intake_per_week=None,
    )  # fmt: skip


def test_an_aa_experiment_read_every_week_rarely_declares_a_winner() -> None:
    rng = np.random.default_rng(23)
    readouts = [read(*simulate(rng, 20_000, 26, lift=0.0), min_lift=0.2) for _ in range(SIMULATIONS)]
    false_positives = sum(result.decision in (r.WINS, r.LOSES) for result in readouts) / SIMULATIONS
    assert false_positives <= 0.05
    # the same weekly looks read with a fixed-sample z-test at 5% declare far more winners: peeking
    # is what the sequential test guards against (and it is not blind: it finds the planted lift)
    naive = sum(_z_test_ever_significant(result.looks) for result in readouts) / SIMULATIONS
    assert naive > 3 * 0.05


def _z_test_ever_significant(looks: pd.DataFrame) -> bool:
    """Whether a pooled two-proportion z-test at 5% is significant at any of the looks."""
    ready = looks[looks["resolved"].gt(0) & looks["baseline_resolved"].gt(0)]
    n_a, n_b = ready["baseline_resolved"], ready["resolved"]
    pooled = (ready["baseline_converted"] + ready["converted"]) / (n_a + n_b)
    z = (ready["converted"] / n_b - ready["baseline_converted"] / n_a) / np.sqrt(
        pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    )
    return bool((np.abs(z) > 1.959964).any())


def test_a_planted_twenty_percent_lift_is_found_with_the_stated_power() -> None:
    rng = np.random.default_rng(24)
    plan = read(*simulate(rng, 1_000, 4, lift=0.2), min_lift=0.2, power=0.8).plan
    assert plan["rate"] == pytest.approx(TOP_RATE)
    needed = plan["leads"]  # every lead, at tier A's share: about 37,000
    assert 0.8 * plan["compared_leads"] / TOP_SHARE < needed < 1.25 * plan["compared_leads"] / TOP_SHARE
    found = 0
    for _ in range(SIMULATIONS):
        verdict = read(*simulate(rng, needed, 26, lift=0.2), min_lift=0.2, power=0.8)
        found += verdict.decision == r.WINS and verdict.winner == "challenger"
    # the stated power less two standard errors of 200 simulations
    assert found / SIMULATIONS >= 0.8 - 2 * math.sqrt(0.8 * 0.2 / SIMULATIONS)


def test_the_interval_of_the_lift_holds_the_planted_one() -> None:
    judged, nights = simulate(np.random.default_rng(5), 150_000, 26, lift=0.2)
    row = read(judged, nights, min_lift=0.2).comparisons.iloc[0]
    assert row.lift_low <= 0.2 <= row.lift_high and row.low > 0


def test_the_arm_table_counts_what_a_direct_computation_counts() -> None:
    judged, nights = simulate(np.random.default_rng(7), 5_000, 14, lift=0.0, settle=False)
    result = read(judged, nights)
    as_of = nights[-1]
    known = (judged[r.FIRST_SEEN] < as_of) & (judged[r.RESOLVED_ON] <= as_of)
    for _, row in result.arms.iterrows():
        mine = judged[(judged[r.ARM] == row.arm) & known]
        assert row.resolved == len(mine) and row.converted == mine[r.WON].sum()
        assert row.revenue == pytest.approx(mine[r.DEAL_VALUE].sum())
        top = mine[mine[r.TIER] == "A"]
        assert row.top_conversion == pytest.approx(top[r.WON].mean())
        assert row.conversion_low < row.conversion < row.conversion_high
    assert result.looks["night"].nunique() == len(nights)
    assert set(result.tiers["tier"]) == {"A", "C"}


def test_too_few_outcomes_is_too_early_with_the_sample_to_wait_for() -> None:
    judged, nights = simulate(np.random.default_rng(1), 400, 1, lift=0.0, settle=False)
    result = read(judged, nights)
    assert result.decision == r.TOO_EARLY
    assert f"{result.plan['compared_leads']:,}" in result.sentence


def test_a_sample_ratio_mismatch_voids_the_readout() -> None:
    judged, nights = simulate(np.random.default_rng(2), 20_000, 10, lift=0.5)
    lost = judged[~((judged[r.ARM] == "challenger") & (judged[r.FIRST_SEEN] == nights[3]))]  # a lost night
    result = read(lost, nights)
    assert result.decision == r.CHECK_ASSIGNMENT and result.winner is None
    assert result.sample_ratio_p < 0.001


def test_crm_outcomes_judge_a_lead_within_the_horizon_of_its_exposure() -> None:
    night = pd.Timestamp("2026-03-01", tz="UTC")
    exposures = pd.DataFrame(
        {s.LEAD_ID: [1, 2, 3, 4], r.ARM: "champion", r.FIRST_SEEN: night, r.TIER: "A", r.PROBABILITY: 0.5}
    )
    outcomes = pd.DataFrame(
        {
            s.LEAD_ID: [1, 2, 3],
            s.STATUS: [s.WON, s.WON, "lost"],
            s.CLOSED_AT: pd.to_datetime(["2026-03-11", "2026-08-01", "2026-03-05"], utc=True),
            s.DEAL_VALUE: [1000.0, 5000.0, np.nan],
        }
    )
    judged = r.crm_outcomes(exposures, outcomes, horizon_days=30).set_index(s.LEAD_ID)
    assert judged[r.WON].tolist() == [True, False, False, False]  # lead 2 won after its horizon
    assert judged.loc[1, r.DAYS_TO_CLOSE] == 10 and judged.loc[1, r.DEAL_VALUE] == 1000
    # every outcome counts from the end of its horizon, won or lost, closed early or not
    assert (judged[r.RESOLVED_ON] == night + pd.Timedelta(days=30)).all()
    assert not r.resolved_by(judged, pd.Timestamp("2026-03-30", tz="UTC")).any()
    assert r.resolved_by(judged, pd.Timestamp("2026-03-31", tz="UTC")).all()


def test_flat_outcomes_resolve_a_lead_the_night_it_left_the_open_leads() -> None:
    nights = pd.to_datetime(["2026-01-01", "2026-01-08", "2026-01-15"], utc=True)
    open_rows = pd.DataFrame({s.LEAD_ID: [1, 2, 1, 2, 2], "run_date": nights[[0, 0, 1, 1, 2]]})
    exposures = pd.DataFrame(
        {s.LEAD_ID: [1, 2], r.ARM: "champion", r.FIRST_SEEN: nights[0], r.TIER: "A", r.PROBABILITY: 0.5}
    )
    judged = r.flat_outcomes(exposures, pd.Series([1], index=[1]), open_rows)
    assert judged[r.RESOLVED_ON].iloc[0] == nights[2] and pd.isna(judged[r.RESOLVED_ON].iloc[1])
    assert judged[r.WON].tolist() == [True, False]


def test_planned_leads_shrink_with_the_lift_and_grow_with_the_power() -> None:
    small = sequential.planned_leads(0.3, 0.2, 0.5, 0.5, 0.05, 0.8)
    assert sequential.planned_leads(0.3, 0.1, 0.5, 0.5, 0.05, 0.8) > 3 * small
    assert sequential.planned_leads(0.3, 0.2, 0.5, 0.5, 0.05, 0.9) > small
    chance = sequential.detection_chance(0.3, 0.36, small, 0.5, 0.5, 0.06, 0.05)
    assert 0.8 <= chance < 0.81


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"compare": "best"}, "readout.test.compare"),
        ({"alpha": 1.5}, "readout.test.alpha"),
        ({"min_lift": 0}, "readout.test.min_lift"),
    ],
)
def test_a_bad_setting_names_its_key(settings: dict[str, object], key: str) -> None:
    with pytest.raises(r.ReadoutError, match=key):
        r.ReadoutSettings.from_mapping(settings)


def _flat_night(folder: Path, night: str, leads: pd.DataFrame) -> None:
    """One scored partition of a flat table under a two-arm experiment, with its run record."""
    partition = folder / f"as_of={night}"
    partition.mkdir(parents=True)
    leads.to_parquet(partition / "part-0.parquet")
    arms = [
        {"name": arm, "model": arm, "model_uri": f"models:/flat@{arm}", "model_version": version,
         "share": 0.5, "show_score": True}
        for arm, version in (("champion", "1"), ("challenger", "2"))
    ]  # fmt: skip
    record = {"experiment": {"name": "flat_test", "salt": "flat_test", "started": None, "arms": arms},
              "thresholds": {"A": 0.5, "B": 0.2}, "floor_tier": "D"}  # fmt: skip
    (partition / SCORING_RUN_RECORD).write_text(json.dumps(record))


def test_a_flat_table_is_read_from_its_nights_and_labels(tmp_path: Path) -> None:
    """A flat export has no closing dates: a lead resolves the night it left the open leads with a
    label in today's file. Two arms, four weekly nights; every lead of the first night leaves after
    it, nine in ten tier A leads of the challenger converted against three in ten elsewhere."""
    rng = np.random.default_rng(3)
    ids = np.arange(4_000)
    arm = np.where(rng.random(len(ids)) < 0.5, "champion", "challenger")
    tier = np.where(rng.random(len(ids)) < 0.2, "A", "C")
    rows = pd.DataFrame({s.LEAD_ID: ids, ARM: arm, EXPERIMENT: "flat_test", "tier": tier, "probability": 0.3})
    for name in ("champion", "challenger"):
        rows[side_column(name, "tier")] = tier
        rows[side_column(name, "probability")] = np.where(tier == "A", 0.5, 0.1)
    scored = tmp_path / "scored"
    first, later = rows.iloc[:2_000], rows.iloc[2_000:]
    _flat_night(scored, "2026-01-05", rows)
    for night in ("2026-01-12", "2026-01-19", "2026-01-26"):
        _flat_night(scored, night, later)
    planted = (first[ARM] == "challenger") & (first["tier"] == "A")
    converted = rng.random(2_000) < np.where(planted, 0.9, 0.3)
    interim = tmp_path / "interim"
    interim.mkdir()
    labels = pd.concat(
        [first[[s.LEAD_ID]].assign(converted=converted), later[[s.LEAD_ID]].assign(converted=None)]
    )
    labels.rename(columns={"converted": LABEL}).to_parquet(interim / f"{FLAT_TABLE}.parquet")
    cfg = {
        "data": {"kind": "flat"},
        "mlflow": {"registered_model": "flat"},
        "experiment": {"name": "none"},
        "readout": {"as_of": "latest", "scored_dir": str(scored), "interim_dir": str(interim),
                    "output_dir": str(tmp_path / "reports"), "track": False, "promote": False,
                    "test": {"compare": "top_tier"}},
    }  # fmt: skip
    result = experiment_stage(cfg, tmp_path)
    arms = result.readout.arms.set_index("arm")
    mine = first[first[ARM] == "challenger"]
    assert arms.loc["challenger", "resolved"] == len(mine)  # resolved on the second night
    assert arms.loc["challenger", "top_conversion"] == converted[planted.to_numpy()].mean() > 0.8
    assert arms.loc["champion", "resolved"] == (first[ARM] == "champion").sum()
    assert np.isnan(arms.loc["champion", "median_days_to_close"])  # a flat table has no closing date
    assert result.readout.decision == r.WINS and result.readout.winner == "challenger"
    assert result.run_id is None and result.html.exists()
    assert result.readout.plan["weeks"] is None or result.readout.plan["weeks"] > 0
