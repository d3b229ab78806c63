"""Benchmark: explained scoring of 1,000,000 leads against LightGBM's own TreeSHAP.

Uses the million-lead data and the champion that ``bench_train.py --synthetic million``
left in ``data/bench/train-million`` (run that first). Builds the features of every lead
as of the data's last day (1M rows, whether open or not, so the batch is a full million),
then in one run measures on the same booster and rows:

1. ``scoring.score_leads`` with explanations: probability, percentile, tier, grouped
   reasons and sub-scores per row;
2. plain scoring (``LeadScorer.predict``) and the booster's own ``predict``;
3. LightGBM's ``predict(pred_contrib=True)``, the reference for explanations.

Peak memory is the process's maximum resident set size after each step. Results go to
benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_score.py [--workdir data/bench/train-million] [--rows 1000000]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_features import RESULTS, machine, replace_section

from leadml import schema as s
from leadml import tracking
from leadml.features import FeatureSettings, build_features, data_end
from leadml.scoring import TierSettings, score_leads
from leadml.stages import read_interim

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- score:begin -->", "<!-- score:end -->"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kilobytes on Linux


def default_feature_settings() -> FeatureSettings:
    """The shipped features config (for a model trained before models carried their settings)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from leadml.cli import CONFIG_DIR
    from leadml.stages import feature_settings

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = OmegaConf.to_container(compose("score"), resolve=True)
    return feature_settings(cfg["data"], cfg["features"])


def timed(label: str, fn):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    print(f"  {label}: {seconds:.1f} s, peak RSS {peak_rss_gb():.2f} GB", flush=True)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench" / "train-million")
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    store = args.workdir / "mlflow.db"
    if not store.exists():
        raise SystemExit(
            f"no trained model in {args.workdir}: run benchmarks/bench_train.py --synthetic million"
        )
    tracking.configure(f"sqlite:///{store}", "leadml-synthetic", args.workdir / "mlruns")
    model_uri, version = tracking.production_model("leadml-synthetic")
    scorer = tracking.load_scorer(model_uri)
    tables = read_interim(args.workdir / "data" / "interim" / "synthetic", s.CRM_TABLES)
    as_of = data_end(tables).normalize()
    settings = (
        FeatureSettings.from_mapping(scorer.feature_settings)
        if getattr(scorer, "feature_settings", None)
        else default_feature_settings()
    )
    leads = tables[s.LEADS].head(args.rows)
    accounts, activities = tables[s.ACCOUNTS], tables[s.ACTIVITIES]
    del tables
    feature_seconds, features = timed(
        f"features of {len(leads):,} leads",
        lambda: build_features(leads, accounts, activities, as_of, settings),
    )
    rows = len(features)
    booster = scorer.model.booster
    prepared = scorer.model.prepare(features)
    trees = booster.num_trees() if scorer.model.best_iteration <= 0 else scorer.model.best_iteration
    explained, scored = timed(
        "score_leads with explanations", lambda: score_leads(scorer, features, TierSettings())
    )
    rss_explained = peak_rss_gb()
    plain, _ = timed("LeadScorer.predict", lambda: scorer.predict(features))
    native, _ = timed(
        "booster.predict", lambda: booster.predict(prepared, num_iteration=scorer.model.best_iteration)
    )
    contrib, values = timed(
        "booster.predict(pred_contrib=True)",
        lambda: booster.predict(prepared, pred_contrib=True, num_iteration=scorer.model.best_iteration),
    )
    assert np.isfinite(np.asarray(values)).all() and len(scored) == rows
    table = [
        ("explained scoring (`score_leads`: probability, tier, grouped reasons, sub-scores)", explained),
        ("LightGBM `predict(pred_contrib=True)` (reference for explanations)", contrib),
        ("plain scoring (`LeadScorer.predict`: preparation, booster, calibrator)", plain),
        ("LightGBM `predict` (reference for plain scoring)", native),
    ]
    rows_option = "" if args.rows == 1_000_000 else f" --rows {args.rows}"
    lines = [
        BEGIN,
        f"## Scoring {rows:,} leads (model version {version} from `bench_train.py --synthetic million`)",
        "",
        f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d} on {machine()}.",
        f"Command: `.venv/bin/python benchmarks/bench_score.py{rows_option}`"
        " (after `bench_train.py --synthetic million`)",
        "",
        f"Model: {trees} trees, {booster.num_feature()} features. Features built first "
        f"({feature_seconds:.1f} s, as of {as_of:%Y-%m-%d}).",
        "",
        "| measure | wall time | rows per second |",
        "|---|---|---|",
        *[f"| {label} | {seconds:.1f} s | {rows / seconds:,.0f} |" for label, seconds in table],
        "",
        f"Explained scoring runs at {contrib / explained:.2f}x LightGBM's own TreeSHAP throughput and "
        f"plain scoring at {native / plain:.2f}x the booster's `predict`. Peak resident memory of the "
        f"process after explained scoring: {rss_explained:.2f} GB (features and model included).",
        END,
    ]
    section = "\n".join(lines)
    replace_section(section, BEGIN, END)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
