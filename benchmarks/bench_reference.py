"""Benchmark: is leadml as good as a plain LightGBM and as AutoML (FLAML) on the same rows?

For each public data set (``../shared/data/public``): leadml's own feature snapshots, built exactly as
``leadml-train data=<set>`` builds them (ingest and features, in a fresh folder), split by leadml's own
split; the columns the leakage sentinel excludes are left out, as training leaves them out. On those
rows and features, scored by test ROC AUC on leadml's test window:

- a plain ``LGBMClassifier`` with fixed, ordinary settings (no early stopping, no calibration),
  fitted on every row before the test window (train + calibration windows), and on the train
  window only;
- FLAML (``.venv-automl``, its own virtual environment made on first use, see reference_flaml.py),
  searching ``--time-budget`` seconds with the latest 20% of the pre-test rows as its validation set
  (then refitted on every pre-test row), and with its default random holdout.

Writes benchmarks/reference.json (for bench_public.py to print beside leadml's figures) and a
section of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_reference.py [--sets olist,bank,x_education] [--time-budget 60]
        [--workdir data/bench/reference] [--skip-automl]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightgbm as lgb
import pandas as pd
from bench_features import machine, replace_section
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from leadml.adapters.layout import read_features  # noqa: E402
from leadml.cli import CONFIG_DIR, run_features, run_ingest  # noqa: E402
from leadml.data import schema as s  # noqa: E402
from leadml.modelling.guards import enforce_leakage  # noqa: E402
from leadml.modelling.models import NON_FEATURE_COLUMNS, categorical_columns, prepare_features  # noqa: E402
from leadml.modelling.split import SplitSettings, latest_rows, split_summary, split_with_report  # noqa: E402
from leadml.modelling.train import sentinel_report  # noqa: E402

BEGIN, END = "<!-- reference:begin -->", "<!-- reference:end -->"
JSON_PATH = ROOT / "benchmarks" / "reference.json"
SETS = ("olist", "bank", "x_education")
AUTOML_VENV = ROOT / ".venv-automl"
AUTOML_PACKAGES = ("flaml[automl]", "lightgbm", "pandas", "pyarrow", "scikit-learn")
AUTOML_CHILD = ROOT / "benchmarks" / "reference_flaml.py"
# share of the pre-test rows (the latest, by as_of, else order_key) FLAML validates on, time-ordered
VALIDATION_SHARE = 0.2
LIGHTGBM = {
    "n_estimators": 300,
    "learning_rate": 0.03,
    "num_leaves": 15,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "verbose": -1,
    "random_state": 0,
}
# not features: lead_id, as_of, order_key, label and, for a flat table with exact duplicate rows, the
# duplicate group (a lead id: for bank a row number, which read as a number would be a time proxy)
KEY_COLUMNS = (*NON_FEATURE_COLUMNS, getattr(s, "DUP_GROUP", "dup_group"))
FLAML_RUNS = {"time_ordered": "FLAML, time-ordered validation", "random_holdout": "FLAML, random holdout"}


def config(stage: str, data: str, root: Path, overrides: Sequence[str] = ()) -> Any:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            stage,
            [f"data={data}", f"paths.root={root}", "mlflow.tracking_uri=null", "progress=false", *overrides],
        )


def reference_rows(data: str, root: Path) -> dict[str, Any]:
    """leadml's windows of ``data`` (ingested and featured in ``root``), sentinel exclusions applied."""
    run_ingest(config("ingest", data, root))
    run_features(config("features", data, root))
    cfg = OmegaConf.to_container(config("train", data, root), resolve=True)
    snapshots, metadata, _, _ = read_features(Path(cfg["input_dir"]), cfg["features"].get("exclude") or ())
    split = split_with_report(snapshots, SplitSettings.from_mapping(cfg["split"]))
    parts = dict(split.parts)
    guards = cfg["guards"]
    flagged = enforce_leakage(sentinel_report(parts["train"], metadata, guards), guards["leakage_action"])
    excluded = flagged if guards["leakage_action"] == "exclude" else []
    parts = {window: part.drop(columns=excluded) for window, part in parts.items()}
    return {"parts": parts, "excluded": excluded, "flagged": flagged, "split": split_summary(parts)}


def model_frames(parts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Windows ``train``, ``pre_test`` (train + calibration, in order) and ``test`` as model input.

    The feature columns (every column but :data:`KEY_COLUMNS`) as leadml's LightGBM reads them
    (``prepare_features``: numbers as float64, categoricals as pandas categories of the training
    rows), plus ``label`` and the position columns (``as_of``, ``order_key``).
    """
    pre_test = pd.concat([parts["train"], parts["calibration"]])
    names = [c for c in pre_test.columns if c not in KEY_COLUMNS]
    categories = {c: pre_test[c].cat.categories.tolist() for c in categorical_columns(pre_test, names)}
    keep = [c for c in (s.AS_OF, s.ORDER_KEY, s.LABEL) if c in pre_test.columns]
    return {
        window: pd.concat([prepare_features(frame, names, categories), frame[keep]], axis=1)
        for window, frame in (("train", parts["train"]), ("pre_test", pre_test), ("test", parts["test"]))
    }


def _x(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in (s.AS_OF, s.ORDER_KEY, s.LABEL) if c in frame.columns])


def plain_lightgbm(fit: pd.DataFrame, test: pd.DataFrame) -> float:
    model = lgb.LGBMClassifier(**LIGHTGBM).fit(_x(fit), fit[s.LABEL].astype(int))
    return float(roc_auc_score(test[s.LABEL].astype(int), model.predict_proba(_x(test))[:, 1]))


def automl_python() -> Path:
    """The FLAML environment's python, made (python3 -m venv, pip from PyPI) when it is missing."""
    python = AUTOML_VENV / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import flaml.automl"], capture_output=True).returncode == 0
    ):
        return python
    print(f"making {AUTOML_VENV.relative_to(ROOT)} ({', '.join(AUTOML_PACKAGES)}) ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(AUTOML_VENV)], check=True)
    subprocess.run([python, "-m", "pip", "install", "--quiet", *AUTOML_PACKAGES], check=True)
    return python


def run_flaml(frames: dict[str, pd.DataFrame], folder: Path, time_budget: float) -> dict[str, Any]:
    """FLAML's two runs in its own environment on the pre-test rows, scored on the test rows."""
    python = automl_python()
    pre_test = frames["pre_test"]
    validation = latest_rows(pre_test, VALIDATION_SHARE)
    pre = _x(pre_test).assign(
        **{s.LABEL: pre_test[s.LABEL].astype(int), "is_validation": pre_test.index.isin(validation.index)}
    )
    test = _x(frames["test"]).assign(**{s.LABEL: frames["test"][s.LABEL].astype(int)})
    pre.reset_index(drop=True).to_parquet(folder / "pre_test.parquet")
    test.reset_index(drop=True).to_parquet(folder / "test.parquet")
    subprocess.run(
        [python, str(AUTOML_CHILD), str(folder), "--time-budget", str(time_budget)], check=True, cwd=folder
    )
    return json.loads((folder / "flaml.json").read_text())


def measure(data: str, workdir: Path, time_budget: float, skip_automl: bool) -> dict[str, Any]:
    started = time.perf_counter()
    root = workdir / data
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows = reference_rows(data, root)
    split = rows["split"]
    print(
        f"{data}: train {split['train']['rows']:,}, calibration {split['calibration']['rows']:,},"
        f" test {split['test']['rows']:,} rows; sentinel flagged {rows['flagged'] or 'nothing'},"
        f" dropped {rows['excluded'] or 'nothing'}",
        flush=True,
    )
    frames = model_frames(rows["parts"])
    pre_test, test = frames["pre_test"], frames["test"]
    result: dict[str, Any] = {
        "measured": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}",
        "rows_pre_test": len(pre_test),
        "rows_train": len(frames["train"]),
        "rows_test": len(test),
        "positives_pre_test": int(pre_test[s.LABEL].sum()),
        "positives_test": int(test[s.LABEL].sum()),
        "features": len(_x(test).columns),
        "categorical": categorical_columns(test, list(_x(test).columns)),
        "excluded": rows["excluded"],
        "split": split,
        "lightgbm_pre_test": plain_lightgbm(pre_test, test),
        "lightgbm_train_window": plain_lightgbm(frames["train"], test),
    }
    print(
        f"  plain LightGBM: test ROC AUC {result['lightgbm_pre_test']:.4f} (all pre-test rows),"
        f" {result['lightgbm_train_window']:.4f} (train window only)",
        flush=True,
    )
    if not skip_automl:
        flaml = run_flaml(frames, root, time_budget)
        result["flaml"] = {
            "measured": result["measured"],
            "version": flaml["flaml_version"],
            "time_budget": time_budget,
            **{run: flaml[run] for run in FLAML_RUNS},
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def section(figures: dict[str, Any]) -> str:
    sets = figures["sets"]
    versions = sorted({entry["flaml"]["version"] for entry in sets.values() if "flaml" in entry})
    budgets = sorted({entry["flaml"]["time_budget"] for entry in sets.values() if "flaml" in entry})
    lines = [
        BEGIN,
        "## Reference models on leadml's rows: plain LightGBM and FLAML",
        "",
        f"Measured {figures['measured']} on {figures['machine']} with `{figures['command']}`"
        f" (FLAML {', '.join(versions) or '-'} in `.venv-automl`, time budget"
        f" {', '.join(f'{b:g}' for b in budgets) or '-'} s per search). Same rows and features as"
        " `leadml-train data=<set>`: leadml's snapshots, its split and the columns its leakage sentinel"
        " excludes; test ROC AUC on leadml's test window. Plain LightGBM: `LGBMClassifier` with fixed"
        " settings (300 trees, learning rate 0.03, 15 leaves, no early stopping). FLAML time-ordered:"
        f" searched with the latest {VALIDATION_SHARE:.0%} of the pre-test rows as validation, the best"
        " configuration then refitted on every pre-test row; random holdout: FLAML's default"
        ' (`eval_method="holdout"`, a stratified random 10%), retrained on every pre-test row.',
        "",
        "| data | rows before test / test | plain LightGBM, all pre-test rows | plain LightGBM, train"
        " window only | FLAML, time-ordered | FLAML, random holdout | best learner (time-ordered /"
        " random) |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for data, entry in sets.items():
        flaml = entry.get("flaml", {})
        runs = {run: flaml.get(run, {}) for run in FLAML_RUNS}
        learners = " / ".join(runs[run].get("best_learner", "-") for run in FLAML_RUNS)
        lines.append(
            f"| {data} | {entry['rows_pre_test']:,} / {entry['rows_test']:,}"
            f" | {_auc(entry['lightgbm_pre_test'])} | {_auc(entry['lightgbm_train_window'])}"
            f" | {_auc(runs['time_ordered'].get('roc_auc'))} | {_auc(runs['random_holdout'].get('roc_auc'))}"
            f" | {learners} |"
        )
        if entry["excluded"]:
            notes.append(f"{data}: left out as the sentinel excludes them: {', '.join(entry['excluded'])}.")
        dates = {entry["measured"], flaml.get("measured", entry["measured"])}
        if dates != {figures["measured"]}:
            notes.append(f"{data}: measured {', '.join(sorted(dates))}.")
    lines += ["", *[f"- {note}" for note in notes], "", "Figures also in `benchmarks/reference.json`.", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--time-budget", type=float, default=60)
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench" / "reference")
    parser.add_argument("--skip-automl", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()

    previous = json.loads(JSON_PATH.read_text()) if JSON_PATH.exists() else {"sets": {}}
    measured = {}
    for data in args.sets.split(","):
        measured[data] = measure(data, args.workdir, args.time_budget, args.skip_automl)
        if args.skip_automl and "flaml" in previous["sets"].get(data, {}):
            measured[data]["flaml"] = previous["sets"][data]["flaml"]  # kept, with its own date

    command = ".venv/bin/python benchmarks/bench_reference.py" + (
        f" --sets {args.sets}" if args.sets != ",".join(SETS) else ""
    )
    command += f" --time-budget {args.time_budget:g}" if args.time_budget != 60 else ""
    command += " --skip-automl" if args.skip_automl else ""
    sets = {**previous["sets"], **measured}
    figures = {
        "measured": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%d}",
        "command": command,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
        "sets": {data: sets[data] for data in [*SETS, *sorted(set(sets) - set(SETS))] if data in sets},
    }
    JSON_PATH.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    text = section(figures)
    replace_section(text, BEGIN, END)
    print(text)
    print(f"{figures['seconds']:.0f} s in all")


if __name__ == "__main__":
    main()
