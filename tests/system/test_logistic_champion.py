"""A logistic-regression champion works everywhere a LightGBM one does: exact linear reasons, both
scoring engines, the leadership report, export and the served pyfunc, the model report and card."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from factories import SMALL_PROJECT, local_tracking
from leadml.adapters import sinks
from leadml.adapters.layout import read_features, read_interim
from leadml.adapters.model_folder import MODEL_CARD, REQUEST_EXAMPLE
from leadml.cli import run_export, run_report, run_score, run_train
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, open_lead_features
from leadml.errors import LeadmlError
from leadml.modelling.linear_explain import (
    LinearExplainer,
    attach_training_means,
    design_matrix,
    profile_design_means,
    training_design_means,
)
from leadml.modelling.models import LogRegModel
from leadml.modelling.scorer import BASE_VALUE
from leadml.modelling.split import SplitSettings, split_with_report
from leadml.scoring.requests import predict_request, requests_from_tables
from leadml.scoring.scores import TierSettings, score_leads

MODEL = "leadml-synthetic"
AS_OF = "2025-12-01"
REASONS = [f"{d}_reason_{i}" for d in ("positive", "negative") for i in (1, 2, 3)]
# the shared small project's settings without LightGBM's (model.n_estimators, ...): a logistic model
SETTINGS = {k: v for k, v in SMALL_PROJECT.items() if not k.startswith("model.")}


def _cfg(root: Path, name: str, overrides: list[str] | tuple[str, ...] = ()):
    from hydra import compose, initialize_config_dir

    from leadml.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            name,
            [f"paths.root={root}", "model=logreg", *(f"{k}={v}" for k, v in SETTINGS.items()), *overrides],
        )


@pytest.fixture(scope="module")
def project(project_copy) -> Path:
    """The shared small project's data (conftest) with a logistic champion trained in a store of its own,
    scored by the pandas engine on ``AS_OF``."""
    root = project_copy("logreg", tracking=False)
    with local_tracking():
        summary = run_train(_cfg(root, "train"))
        assert summary.model_name == "logreg" and summary.promoted
        run_score(_cfg(root, "score", [f"score.as_of={AS_OF}"]))
    return root


@pytest.fixture(scope="module")
def exported(project: Path) -> Path:
    """The champion exported (leadml-export): its model folder."""
    with local_tracking():
        summary = run_export(_cfg(project, "export"))
    return Path(summary.path)


@pytest.fixture(scope="module")
def scorer(project: Path):
    from leadml.adapters import tracking

    with local_tracking():
        tracking.configure(f"sqlite:///{project / 'mlflow.db'}", MODEL, project / "mlruns")
        loaded = tracking.load_scorer(f"models:/{MODEL}@champion")
    assert isinstance(loaded.model, LogRegModel) and loaded.can_explain
    return loaded


@pytest.fixture(scope="module")
def features(project: Path, scorer) -> pd.DataFrame:
    tables = read_interim(project / "data" / "interim" / "synthetic", s.CRM_TABLES)
    settings = FeatureSettings.from_mapping(scorer.feature_settings)
    return open_lead_features(tables, pd.Timestamp(AS_OF, tz="UTC"), settings)


@pytest.fixture(scope="module")
def train_rows(project: Path) -> pd.DataFrame:
    """Every labelled row of the run, split again as train split it: the deployed refit was fitted on
    all three windows (issue 17: evaluate the procedure, deploy its refit)."""
    snapshots, *_ = read_features(project / "data" / "features" / "synthetic", ())
    split = split_with_report(snapshots, SplitSettings.from_mapping(_cfg(project, "train")["split"]))
    return pd.concat([split.parts[window] for window in ("train", "calibration", "test")])


def _hostile(features: pd.DataFrame, scorer) -> pd.DataFrame:
    """Open leads with missing numbers, unseen and missing categories in some rows."""
    odd = features.copy()
    categorical = list(scorer.model.categories)
    numeric = [n for n in scorer.feature_names if n not in categorical]
    assert categorical and numeric
    rows = odd.index[:40]
    odd.loc[rows[:20], numeric[::3]] = np.nan
    for name in categorical:
        odd[name] = odd[name].astype(object)
        odd.loc[rows[10:30], name] = "carrier_pigeon"
        odd.loc[rows[30:], name] = None
    return odd


# --------------------------------------------------------------------------- the explainer
def test_contributions_add_up_to_the_margin_even_for_missing_and_unseen_values(features, scorer) -> None:
    for frame in (features, _hostile(features, scorer)):
        contributions = scorer.explain(frame)
        assert contributions.columns.tolist() == [*scorer.feature_names, BASE_VALUE]
        values = contributions.to_numpy()
        assert np.isfinite(values).all()
        margin = scorer.model.pipeline.decision_function(scorer.model.prepare(frame))
        assert np.abs(values.sum(axis=1) - margin).max() < 1e-9
        # predict_explained: the same contributions and predict's own margin, bit for bit
        predicted, again = scorer.predict_explained(frame)
        pd.testing.assert_frame_equal(again, contributions)
        np.testing.assert_array_equal(predicted["margin"], scorer.predict(frame)["margin"])
        np.testing.assert_array_equal(predicted["probability"], scorer.predict(frame)["probability"])
    # one exact explainer: either name of score.explainer gives it; others are refused
    pd.testing.assert_frame_equal(scorer.explain(features, "lightgbm"), scorer.explain(features, "fast"))
    with pytest.raises(LeadmlError, match="explainer must be one of"):
        scorer.explain(features, "kernel")


def test_a_feature_at_its_training_mean_contributes_nothing(features, scorer, train_rows) -> None:
    explainer = scorer._linear()
    categorical = set(scorer.model.categories)
    numeric = [
        (i, name)
        for i, name in enumerate(scorer.feature_names)
        if name not in categorical and train_rows[name].notna().all() and train_rows[name].std() > 0
    ]
    assert len(numeric) > 5
    at_mean = features.copy()
    for _, name in numeric:
        at_mean[name] = float(train_rows[name].mean())
    contributions = scorer.explain(at_mean)
    for _, name in numeric:
        assert np.abs(contributions[name]).max() < 1e-9, name
    # and away from the mean a feature with a positive coefficient pushes the score up, and vice versa
    [coef] = explainer.coef[explainer.owner == numeric[0][0]]  # one design column for a number
    name = numeric[0][1]
    above = at_mean.assign(**{name: float(train_rows[name].mean() + train_rows[name].std())})
    assert (np.sign(scorer.explain(above)[name]) == np.sign(coef)).all() and coef != 0


def test_means_from_the_training_profile_are_the_training_rows_means(scorer, train_rows, features) -> None:
    exact = training_design_means(scorer.model, train_rows)
    profiled = profile_design_means(scorer.model, scorer.reference["features"])
    assert scorer.reference["rows"] == len(train_rows)  # the profile holds every training row
    np.testing.assert_allclose(profiled, exact, rtol=0, atol=1e-12)
    # storing the exact means at train time changes no contribution beyond rounding
    stored = pickle.loads(pickle.dumps(scorer))
    attach_training_means(stored, train_rows)
    assert stored.linear_means is not None and stored._linear_explainer is None
    pd.testing.assert_frame_equal(stored.explain(features), scorer.explain(features), rtol=0, atol=1e-10)
    # the cached explainer is not pickled; a scorer pickled before linear_means existed still explains
    assert scorer._linear_explainer is not None
    state = dict(scorer.__dict__)
    assert pickle.loads(pickle.dumps(scorer))._linear_explainer is None
    old = object.__new__(type(scorer))
    old.__dict__.update({k: v for k, v in state.items() if k not in ("linear_means", "_linear_explainer")})
    pd.testing.assert_frame_equal(old.explain(features), scorer.explain(features))


def test_a_sparse_design_gives_the_dense_contributions(features, scorer) -> None:
    explainer: LinearExplainer = scorer._linear()
    design = design_matrix(scorer.model, _hostile(features, scorer))
    dense = design.toarray() if sp.issparse(design) else np.asarray(design)
    values, margin = explainer.explain_design(dense)
    sparse_values, sparse_margin = explainer.explain_design(sp.csr_matrix(dense))
    np.testing.assert_allclose(sparse_values, values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sparse_margin, margin, rtol=0, atol=1e-12)
    assert np.abs(values.sum(axis=1) - margin).max() < 1e-9


def _frame(rows: int, seed: int) -> pd.DataFrame:
    """Snapshots with missing numbers, a many-level categorical (rare levels grouped) and a small one."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(3.0, 2.0, rows)
    x2 = rng.exponential(5.0, rows)
    x2[rng.random(rows) < 0.2] = np.nan
    shares = np.r_[np.full(10, 0.08), np.full(30, 0.2 / 30)]  # 30 levels under min_frequency
    many = rng.choice([f"m{i:02d}" for i in range(40)], rows, p=shares)
    few = rng.choice(["a", "b", "c"], rows)
    margin = 0.8 * x1 - 0.1 * np.nan_to_num(x2, nan=5.0) + (many == "m01") - 0.5 * (few == "c") - 2.0
    frame = pd.DataFrame({
        s.LEAD_ID: [f"L{i}" for i in range(rows)],
        "x1": x1,
        "x2": x2,
        "many": pd.Categorical(many),
        "few": pd.Categorical(np.where(rng.random(rows) < 0.1, None, few)),
        s.LABEL: (rng.random(rows) < 1 / (1 + np.exp(-margin))).astype(int),
    })  # fmt: skip
    return frame


@pytest.mark.parametrize("columns", [["x1", "x2", "many", "few"], ["x1", "x2"], ["many", "few"]])
def test_any_mix_of_numbers_and_categories_adds_up_and_profiles_match(columns: list[str]) -> None:
    from leadml.modelling.calibration import SigmoidCalibrator
    from leadml.modelling.drift import reference_profile
    from leadml.modelling.models import LogRegSettings, fit_logreg
    from leadml.modelling.scorer import LeadScorer

    train = _frame(3000, 0)[[s.LEAD_ID, *columns, s.LABEL]]
    model = fit_logreg(train, LogRegSettings())
    scorer = LeadScorer(model, SigmoidCalibrator(1.0, 0.0), model.feature_names)
    scorer.reference = {"features": reference_profile(train, model.feature_names)}
    exact = training_design_means(model, train)
    np.testing.assert_allclose(profile_design_means(model, scorer.reference["features"]), exact, atol=1e-12)

    new = _frame(500, 1)[[s.LEAD_ID, *columns]]
    for name in {"many", "few"} & set(columns):
        new[name] = new[name].astype(object)
        new.loc[new.index[:30], name] = "never_seen"
    if "x1" in columns:
        new.loc[new.index[20:60], "x1"] = np.nan
    if "many" in columns and "few" in columns:  # a design of mostly zeros: the pipeline makes it sparse
        assert sp.issparse(design_matrix(model, new))
    contributions = scorer.explain(new)
    assert np.isfinite(contributions.to_numpy()).all()
    margin = model.pipeline.decision_function(model.prepare(new))
    assert np.abs(contributions.sum(axis=1).to_numpy() - margin).max() < 1e-9
    # on average over the training rows every contribution is zero
    assert np.abs(scorer.explain(train)[model.feature_names].mean()).max() < 1e-9


# --------------------------------------------------------------------------- the nightly job
def _scored(folder: Path) -> pd.DataFrame:
    """The partition of ``AS_OF`` under ``folder``, by lead."""
    frame = sinks.read_partition(folder, pd.Timestamp(AS_OF, tz="UTC"))
    return frame.sort_values(s.LEAD_ID, ignore_index=True)


def _nightly(project: Path) -> pd.DataFrame:
    return _scored(project / "data" / "scored" / "synthetic")


def test_pandas_engine_writes_reasons_and_sub_scores(project: Path, scorer, features) -> None:
    frame = _nightly(project)
    assert len(frame) > 100 and frame[s.LEAD_ID].is_unique
    reasons = frame["positive_reason_1"].dropna()
    assert len(reasons) > 0.5 * len(frame) and reasons.str.len().gt(5).all()
    assert (frame["positive_contribution_1"].dropna() > 0).all()
    assert (frame["negative_contribution_1"].dropna() < 0).all()
    first_three = frame[[f"positive_reason_{i}" for i in (1, 2, 3)]].dropna()
    assert (first_three.nunique(axis=1) == 3).all()  # grouped back to original columns
    assert frame[["fit_score", "engagement_score", "base_value"]].notna().all().all()
    assert frame["fit_score"].std() > 0 and frame["engagement_score"].std() > 0
    # sub-scores, the other features and the base value add up to the margin written
    scored = score_leads(scorer, features, TierSettings())
    contributions = scorer.explain(features)
    other = [n for n in scorer.feature_names if scorer.metadata[n]["family"] not in ("fit", "engagement")]
    total = scored["fit_score"] + scored["engagement_score"] + scored["base_value"]
    total += contributions[other].sum(axis=1).to_numpy()
    np.testing.assert_allclose(total, scored["margin"], rtol=0, atol=1e-9)


@pytest.mark.skipif(shutil.which("java") is None, reason="the Spark engine needs Java 17 or later")
@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
def test_spark_engine_writes_the_pandas_rows(project: Path, tmp_path: Path) -> None:
    spark_dir = tmp_path / "spark"
    overrides = [
        f"score.as_of={AS_OF}",
        "score.engine=spark",
        f"score.output_dir={spark_dir}",
        "score.spark.master='local[2]'",
        "score.spark.shuffle_partitions=2",
        "score.spark.driver_memory=1g",
        "score.spark.buckets=4",
        "score.track=false",
    ]
    with local_tracking():
        run_score(_cfg(project, "score", overrides))
    expected, got = _nightly(project), _scored(spark_dir)
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=0, atol=1e-9)
    assert got[REASONS].equals(expected[REASONS])
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- reports, export, serving
def test_leadership_report_has_lead_cards_with_waterfalls(project: Path, tmp_path: Path) -> None:
    with local_tracking():
        files = run_report(
            _cfg(project, "report", [f"report.output_dir={tmp_path}", "report.settings.top_leads=5"])
        )
    page = files.html.read_text(encoding="utf-8")
    assert files.leads == len(pd.read_csv(files.csv)) > 100
    assert "No lead to show" not in page
    assert page.count('class="card lead-card"') == 5 and page.count('<div class="waterfall">') == 5


def test_model_report_and_card_name_the_linear_explanation(project: Path, exported: Path) -> None:
    page = (project / "reports" / "synthetic" / "model-v1.html").read_text(encoding="utf-8")
    assert 'id="chart-importance"' in page and 'id="importance-table"' in page
    assert "Computed with exact linear SHAP" in page and "TreeSHAP" not in page
    card = (exported / MODEL_CARD).read_text()
    assert "## What drives the score" in card and "exact linear SHAP" in card
    assert "| logreg |" in card


def test_the_exported_pyfunc_answers_a_request_with_reasons(project: Path, exported: Path, features) -> None:
    folder = exported
    model = mlflow.pyfunc.load_model(str(folder))  # load_context builds the explainer
    served = model.unwrap_python_model().scorer
    assert served._linear_explainer is not None

    example = json.loads((folder / REQUEST_EXAMPLE).read_text())["dataframe_records"]
    [answer] = model.predict(pd.DataFrame(example)).to_dict("records")
    assert 0 < answer["probability"] < 1 and answer["tier"] in {"A", "B", "C", "D"}
    assert answer["positive_reason_1"] and answer["negative_reason_1"]
    assert np.isfinite([answer["fit_score"], answer["engagement_score"], answer[BASE_VALUE]]).all()

    # real leads as a CRM posts them: the nightly job's probabilities and reasons
    tables = read_interim(project / "data" / "interim" / "synthetic", s.CRM_TABLES)
    picked = list(features[s.LEAD_ID].iloc[:8])
    posted = predict_request(served, pd.DataFrame(requests_from_tables(served, tables, picked, AS_OF)))
    nightly = _nightly(project).set_index(s.LEAD_ID).loc[picked]
    np.testing.assert_allclose(posted["probability"], nightly["probability"], rtol=1e-10)
    assert posted["positive_reason_1"].tolist() == nightly["positive_reason_1"].tolist()
