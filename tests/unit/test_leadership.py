"""The leadership report's pure parts: points from the training base rate, the page's table, the
rounded CSV and the lead mix in words (the page itself is driven in tests/system/test_report.py)."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from jinja2.utils import htmlsafe_json_dumps

from leadml.modelling.drift import reference_profile
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY
from leadml.reporting.lead_mix import lead_mix_shift
from leadml.reporting.leadership import (
    BASE_LABEL,
    POINT_COLUMNS,
    REASON_COLUMNS,
    RISK_COLUMNS,
    base_rate,
    logit,
    page_table,
    ranked_csv,
    reason_points,
    shared_log_odds,
    waterfall_steps,
)


# --------------------------------------------------------------------------- points
def test_shared_log_odds_add_up_to_the_distance() -> None:
    contributions = np.array([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0]])
    distance = np.array([2.0, -0.3])
    shared = shared_log_odds(contributions, distance)
    np.testing.assert_allclose(shared.sum(axis=1), distance, atol=1e-12)
    # the residual (2 - 0.75) goes in proportion to |c|; a row of zeros shares it evenly
    np.testing.assert_allclose(
        shared[0], [1.0 + 1.25 * 1 / 1.75, -0.5 + 1.25 * 0.5 / 1.75, 0.25 + 1.25 * 0.25 / 1.75]
    )
    np.testing.assert_allclose(shared[1], [-0.1, -0.1, -0.1])


def test_waterfall_starts_at_the_base_rate_and_lands_on_the_probability() -> None:
    contributions = np.array([0.2, -1.5, 2.5, 0.05, -0.01, 0.9])
    labels = [f"group {g}" for g in range(len(contributions))]
    steps = waterfall_steps(0.1, 0.571, contributions, labels, steps=3)
    assert steps[0] == {"label": BASE_LABEL, "start": 0.0, "end": 0.1, "kind": "total"}
    assert steps[-1]["label"] == "this lead" and steps[-1]["end"] == 0.571
    middle = steps[1:-1]
    # the three largest: for the lead first, then against it, each largest first; the rest last
    assert [step["label"] for step in middle] == ["group 2", "group 5", "group 1", "3 other factors"]
    shown = [step["points"] for step in middle[:-1]]
    assert shown[0] > shown[1] > 0 > shown[2]
    assert sum(step["points"] for step in middle) == pytest.approx(100 * (0.571 - 0.1), abs=1e-9)
    assert middle[-1]["end"] == 0.571  # the last bar lands exactly on the table's probability
    for before, after in itertools.pairwise(middle):
        assert after["start"] == before["end"]
    assert all(step["kind"] == ("pos" if step["points"] >= 0 else "neg") for step in middle)
    assert not any("log" in str(value) for step in steps for value in step.values())


def test_a_waterfall_of_few_groups_has_no_other_step() -> None:
    steps = waterfall_steps(0.2, 0.05, np.array([-1.0, 0.3]), ["a", "b"], steps=8)
    assert [step["label"] for step in steps] == [BASE_LABEL, "b", "a", "this lead"]
    assert steps[1]["points"] + steps[2]["points"] == pytest.approx(-15.0, abs=1e-9)
    assert steps[1]["points"] > 0 > steps[2]["points"]


def test_base_rate_is_the_training_rate_else_the_calibrated_base_value() -> None:
    calibrator = SimpleNamespace(predict_proba=lambda margins: 1 / (1 + np.exp(-margins)))
    assert base_rate(SimpleNamespace(trained={"rate": 0.102}, calibrator=calibrator), -3.0) == 0.102
    older = SimpleNamespace(trained={}, calibrator=calibrator)
    assert base_rate(older, 0.0) == pytest.approx(0.5)


def _scored(rows: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"lead_id": [f"L{i}" for i in range(rows)]})
    for column in REASON_COLUMNS:
        frame[column] = [f"good {column} {i % 2}" for i in range(rows)]
    for column in RISK_COLUMNS:
        frame[column] = [f"bad {column}" for _ in range(rows)]
    frame.loc[0, RISK_COLUMNS[2]] = None  # a lead with only two reasons against
    for column in POINT_COLUMNS:
        sign = 1 if column.startswith("positive") else -1
        frame[column] = sign * rng.uniform(0.1, 1.5, rows)
    frame[BASE_VALUE] = -3.0
    frame[MARGIN] = frame[BASE_VALUE] + frame[POINT_COLUMNS].sum(axis=1) + rng.normal(0, 0.5, rows)
    frame[PROBABILITY] = np.sort(rng.uniform(0.01, 0.9, rows))[::-1]
    frame["tier"] = ["A", "B", "C", "D"][:rows]
    frame["change"] = [0.0123456, np.nan, -0.2, 0.0][:rows]
    frame["company"] = ["</script><script>alert(1)</script>", "Acme & Co", None, "x"][:rows]
    return frame


def test_reason_points_add_up_to_the_probability_from_the_base_rate() -> None:
    frame = _scored()
    order, points, other = reason_points(frame, 0.1)
    assert points is not None and other is not None
    total = points.sum(axis=1) + other
    np.testing.assert_allclose(total, 100 * (frame[PROBABILITY] - 0.1), atol=1e-9)
    assert points[0, -1] == 0.0  # the missing reason adds nothing, and comes last
    assert order[0, -1] == len(POINT_COLUMNS) - 1
    no_contributions = frame.drop(columns=POINT_COLUMNS)
    assert reason_points(no_contributions, 0.1)[1] is None
    assert reason_points(frame, None)[0].tolist()[0] == list(range(len(POINT_COLUMNS)))


def test_page_table_is_compact_json_a_script_element_cannot_be_closed_by() -> None:
    frame = _scored()
    table = page_table(frame, 0.1, personal=[], rows=3)
    assert len(table["rows"]) == 3 and table["total"] == 4
    text = str(htmlsafe_json_dumps(table, separators=(",", ":"), allow_nan=False))
    assert "<" not in text and ">" not in text and "&" not in text
    decoded = json.loads(text)
    strings, columns = decoded["strings"], decoded["columns"]
    first = dict(zip(columns, decoded["rows"][0], strict=True))
    assert strings[first["company"]] == "</script><script>alert(1)</script>"
    assert strings[first["lead_id"]] == "L0" and strings[first["tier"]] == "A"
    assert first["change"] == pytest.approx(0.012346) and decoded["rows"][1][columns.index("change")] is None
    assert len(first["reasons"]) == 5  # one reason against is missing
    assert sum(points for _, points, _ in first["reasons"]) + first["other"] == pytest.approx(
        100 * (frame[PROBABILITY].iloc[0] - 0.1), abs=0.05
    )
    # a reason text repeated over rows is stored once
    assert len(strings) == len(set(strings))
    assert strings.count("bad negative_reason_1") == 1


# --------------------------------------------------------------------------- the CSV
def test_ranked_csv_rounds_its_figures() -> None:
    frame = _scored().assign(
        percentile=[99.123456, 50.0, 10.987654, 1.0],
        expected_value=[4001.4999, np.nan, 12.5, 0.4],
        **{"positive_contribution_1": [0.123456, 1.0, 2.0, 3.0]},
    )
    ranked = ranked_csv(frame, personal=[])
    assert ranked[PROBABILITY].tolist() == frame[PROBABILITY].round(4).tolist()
    assert ranked["percentile"].iloc[0] == 99.1235 and ranked["change"].iloc[0] == 0.0123
    assert str(ranked["expected_value"].dtype) == "Int64"
    assert ranked["expected_value"].iloc[0] == 4001 and pd.isna(ranked["expected_value"].iloc[1])
    assert "4001.0" not in ranked.to_csv(index=False)


# --------------------------------------------------------------------------- the lead mix
def _reference(training: pd.DataFrame) -> dict:
    return {"features": reference_profile(training, list(training.columns))}


def test_lead_mix_names_the_category_that_grew_and_which_way_numbers_moved() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    training = pd.DataFrame({
        "source": rng.choice(["event", "web_organic", "webinar"], n, p=[0.45, 0.45, 0.1]),
        "days_since_last_activity": rng.exponential(10, n),
        "days_since_last_email_open": rng.exponential(10, n),
        "lead_age_days": rng.uniform(0, 100, n),
        "employees": rng.lognormal(4, 1, n),
    })  # fmt: skip
    today = pd.DataFrame({
        "source": rng.choice(["event", "web_organic", "webinar"], n, p=[0.3, 0.3, 0.4]),
        "days_since_last_activity": rng.exponential(3, n),
        "days_since_last_email_open": rng.exponential(3, n),
        "lead_age_days": rng.uniform(50, 200, n),
        "employees": rng.lognormal(4, 1, n),  # unchanged: no sentence
    })  # fmt: skip
    shift = lead_mix_shift(_reference(training), today, pd.Series(dtype="float64"), threshold=0.1)
    assert shift.checked and len(shift.sentences) == 3
    text = " ".join(shift.sentences)
    assert "more webinar leads than the model was trained on" in text
    recency = next(sentence for sentence in shift.sentences if "recent activity" in sentence)
    assert recency.startswith("More leads with recent activity than in training (")
    assert "last activity" in recency and "last e-mail open" in recency  # one sentence for both
    assert "Leads are older than in training." in text
    assert "PSI" not in text and "_" not in text and "employees" not in text and "company sizes" not in text


def test_lead_mix_is_quiet_below_the_threshold_and_says_when_it_cannot_compare() -> None:
    rng = np.random.default_rng(2)
    training = pd.DataFrame({"lead_age_days": rng.uniform(0, 100, 3000)})
    today = pd.DataFrame({"lead_age_days": rng.uniform(0, 100, 3000)})
    assert lead_mix_shift(_reference(training), today, pd.Series(dtype="float64"), 0.1).sentences == ()
    nothing = lead_mix_shift({}, today, pd.Series(dtype="float64"), 0.1)
    assert not nothing.checked and nothing.sentences == ()


def test_lead_mix_words_a_shift_of_the_scores() -> None:
    rng = np.random.default_rng(3)
    training = pd.DataFrame({PROBABILITY: rng.beta(1, 9, 5000)})
    reference = {"score": reference_profile(training, [PROBABILITY])[PROBABILITY]}
    today = pd.Series(rng.beta(3, 5, 5000), name=PROBABILITY)
    shift = lead_mix_shift(reference, None, today, 0.1)
    assert shift.sentences == ("Scores run higher than in training: more leads look likely to convert.",)


def test_logit_is_finite_at_zero_and_one() -> None:
    assert np.isfinite(logit(np.array([0.0, 1.0]))).all()


def test_lead_mix_words_many_small_moves_as_the_mix_and_first_activity_as_age() -> None:
    rng = np.random.default_rng(4)
    codes = [str(code) for code in range(1000, 1300)]
    training = pd.DataFrame({
        "campaign_code": rng.choice(codes, 20_000),
        "lead_age_days": rng.uniform(0, 100, 20_000),
        "days_since_first_activity": rng.uniform(0, 100, 20_000),
    })  # fmt: skip
    today = pd.DataFrame({
        "campaign_code": rng.choice(codes[:150], 600),  # half the codes, none of them by much
        "lead_age_days": rng.uniform(40, 160, 600),
        "days_since_first_activity": rng.uniform(40, 160, 600),
    })  # fmt: skip
    shift = lead_mix_shift(_reference(training), today, pd.Series(dtype="float64"), 0.1)
    assert set(shift.sentences) == {
        "The campaign code mix differs from training.",
        "Leads are older than in training (lead age, first activity).",
    }
