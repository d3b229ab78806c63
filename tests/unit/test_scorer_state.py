"""The scorer saved as data (leadml.modelling.scorer_state): every model kind comes back scoring and
explaining bit for bit; only the types leadml writes are ever built; damage is named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from hypothesis import given
from hypothesis import strategies as st
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from test_request_plan import END, crm_scorer, crm_tables

from factories import sheet_snapshots
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, build_features
from leadml.errors import ModelIntegrityError, NoModelError
from leadml.modelling.calibration import SigmoidCalibrator, fit_calibrator
from leadml.modelling.models import LogRegSettings, fit_logreg
from leadml.modelling.points import fit_points
from leadml.modelling.scorer import LeadScorer
from leadml.modelling.scorer_state import (
    BOOSTER_FILE,
    PIPELINE_FILE,
    SCORER_FIELDS,
    STATE_FILE,
    StateError,
    from_plain,
    read_scorer_state,
    to_plain,
    write_scorer_state,
)

SHEET = [
    {"feature": "seniority", "in": ["c_level", "vp"], "points": 20},
    {"feature": "visits", "ge": 3, "points": 10},
    {"feature": "visits", "missing": True, "points": -5},
]
TIERS = {"A": 25, "B": 10}


def _same_fields(saved: LeadScorer, loaded: LeadScorer) -> None:
    for name in SCORER_FIELDS[:-1]:  # the last, linear_means, an array
        assert getattr(loaded, name) == getattr(saved, name), name


@pytest.fixture(scope="module")
def lightgbm() -> tuple[LeadScorer, pd.DataFrame]:
    rng = np.random.default_rng(5)
    tables = crm_tables(rng, n_leads=500)
    scorer = crm_scorer(tables, rng)
    scorer.trained = {"rows": 400, "through": "2026-01-01T00:00:00+00:00", "refit": True}
    scorer.reference = {"features": {"employees": {"kind": "numeric", "edges": [1.0, 10.0, np.inf]}}}
    scorer.data_contract = {"limits": {"employees": {"min": 1, "max": 5000}}, "missing_markers": ["n/a"]}

    leads = tables[s.LEADS]
    frame = build_features(leads, tables[s.ACCOUNTS], tables[s.ACTIVITIES], END, _settings(scorer))
    return scorer, frame


def _settings(scorer: LeadScorer):  # type: ignore[no-untyped-def]

    return FeatureSettings.from_mapping(scorer.feature_settings)


def test_a_lightgbm_scorer_comes_back_scoring_and_explaining_bit_for_bit(lightgbm, tmp_path: Path) -> None:
    scorer, frame = lightgbm
    loaded = read_scorer_state(write_scorer_state(scorer, tmp_path / "state"))
    _same_fields(scorer, loaded)
    assert {p.name for p in (tmp_path / "state").iterdir()} == {STATE_FILE, BOOSTER_FILE}
    for method in ("fast", "lightgbm"):
        expected, contributions = scorer.predict_explained(frame, method)
        got, explained = loaded.predict_explained(frame, method)
        pd.testing.assert_frame_equal(got, expected)
        pd.testing.assert_frame_equal(explained, contributions)
    assert loaded.model.best_iteration == scorer.model.best_iteration
    assert loaded.model.categories == scorer.model.categories
    assert loaded.calibrator.describe() == scorer.calibrator.describe()


def test_a_logistic_scorer_comes_back_through_skops(tmp_path: Path) -> None:
    train = sheet_snapshots(3000)
    model = fit_logreg(train, LogRegSettings(min_frequency=5))
    margin = model.predict_margin(train)
    scorer = LeadScorer(
        model, fit_calibrator(margin, train[s.LABEL].to_numpy(), "sigmoid"), model.feature_names
    )
    scorer.linear_means = np.linspace(0.0, 1.0, 7)
    loaded = read_scorer_state(write_scorer_state(scorer, tmp_path / "state"))
    assert (tmp_path / "state" / PIPELINE_FILE).exists()
    test = sheet_snapshots(500, seed=9)
    pd.testing.assert_frame_equal(loaded.predict(test), scorer.predict(test))
    np.testing.assert_array_equal(loaded.linear_means, scorer.linear_means)
    assert isinstance(loaded.calibrator, SigmoidCalibrator) and loaded.calibrator == scorer.calibrator


def test_a_points_sheet_comes_back_with_its_rules(tmp_path: Path) -> None:
    model = fit_points(sheet_snapshots(), SHEET, TIERS)
    scorer = LeadScorer(model, SigmoidCalibrator(1.0, 0.0), model.feature_names)
    loaded = read_scorer_state(write_scorer_state(scorer, tmp_path / "state"))
    assert loaded.model.rules == model.rules and loaded.model.tiers == model.tiers
    test = sheet_snapshots(400, seed=2)
    pd.testing.assert_frame_equal(loaded.predict(test), scorer.predict(test))


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.builds(pd.Timestamp, st.datetimes(timezones=st.just(None))),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers(0, 9) | st.tuples(st.integers(0, 3)), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(plain_values)
def test_plain_values_come_back_as_they_were(value) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(to_plain(value, "x"))
    assert from_plain(json.loads(text), "x") == value


def test_arrays_keep_their_dtype_and_shape() -> None:
    for array in (
        np.arange(6, dtype=np.int32).reshape(2, 3),
        np.array([0.1, np.nan, -np.inf]),
        np.array([True]),
    ):
        back = from_plain(json.loads(json.dumps(to_plain(array, "x"))), "x")
        assert back.dtype == array.dtype and back.shape == array.shape
        np.testing.assert_array_equal(back, array)


def test_only_the_classes_leadml_writes_are_built() -> None:
    with pytest.raises(StateError, match="names a class leadml never saves \\('Popen'\\)"):
        from_plain({"__type__": "Popen", "fields": {"args": ["touch", "/tmp/x"]}}, "calibrator")
    with pytest.raises(StateError, match="an unknown tag '__reduce__'"):
        from_plain({"__reduce__": ["os.system", "true"]}, "metadata")
    with pytest.raises(StateError, match="metadata: a object cannot be saved as data"):
        to_plain(object(), "metadata")


def test_a_pipeline_holding_a_type_leadml_never_saves_is_refused(tmp_path: Path) -> None:
    train = sheet_snapshots(600)
    model = fit_logreg(train, LogRegSettings())
    scorer = LeadScorer(model, SigmoidCalibrator(1.0, 0.0), model.feature_names)
    folder = write_scorer_state(scorer, tmp_path / "state")
    # a pipeline that would call eval on load's first prediction, its digest recorded to match
    skops.io.dump(Pipeline([("run", FunctionTransformer(func=eval))]), folder / PIPELINE_FILE)
    state = json.loads((folder / STATE_FILE).read_text())
    state["files"][PIPELINE_FILE] = hashlib.sha256((folder / PIPELINE_FILE).read_bytes()).hexdigest()
    (folder / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ModelIntegrityError, match=r"holds types leadml never saves \(builtins.eval"):
        read_scorer_state(folder)


def test_damage_and_newer_formats_are_named(lightgbm, tmp_path: Path) -> None:
    scorer, _ = lightgbm
    folder = write_scorer_state(scorer, tmp_path / "state")
    booster = folder / BOOSTER_FILE
    booster.write_text(booster.read_text().replace("leaf_value=", "leaf_value=1 ", 1))
    with pytest.raises(ModelIntegrityError, match=r"booster\.txt changed after the model was saved"):
        read_scorer_state(folder)
    booster.unlink()
    with pytest.raises(ModelIntegrityError, match=r"booster\.txt: missing"):
        read_scorer_state(folder)

    state = folder / STATE_FILE
    state.write_text(state.read_text()[:1000])
    with pytest.raises(ModelIntegrityError, match="not a model state file \\(damaged JSON"):
        read_scorer_state(folder)
    state.write_text(json.dumps({"format": "leadml-scorer", "format_version": 99}))
    with pytest.raises(StateError, match="format 99, newer than this leadml reads") as error:
        read_scorer_state(folder)
    assert isinstance(error.value, NoModelError) and error.value.exit_code == 2
    state.unlink()
    with pytest.raises(StateError, match="cannot read the model's state"):
        read_scorer_state(folder)
