"""FLAML on leadml's rows: the AutoML half of bench_reference.py, run in its own virtual environment.

Not run by itself: bench_reference.py writes, in one folder, ``pre_test.parquet`` (every row before
the test window: the feature columns, ``label`` and ``is_validation``, True for its latest 20%) and
``test.parquet``, then runs this script with ``.venv-automl/bin/python`` (FLAML and its learners are
kept out of the project's environment). It fits FLAML twice on the pre-test rows and scores the test
rows:

- ``time_ordered``: searched on the earlier 80% with the latest 20% as the validation set, then the
  best configuration refitted on every pre-test row (``retrain_from_log(train_full=True)``; FLAML does
  not retrain by itself when given ``X_val``);
- ``random_holdout``: FLAML's default ``eval_method="holdout"`` (a stratified random 10%), which
  retrains the best configuration on every pre-test row itself.

Writes ``flaml.json`` beside the inputs.

    .venv-automl/bin/python benchmarks/reference_flaml.py FOLDER [--time-budget 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import flaml
import pandas as pd
from flaml import AutoML
from sklearn.metrics import roc_auc_score

LABEL, VALIDATION = "label", "is_validation"


def _settings(time_budget: float, seed: int, log_file: Path) -> dict[str, Any]:
    return {
        "task": "classification",
        "metric": "roc_auc",
        "time_budget": time_budget,
        "seed": seed,
        "log_file_name": str(log_file),
        "verbose": 1,
    }


def _figures(
    automl: AutoML, search: AutoML, x_test: pd.DataFrame, y_test: pd.Series, seconds: float, rows: int
) -> dict[str, Any]:
    """``automl`` scores the test rows; ``search`` is the one that searched (the same, or not)."""
    return {
        "roc_auc": float(roc_auc_score(y_test, automl.predict_proba(x_test)[:, 1])),
        "best_learner": search.best_estimator,
        "best_config": {k: v for k, v in (search.best_config or {}).items()},
        "validation_roc_auc": 1.0 - float(search.best_loss),
        "trials": len(search.config_history),
        "fit_rows": rows,
        "seconds": round(seconds, 1),
    }


def time_ordered(
    pre: pd.DataFrame, x_test: pd.DataFrame, y_test: pd.Series, budget: float, seed: int, folder: Path
) -> dict[str, Any]:
    started = time.perf_counter()
    features = [c for c in pre.columns if c not in (LABEL, VALIDATION)]
    fit, val = pre[~pre[VALIDATION]], pre[pre[VALIDATION]]
    log_file = folder / "flaml-time-ordered.log"
    search = AutoML()
    search.fit(
        fit[features], fit[LABEL], X_val=val[features], y_val=val[LABEL], **_settings(budget, seed, log_file)
    )
    validation_only = float(roc_auc_score(y_test, search.predict_proba(x_test)[:, 1]))
    # the best logged configuration refitted on every pre-test row (fresh object: no X_val of the search)
    refit = AutoML(verbose=1)
    refit.retrain_from_log(
        str(log_file),
        X_train=pre[features],
        y_train=pre[LABEL],
        task="classification",
        train_best=True,
        train_full=True,
    )
    figures = _figures(refit, search, x_test, y_test, time.perf_counter() - started, len(pre))
    figures["search_fit_rows"] = len(fit)
    figures["validation_rows"] = len(val)
    figures["roc_auc_before_refit"] = validation_only
    return figures


def random_holdout(
    pre: pd.DataFrame, x_test: pd.DataFrame, y_test: pd.Series, budget: float, seed: int, folder: Path
) -> dict[str, Any]:
    started = time.perf_counter()
    features = [c for c in pre.columns if c not in (LABEL, VALIDATION)]
    automl = AutoML()
    automl.fit(
        pre[features],
        pre[LABEL],
        eval_method="holdout",
        **_settings(budget, seed, folder / "flaml-random-holdout.log"),
    )
    return _figures(automl, automl, x_test, y_test, time.perf_counter() - started, len(pre))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--time-budget", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pre = pd.read_parquet(args.folder / "pre_test.parquet")
    test = pd.read_parquet(args.folder / "test.parquet")
    pre[LABEL] = pre[LABEL].astype(int)
    x_test, y_test = test.drop(columns=[LABEL]), test[LABEL].astype(int)

    result: dict[str, Any] = {"flaml_version": flaml.__version__, "time_budget": args.time_budget}
    for name, run in (("time_ordered", time_ordered), ("random_holdout", random_holdout)):
        result[name] = run(pre, x_test, y_test, args.time_budget, args.seed, args.folder)
        print(
            f"  FLAML {name.replace('_', ' ')}: test ROC AUC {result[name]['roc_auc']:.4f}"
            f" (best {result[name]['best_learner']}, validation {result[name]['validation_roc_auc']:.4f},"
            f" {result[name]['trials']} trials, {result[name]['seconds']:.0f} s)",
            flush=True,
        )
    (args.folder / "flaml.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
