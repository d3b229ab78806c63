"""Segment models (leadml.modelling.segments, LeadScorer.segments): rows are routed by block to
their segment's scorer and come back in their order and index; the routing is saved as data and
read back; a bad data.segments is one line naming its key; the request path routes too."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_request_plan import END, crm_scorer, crm_tables

from factories import flat_leads
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, build_features, flat_feature_metadata
from leadml.errors import LeadmlError
from leadml.modelling.calibration import fit_calibrator
from leadml.modelling.evaluate import paired_share_better
from leadml.modelling.models import LightGBMSettings, fit_lightgbm_rounds
from leadml.modelling.scorer import GLOBAL, LeadScorer, SegmentRouting, as_model_input, segment_positions
from leadml.modelling.scorer_state import SEGMENT_FOLDER, STATE_FILE, read_scorer_state, write_scorer_state
from leadml.modelling.segments import SegmentSettings, check_segment_column
from leadml.reporting.model_card import _segments_and_accounts
from leadml.scoring.request_plan import request_plan
from leadml.scoring.requests import predict_request


def _scorer(rows: pd.DataFrame, rounds: int = 20) -> LeadScorer:
    settings = LightGBMSettings(num_leaves=7, min_child_samples=10, min_data_per_group=10, n_jobs=1)
    model = fit_lightgbm_rounds(rows, settings, rounds=rounds)
    metadata = flat_feature_metadata(rows, {"x1": "fit"})
    calibrator = fit_calibrator(model.predict_margin(rows), rows[s.LABEL].to_numpy(), "sigmoid")
    return LeadScorer(model, calibrator, model.feature_names, {n: asdict(m) for n, m in metadata.items()})


@pytest.fixture(scope="module")
def routed() -> tuple[LeadScorer, LeadScorer, pd.DataFrame]:
    """A global scorer routing channel=partner to a model of its own, and rows to score (in a
    shuffled order, with an index of their own, a missing channel and one never seen)."""
    rows = flat_leads(1500, seed=4)
    own = _scorer(rows[rows["channel"] == "partner"], rounds=15)
    scorer = _scorer(rows)
    scorer.segments = SegmentRouting("channel", {"partner": "partners"}, {"partners": own})
    test = flat_leads(300, seed=9).sample(frac=1.0, random_state=1)
    test.index = pd.Index([f"row{i}" for i in range(len(test))])
    channel = test["channel"].astype(object)
    channel.iloc[:3] = [None, "fax", "partner"]
    test["channel"] = channel
    return scorer, own, test


def _alone(scorer: LeadScorer) -> LeadScorer:
    """The same scorer without its segments: the global model on every row."""
    return LeadScorer(scorer.model, scorer.calibrator, scorer.feature_names, scorer.metadata)


def test_segment_positions_look_each_value_up_as_text_and_send_the_rest_global() -> None:
    values = pd.Series(["a", None, "b", "c", "a", 5], dtype=object)
    np.testing.assert_array_equal(
        segment_positions(values, {"a": 0, "5": 1}), [0, GLOBAL, GLOBAL, GLOBAL, 0, 1]
    )
    categorical = pd.Series(pd.Categorical(["x", "y", None, "x"], categories=["x", "y", "z"]))
    np.testing.assert_array_equal(segment_positions(categorical, {"y": 3}), [GLOBAL, 3, GLOBAL, GLOBAL])


def test_rows_are_scored_by_their_segment_in_their_order_and_index(routed) -> None:
    scorer, own, test = routed
    partner = (test["channel"] == "partner").to_numpy()
    predicted, contributions = scorer.predict_explained(test)
    assert predicted.index.equals(test.index) and contributions.index.equals(test.index)
    expected = _alone(scorer).predict(test)
    expected[partner] = own.predict(test[partner])
    pd.testing.assert_frame_equal(scorer.predict(test), expected)
    pd.testing.assert_frame_equal(predicted, expected, rtol=1e-9)
    own_contributions = own.explain(test[partner])
    pd.testing.assert_frame_equal(contributions[partner], own_contributions)
    pd.testing.assert_frame_equal(scorer.explain(test), contributions)
    # each row's contributions add up to the margin of the model that scored it
    np.testing.assert_allclose(contributions.sum(axis=1), predicted["margin"], atol=1e-9)
    # a missing channel and a channel no segment holds go to the global model
    global_rows = _alone(scorer).predict(test.iloc[:2])
    pd.testing.assert_frame_equal(predicted.iloc[:2], global_rows, rtol=1e-9)


def test_rows_of_one_segment_only_are_scored_without_a_split(routed) -> None:
    scorer, own, test = routed
    partner = test[test["channel"] == "partner"]
    pd.testing.assert_frame_equal(scorer.predict(partner), own.predict(partner))


def test_a_routed_scorer_comes_back_from_its_state_with_its_segments(routed, tmp_path: Path) -> None:
    scorer, _, test = routed
    folder = write_scorer_state(scorer, tmp_path / "state")
    assert (folder / SEGMENT_FOLDER.format(1) / STATE_FILE).is_file()
    loaded = read_scorer_state(folder)
    assert loaded.segments is not None and loaded.segments.segment_of == {"partner": "partners"}
    assert loaded.segments.column == "channel"
    pd.testing.assert_frame_equal(loaded.predict(test), scorer.predict(test))
    pd.testing.assert_frame_equal(loaded.predict_explained(test)[1], scorer.predict_explained(test)[1])
    # a segment's state changed after saving is refused by the digest its global state recorded
    state = folder / SEGMENT_FOLDER.format(1) / STATE_FILE
    state.write_text(state.read_text().replace('"feature_names"', '"feature_names" ', 1))
    with pytest.raises(LeadmlError, match="changed after the model was saved"):
        read_scorer_state(folder)


def test_a_scorer_without_segments_saves_no_segment_entry(routed, tmp_path: Path) -> None:
    scorer, _, _ = routed
    folder = write_scorer_state(_alone(scorer), tmp_path / "plain")
    assert '"segments"' not in (folder / STATE_FILE).read_text()
    assert read_scorer_state(folder).segments is None


def test_a_request_to_a_routed_crm_model_is_answered_by_its_segment() -> None:
    """The compiled single-request path covers one model; a routed scorer's requests go the pandas
    way, which routes: a referral lead gets the referral model's probability and reasons."""
    rng = np.random.default_rng(3)
    tables = crm_tables(rng, n_leads=400)
    scorer, own = crm_scorer(tables, rng), crm_scorer(tables, np.random.default_rng(8))
    assert request_plan(scorer) is not None
    scorer.segments = SegmentRouting(s.SOURCE, {"referral": "referral"}, {"referral": own})
    assert request_plan(scorer) is None
    settings = FeatureSettings.from_mapping(scorer.feature_settings)
    built = build_features(tables[s.LEADS].head(40), tables[s.ACCOUNTS], tables[s.ACTIVITIES], END, settings)
    frame = as_model_input(built, scorer.feature_names).reset_index(drop=True)
    frame[s.SOURCE] = ["referral", "web_organic"] * (len(frame) // 2)
    answer = predict_request(scorer, frame)
    referral = (frame[s.SOURCE] == "referral").to_numpy()
    np.testing.assert_allclose(
        answer["probability"].to_numpy()[referral], own.predict(frame[referral])["probability"]
    )
    np.testing.assert_allclose(
        answer["probability"].to_numpy()[~referral], _alone(scorer).predict(frame[~referral])["probability"]
    )


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("source", "data.segments must be a mapping"),
        ({"groups": {"a": ["x"]}}, "data.segments.by must name a feature column"),
        ({"by": "source", "margin": -1}, "data.segments.margin must be a number from 0 to 1"),
        ({"by": "source", "metric": "accuracy"}, "data.segments.metric must be one of"),
        ({"by": "source", "groups": {"a": ["x"], "b": ["x"]}}, "'x' is in both 'a' and 'b'"),
        ({"by": "source", "groups": {"a": []}}, "data.segments.groups.a must list the values"),
        ({"by": "source", "min_rows": 0}, "data.segments.min_rows must be a whole number"),
        ({"by": "source", "colour": 1}, "unknown data.segments setting"),
    ],
)
def test_a_bad_segments_setting_is_one_line_naming_its_key(mapping: object, message: str) -> None:
    with pytest.raises(LeadmlError, match=message):
        SegmentSettings.from_mapping(mapping)  # type: ignore[arg-type]


def test_the_segment_column_must_be_a_model_feature() -> None:
    settings = SegmentSettings.from_mapping({"by": "region"})
    assert settings is not None and settings.groups == {} and settings.margin == 0.005
    with pytest.raises(LeadmlError, match=r"data\.segments\.by: 'region' is not a feature of the model"):
        check_segment_column(settings, ["source", "employees"])
    assert SegmentSettings.from_mapping(None) is None
    grouped = SegmentSettings.from_mapping({"by": "source", "groups": {"warm": ["partner", "referral"]}})
    assert grouped is not None and grouped.segments_of(pd.Series(["web"])) == {
        "warm": ("partner", "referral")
    }
    each = SegmentSettings.from_mapping({"by": "source"})
    assert each is not None and each.segments_of(pd.Series(["web", None, "event", "web"])) == {
        "event": ("event",),
        "web": ("web",),
    }


def test_a_paired_share_of_resamples_says_how_sure_a_gain_is() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < 0.3).astype(int)
    good = np.clip(labels * 0.3 + rng.random(2000) * 0.7, 0, 1)
    noise = rng.random(2000)
    assert paired_share_better(labels, good, noise, n_boot=100) > 0.95
    assert paired_share_better(labels, noise, good, n_boot=100) < 0.05
    assert 0.0 <= paired_share_better(labels, noise, good, metric="log_loss", n_boot=50) <= 1.0


def test_the_model_card_names_the_segments_and_the_account_roll_up() -> None:
    routing = SegmentRouting("source", {"web_organic": "organic"}, {"organic": None})  # type: ignore[dict-item]
    accounts = {"correction": {"note": "leads of one account convert about independently"}}
    lines = _segments_and_accounts(SimpleNamespace(segments=routing, accounts=accounts))
    assert lines[0].startswith("Segment models: leads whose source is web_organic are scored by")
    assert "(organic)" in lines[0]
    assert lines[1].endswith("measured on history (leads of one account convert about independently).")
    assert _segments_and_accounts(SimpleNamespace(segments=None, accounts={})) == []
