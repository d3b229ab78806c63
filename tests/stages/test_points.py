"""Traditional points scoring: rules, the points model, its tiers, and model=points end to end."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.special import expit

from factories import SMALL_PROJECT, local_tracking, sheet_snapshots
from leadml.cli import CONFIG_DIR, run_score, run_train
from leadml.data import schema as s
from leadml.data.features import FeatureMeta
from leadml.errors import LeadmlError, SettingsError
from leadml.modelling.calibration import SigmoidCalibrator, fit_calibrator
from leadml.modelling.gate import GateDecision
from leadml.modelling.model_settings import model_settings_from_mapping
from leadml.modelling.points import (
    BASE_VALUE,
    PointsSettings,
    fit_points,
    parse_rules,
    point_tiers,
    points_block,
    points_tier_table,
    probability_thresholds,
    tier_agreement,
    total_points,
    training_sheet,
)
from leadml.modelling.scorer import LeadScorer, as_model_input
from leadml.modelling.train import TrainingResult, train_and_evaluate
from leadml.reporting import model_report

CONF = Path(CONFIG_DIR)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            s.LEAD_ID: [f"L{i}" for i in range(6)],
            s.LABEL: [0, 1, 0, 1, 0, 1],
            "visits": [0.0, 1.0, 5.0, 10.0, np.nan, 200.0],
            "seniority": pd.Categorical(["c_level", "vp", "manager", None, "director", "c_level"]),
        }
    )


def matches(rule: dict, data: pd.DataFrame | None = None) -> list[bool]:
    data = frame() if data is None else data
    parsed = parse_rules([{**rule, "points": 1}], data)
    return (total_points(data, parsed) == 1).tolist()


# --------------------------------------------------------------------------- rules
@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"feature": "visits", "eq": 5}, [0, 0, 1, 0, 0, 0]),
        ({"feature": "visits", "in": [0, 10]}, [1, 0, 0, 1, 0, 0]),
        ({"feature": "visits", "ge": 5}, [0, 0, 1, 1, 0, 1]),
        ({"feature": "visits", "gt": 5}, [0, 0, 0, 1, 0, 1]),
        ({"feature": "visits", "le": 1}, [1, 1, 0, 0, 0, 0]),  # missing is not "at most 1"
        ({"feature": "visits", "lt": 1}, [1, 0, 0, 0, 0, 0]),
        ({"feature": "visits", "between": [1, 10]}, [0, 1, 1, 1, 0, 0]),  # both edges inclusive
        ({"feature": "visits", "between": [5, 5]}, [0, 0, 1, 0, 0, 0]),
        ({"feature": "visits", "missing": True}, [0, 0, 0, 0, 1, 0]),
        ({"feature": "visits", "missing": False}, [1, 1, 1, 1, 0, 1]),
        ({"feature": "seniority", "in": ["c_level", "vp"]}, [1, 1, 0, 0, 0, 1]),
        ({"feature": "seniority", "eq": "C-Level"}, [1, 0, 0, 0, 0, 1]),  # written as people spell it
        ({"feature": "seniority", "missing": True}, [0, 0, 0, 1, 0, 0]),
    ],
)
def test_each_condition_matches_and_missing_values_only_match_missing(rule: dict, expected: list) -> None:
    assert matches(rule) == [bool(v) for v in expected]


def test_points_add_up_and_text_input_scores_like_training_input() -> None:
    rules = parse_rules(
        [
            {"feature": "seniority", "in": ["c_level", "vp"], "points": 20},
            {"feature": "visits", "ge": 5, "points": 10},
            {"feature": "visits", "missing": True, "points": -5},
        ],
        frame(),
    )
    assert total_points(frame(), rules).tolist() == [20, 20, 10, 10, -5, 30]
    # the pyfunc and the scoring job hand over categories as text and numbers as floats
    as_text = as_model_input(frame(), ["visits", "seniority"])
    assert total_points(as_text, rules).tolist() == [20, 20, 10, 10, -5, 30]


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"feature": "visits", "gte": 1, "points": 5}, r"unknown condition.*gte"),
        ({"feature": "visits", "ge": 1, "lt": 9, "points": 5}, r"exactly one condition.*ge and lt"),
        ({"feature": "visits", "points": 5}, r"exactly one condition.*none"),
        ({"feature": "pageviews", "ge": 1, "points": 5}, r"'pageviews' is not a column"),
        ({"feature": "label", "eq": 1, "points": 5}, r"not a feature column"),
        ({"feature": "visits", "ge": "many", "points": 5}, r"ge needs a number"),
        ({"feature": "visits", "between": [10, 1], "points": 5}, r"low <= high"),
        ({"feature": "visits", "between": [1, "x"], "points": 5}, r"between needs \[low, high\]"),
        ({"feature": "visits", "eq": "yes", "points": 5}, r"holds numbers"),
        ({"feature": "seniority", "ge": 1, "points": 5}, r"holds categories"),
        ({"feature": "visits", "missing": "yes", "points": 5}, r"true or false"),
        ({"feature": "visits", "in": [], "points": 5}, r"non-empty list"),
        ({"feature": "visits", "ge": 1, "points": "ten"}, r"points must be a number"),
        ({"feature": "visits", "ge": 1}, r"gives no points"),
    ],
)
def test_invalid_rules_raise_naming_position_and_feature(rule: dict, problem: str) -> None:
    good = {"feature": "visits", "ge": 1, "points": 1}
    with pytest.raises(LeadmlError, match=rf"rule 2 \(feature '{rule['feature']}'\): .*{problem}"):
        fit_points(frame(), [good, rule])


def test_a_level_never_seen_in_training_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="leadml.modelling.points"):
        parse_rules([{"feature": "seniority", "eq": "cto", "points": 5}], frame())
    assert "rule 1 (feature 'seniority')" in caplog.text and "cto" in caplog.text


def test_block_and_settings_say_where_the_rules_belong() -> None:
    with pytest.raises(LeadmlError, match=r"no points rules.*conf/data/crm\.yaml"):
        model_settings_from_mapping({"name": "points"}, None, "crm")
    with pytest.raises(LeadmlError, match="no points rules"):
        model_settings_from_mapping({"name": "points"}, {"rules": []})
    with pytest.raises(SettingsError, match=r"data\.points"):
        model_settings_from_mapping({"name": "points", "rules": []}, {"rules": [{}]})
    settings = model_settings_from_mapping(
        {"name": "points"}, {"rules": [{"feature": "v", "ge": 1, "points": 1}]}
    )
    assert isinstance(settings, PointsSettings) and settings.tiers is None
    with pytest.raises(LeadmlError, match="highest tier first"):
        points_block({"rules": [{}], "tiers": {"C": 5, "A": 40}})
    with pytest.raises(SettingsError, match="tier"):
        points_block({"rules": [{}], "tier": {"A": 1}})
    sheet, skipped = training_sheet(
        {"rules": [{"feature": "a", "ge": 1, "points": 1}, {"feature": "b", "ge": 1, "points": 1}]}, {"b"}
    )
    assert sheet is not None and [r["feature"] for r in sheet["rules"]] == ["a"] and skipped == ["rule 2 (b)"]
    assert training_sheet({"rules": [{"feature": "b", "ge": 1, "points": 1}]}, {"b"})[0] is None


# --------------------------------------------------------------------------- the model
SHEET = [
    {"feature": "seniority", "in": ["c_level", "vp"], "points": 20},
    {"feature": "visits", "ge": 3, "points": 10},
    {"feature": "visits", "ge": 6, "points": 10},
    {"feature": "visits", "missing": True, "points": -5},
]
TIERS = {"A": 30, "B": 20, "C": 10}


@pytest.fixture(scope="module")
def model():
    return fit_points(sheet_snapshots(), SHEET, TIERS)


def test_margin_is_a_line_in_points_and_probability_its_sigmoid(model) -> None:
    test = sheet_snapshots(seed=1)
    points, margin = model.total_points(test), model.predict_margin(test)
    assert model.slope > 0 and model.feature_names == ["visits", "seniority", "noise"]
    assert margin == pytest.approx(model.intercept + model.slope * points)
    assert model.predict_proba(test) == pytest.approx(expit(margin))
    order = np.argsort(points, kind="stable")
    assert np.all(np.diff(margin[order]) >= 0)
    # the fitted map follows the observed conversion of each total
    observed = test.groupby(points)[s.LABEL].mean()
    fitted = pd.Series(expit(model.margin_of(observed.index.to_numpy())), index=observed.index)
    counts = pd.Series(points).value_counts()
    common = [p for p in observed.index if counts[p] >= 300]
    assert len(common) >= 4
    assert np.abs(fitted[common] - observed[common]).max() < 0.06


def test_explanations_add_up_to_the_margin(model) -> None:
    test = sheet_snapshots(seed=2).head(500)
    contributions = model.explain(test)
    assert list(contributions.columns) == [*model.feature_names, BASE_VALUE]
    assert contributions["noise"].abs().max() == 0
    assert contributions.sum(axis=1).to_numpy() == pytest.approx(model.predict_margin(test), abs=1e-9)
    # on average over the training window every contribution is zero
    train = sheet_snapshots()
    means = model.explain(train)[["visits", "seniority"]].mean()
    assert means.abs().max() < 1e-9


def test_the_model_and_a_scorer_around_it_pickle(model) -> None:
    test = sheet_snapshots(seed=3).head(200)
    again = pickle.loads(pickle.dumps(model))
    assert again.predict_margin(test) == pytest.approx(model.predict_margin(test))
    scorer = LeadScorer(model, SigmoidCalibrator(1.0, 0.0), model.feature_names)
    assert not scorer.can_explain  # scoring runs without reasons
    restored = pickle.loads(pickle.dumps(scorer))
    assert restored.predict(test)["probability"].to_numpy() == pytest.approx(
        scorer.predict(test)["probability"].to_numpy()
    )


def test_point_tiers_become_probability_tiers_through_the_calibrator(model) -> None:
    calibration = sheet_snapshots(seed=4)
    calibrator = fit_calibrator(model.predict_margin(calibration), calibration[s.LABEL].to_numpy(), "sigmoid")
    thresholds = probability_thresholds(TIERS, model, calibrator)
    assert list(thresholds) == ["A", "B", "C"] and thresholds["A"] > thresholds["B"] > thresholds["C"]
    test = sheet_snapshots(seed=5)
    probability = calibrator.predict_proba(model.predict_margin(test))
    assert tier_agreement(probability, thresholds, model.total_points(test), TIERS) == 1.0
    table = points_tier_table(
        test[s.LABEL].to_numpy(), probability, model.total_points(test), TIERS, thresholds, n_boot=5
    )
    assert table["tier"].tolist() == ["A", "B", "C", "D"]
    assert table["min_points"].tolist()[:3] == [30, 20, 10] and np.isnan(table["min_points"].iloc[3])
    assert table["min_probability"].tolist() == [thresholds["A"], thresholds["B"], thresholds["C"], 0.0]
    by_points = point_tiers(model.total_points(test), TIERS)
    assert table["rows"].tolist() == [int((by_points == t).sum()) for t in "ABCD"]
    assert table["mean_probability"].iloc[0] == pytest.approx(probability[by_points == "A"].mean())
    backwards = fit_points(sheet_snapshots().assign(label=lambda f: 1 - f[s.LABEL]), SHEET, TIERS)
    with pytest.raises(LeadmlError, match="slope"):
        probability_thresholds(TIERS, backwards, calibrator)


def test_a_sheet_that_never_fires_predicts_the_base_rate() -> None:
    data = sheet_snapshots()
    flat = fit_points(data, [{"feature": "visits", "gt": 1000, "points": 50}])
    assert flat.slope == 0 and flat.predict_proba(data) == pytest.approx(data[s.LABEL].mean())


# --------------------------------------------------------------------------- the sheets in conf/data
FOLLOW_UP_COLUMNS = ("Tags", "Lead Quality", "Lead Profile", "Last Activity", "Last Notable Activity")


@pytest.mark.parametrize("name", ["synthetic", "x_education"])
def test_the_shipped_sheets_are_well_formed(name: str) -> None:
    loaded = yaml.safe_load((CONF / "data" / f"{name}.yaml").read_text())
    block = points_block(loaded.get("data", loaded)["points"])
    assert block is not None and 6 <= len(block["rules"]) <= 10 and block["tiers"]
    for rule in block["rules"]:
        assert rule["feature"] not in FOLLOW_UP_COLUMNS and not rule["feature"].startswith("Asymmetrique")


# --------------------------------------------------------------------------- end to end
QUICK = {k: v for k, v in SMALL_PROJECT.items() if not k.startswith("model.")}


def _cfg(root: Path, name: str, overrides: tuple[str, ...] = ()):
    settings = QUICK if "model=points" in overrides or "model=logreg" in overrides else SMALL_PROJECT
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, [f"paths.root={root}", *(f"{k}={v}" for k, v in settings.items()), *overrides])


@pytest.fixture(scope="module")
def project(project_copy) -> Path:
    """SMALL_PROJECT generated, ingested and featured (the shared project's data, no store or model)."""
    return project_copy("points", tracking=False)


def only(project: Path, features: set[str]) -> str:
    """An override leaving every other feature out: a quick fit of the models beside the sheet."""
    columns = pd.read_parquet(project / "data/features/synthetic/snapshots.parquet").columns
    kept = {s.LEAD_ID, s.AS_OF, s.LABEL, *features}
    return f"features.exclude=[{','.join(c for c in columns if c not in kept)}]"


# every feature of the synthetic sheet but days_since_last_activity (its rule is skipped)
SHEET_FEATURES = {"source", "seniority", "corporate_email", "employees", "n_demo_request_90d"}
SHEET_FEATURES |= {"n_page_pricing_30d", "n_form_submit_30d", "n_unsubscribe_90d", "browser", "industry"}


def evaluate(project: Path, overrides: tuple[str, ...]) -> tuple[TrainingResult, str]:
    """``train_and_evaluate`` on the snapshots as the train stage reads them, and the model report page."""
    cfg = OmegaConf.to_container(_cfg(project, "train", overrides), resolve=True)
    folder = project / "data/features/synthetic"
    snapshots = pd.read_parquet(folder / "snapshots.parquet")
    snapshots = snapshots.drop(columns=[c for c in cfg["features"]["exclude"] if c in snapshots])
    records = json.loads((folder / "feature_metadata.json").read_text())
    metadata = {m["name"]: FeatureMeta(**m) for m in records if m["name"] in snapshots}
    result = train_and_evaluate(snapshots, metadata, cfg)
    run = model_report.RunInfo(run_id="r1", version="1", registered_model="leadml-synthetic")
    context = model_report.model_report_context(result, GateDecision(True, ["ok"]), run, cfg, metadata)
    return result, model_report.render_model_report(context)


@pytest.mark.slow
def test_model_points_trains_and_scores_end_to_end(project: Path) -> None:
    with local_tracking():
        summary = run_train(_cfg(project, "train", ("model=points", only(project, SHEET_FEATURES))))
        comparison = summary.comparison
        expected = {"points", "points_uncalibrated", "points_baseline", "logreg_baseline"}
        assert expected <= set(comparison.index)
        assert comparison.loc["points", "roc_auc"] > 0.7  # the sheet ranks, if less well than a model
        page = Path(summary.report).read_text()
        assert 'id="points-tiers"' in page and "from points" in page and "n_demo_request_90d" in page
        assert "rule 10 (days_since_last_activity)" in page  # skipped: left out of the model
        assert summary.promoted

        scored = run_score(_cfg(project, "score"))
    assert scored.leads > 0 and set(scored.tiers) <= {"A", "B", "C", "D"}
    rows = pd.read_parquet(Path(scored.output))
    assert rows["probability"].between(0, 1).all() and "positive_reason_1" not in rows


@pytest.mark.slow
def test_the_default_model_is_compared_with_the_sheet(project: Path) -> None:
    result, page = evaluate(project, (only(project, SHEET_FEATURES), "evaluation.shap_rows=0"))
    assert result.model_name == "lightgbm" and result.points["row"] == "points_baseline"
    rows = result.comparison.index.tolist()
    assert rows.index("logreg_baseline") < rows.index("points_baseline") < rows.index("base_rate")
    assert "min_points" not in result.tiers  # the tier config's tiers: the model is not the sheet
    assert "points (traditional)" in page and "ROC AUC over traditional points scoring" in page


@pytest.mark.slow
def test_without_rules_training_works_and_model_points_says_where_to_add_them(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    few = only(project, {"source", "seniority", "employees", "n_page_view_30d"})
    with caplog.at_level(logging.WARNING):
        result, page = evaluate(project, ("model=logreg", "~data.points", few))
    assert "points_baseline" not in result.comparison.index and not result.points["available"]
    assert caplog.text.count("no points baseline") == 1
    assert 'id="points-none"' in page and "no points baseline" in page
    with pytest.raises(LeadmlError, match=r"no points rules.*conf/data/synthetic\.yaml"):
        evaluate(project, ("model=points", "~data.points", few))
