"""Segment models end to end (issue 24): on synthetic data with a planted segment (web_organic
leads convert against their firmographic fit), ``leadml-train`` with ``data.segments`` by source
gives that segment its own model, which beats the global model on the segment's test snapshots;
the segments without a difference fall back to the global model. One registered model routes
them, and the model report says which segment got its own model and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from factories import local_tracking, project_config
from leadml.adapters import tracking
from leadml.adapters.layout import read_features
from leadml.cli import run_features, run_generate, run_ingest, run_train
from leadml.data import schema as s
from leadml.modelling.scorer import LeadScorer, as_model_input

PLANTED = {"synthetic.n_leads": 5000, "synthetic.planted_segment": "web_organic"}
# a segment keeps its own model for a clear win only (a margin a sales-ops team might choose)
SEGMENTS = (
    "data.segments={by: source, margin: 0.05, groups: {organic: [web_organic], "
    "paid: [paid_search, paid_social], warm: [referral, partner, event, webinar]}}"
)
# the same procedure as the global model, with a short search (the test's time)
FAST = ("selection.trials=1", "selection.recency=[]", "selection.folds=2", SEGMENTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("segments")
    with local_tracking():
        for stage, run in (("generate", run_generate), ("ingest", run_ingest), ("features", run_features)):
            run(project_config(root, stage, changes=PLANTED))
        config = project_config(root, "train", FAST, changes=PLANTED)
        summary = run_train(config)
        scorer = tracking.load_scorer(f"models:/{summary.registered_model}/{summary.version}")
        table = tracking.run_artifacts(summary.run_id, ["segments.csv"])["segments.csv"]
    return {
        "root": root,
        "summary": summary,
        "scorer": scorer,
        "table": table.set_index("segment"),
        "config": config,
    }


def test_the_planted_segment_gets_its_own_model_and_the_others_fall_back(trained) -> None:
    table = trained["table"]
    assert set(table.index) == {"organic", "paid", "warm"}
    organic = table.loc["organic"]
    assert bool(organic["own_model"])
    assert organic["segment_roc_auc"] >= organic["global_roc_auc"] + 0.05  # on its own test snapshots
    assert organic["share_better"] >= 0.95
    assert not table.loc["paid", "own_model"] and not table.loc["warm", "own_model"]
    assert all(str(r).startswith("global model:") for r in table.loc[["paid", "warm"], "reason"])
    # what leadml-train prints, one line per segment
    printed = trained["summary"].segments
    assert len(printed) == 3 and printed[0].startswith("organic: own model: ROC AUC")


def test_one_registered_model_routes_each_segment_to_its_model(trained) -> None:
    scorer: LeadScorer = trained["scorer"]
    assert scorer.segments is not None and set(scorer.segments.scorers) == {"organic"}
    assert scorer.segments.column == s.SOURCE and scorer.segments.segment_of == {"web_organic": "organic"}
    config = OmegaConf.to_container(trained["config"], resolve=True)
    snapshots, *_ = read_features(Path(config["input_dir"]), config["features"].get("exclude", ()))
    rows = as_model_input(snapshots.tail(400), scorer.feature_names)
    organic = (rows[s.SOURCE] == "web_organic").to_numpy()
    assert 0 < organic.sum() < len(rows)
    predicted, contributions = scorer.predict_explained(rows)
    own = scorer.segments.scorers["organic"].predict(rows[organic])
    np.testing.assert_allclose(predicted["probability"].to_numpy()[organic], own["probability"], rtol=1e-9)
    alone = LeadScorer(scorer.model, scorer.calibrator, scorer.feature_names).predict(rows[~organic])
    np.testing.assert_allclose(predicted["probability"].to_numpy()[~organic], alone["probability"], rtol=1e-9)
    np.testing.assert_allclose(contributions.sum(axis=1), predicted["margin"], atol=1e-6)
    assert predicted.index.equals(rows.index)


def test_the_model_report_says_which_segment_got_its_own_model_and_why(trained) -> None:
    page = Path(trained["summary"].report).read_text()
    assert '<section id="segments">' in page and "Own models: Organic." in page
    assert (
        "own model: ROC AUC" in page and "global model: its own model was not better by 0.05 ROC AUC" in page
    )
    # each segment's values in words under its name, never a Python repr
    assert "Web Organic</span>" in page and "built-in method" not in page and "<bound method" not in page
