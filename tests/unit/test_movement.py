"""Why did it move: the change since the previous run attributed to groups, exactly."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from leadml.data import schema as s
from leadml.modelling.reasons import GROUP_PREFIX, MODEL_CHANGE, group_deltas, movement_sentence
from leadml.modelling.scorer import BASE_VALUE, MARGIN, PROBABILITY
from leadml.scoring.scores import TrendSettings, add_trend
from leadml.stages.features import feature_settings

GROUPS = ("page_pricing", "demo_request", "email_open", "job_title")


def _run(rng: np.random.Generator, leads: list[str], base: float) -> pd.DataFrame:
    contributions = rng.normal(0, 1, (len(leads), len(GROUPS)))
    margin = base + contributions.sum(axis=1)
    frame = pd.DataFrame({s.LEAD_ID: leads, PROBABILITY: 1 / (1 + np.exp(-margin)), MARGIN: margin,
                          BASE_VALUE: base})  # fmt: skip
    for g, group in enumerate(GROUPS):
        frame[f"{GROUP_PREFIX}{group}"] = contributions[:, g]
    return frame


@pytest.mark.parametrize("base_before", [-2.0, -2.5])  # the same model; a new one (base moved)
def test_attributed_changes_add_up_to_the_change_of_margin(base_before: float) -> None:
    rng = np.random.default_rng(7)
    leads = [f"L{i}" for i in range(500)]
    previous = _run(rng, [*leads[:400], "gone"], base_before)
    today = _run(rng, leads, -2.0)
    words = {g: g.replace("_", " ") for g in GROUPS} | {MODEL_CHANGE: "model updated"}
    out = add_trend(today, previous, TrendSettings(), words)
    known = out["previous_probability"].notna().to_numpy()
    assert known.sum() == 400 and out.loc[~known, "movement"].isna().all()
    before = previous.set_index(s.LEAD_ID).reindex(out.loc[known, s.LEAD_ID])
    groups, deltas = group_deltas(out[known].reset_index(drop=True), before.reset_index(drop=True))
    change = out.loc[known, "margin_change"].to_numpy()
    np.testing.assert_allclose(deltas.sum(axis=1), change, rtol=0, atol=1e-9)
    np.testing.assert_allclose(change, today[MARGIN][:400] - previous[MARGIN][:400], rtol=0, atol=1e-12)
    assert (MODEL_CHANGE in groups) and (np.abs(deltas[:, -1]).max() > 0) == (base_before != -2.0)
    sentence = out.loc[known, "movement"].iloc[0]
    assert sentence.startswith(("rose ", "fell ", "no change")), sentence


def test_a_movement_reads_as_the_issue_asks() -> None:
    moves = [("4 pricing-page visits in the last 7 days", 9.2), ("requested a demo yesterday", 5.1),
             ("no reply to the last 3 e-mails", -2.0), ("tiny", 0.01)]  # fmt: skip
    assert movement_sentence(12.3, moves) == (
        "rose 12 points: 4 pricing-page visits in the last 7 days (+9.2), requested a demo yesterday (+5.1); "
        "fell: no reply to the last 3 e-mails (-2)"
    )
    assert movement_sentence(-3.0, [("e-mail opens", -3.0)]) == "fell 3 points: e-mail opens (-3)"
    assert movement_sentence(0.01, moves) == "no change"


def test_previous_runs_without_groups_give_no_movement() -> None:
    rng = np.random.default_rng(1)
    today = _run(rng, ["a", "b"], -2.0)
    previous = today[[s.LEAD_ID, PROBABILITY]].assign(**{PROBABILITY: 0.5})
    out = add_trend(today, previous, TrendSettings())
    assert out["movement"].isna().all() and out["margin_change"].isna().all()
    assert out["trend"].notna().all()


def test_a_numeric_code_column_is_flagged_and_modelled_as_a_category(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = {"extra_features": {"categorical": ["browser"], "numeric": ["campaign_code", "score_points"]}}
    with caplog.at_level(logging.WARNING):
        settings = feature_settings(data, {})
    assert "campaign_code" in settings.extra_categorical and settings.extra_numeric == ("score_points",)
    assert "campaign_code" in caplog.text and "code or an id" in caplog.text
