"""``leadml-backtest``: the training procedure run period after period over the latest rows."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import yaml

from leadml.adapters import tracking
from leadml.adapters.layout import read_features
from leadml.adapters.sources import masked_urls, write_csv_atomic, write_json_atomic
from leadml.modelling.backtest import (
    CSV,
    JSON,
    PNG,
    SHIFT,
    WATCH,
    BacktestSettings,
    run_backtest_folds,
    summary_sentences,
    table_lines,
)
from leadml.reporting.plots import backtest_figure

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestResult:
    """One backtest: its table, its plain-words summary and where it was written and tracked."""

    data: str
    model: str
    split_kind: str
    table: pd.DataFrame  # one row per period (backtest.csv)
    summary: tuple[str, ...]  # sentences on base-rate shifts, calibration and the population
    files: Mapping[str, str]  # csv, png and json written to report_dir
    run_id: str
    tracking_uri: str
    seconds: float

    @property
    def table_lines(self) -> list[str]:
        """The table as the CLI prints it, one line per period under a header."""
        return table_lines(self.table)


def backtest_stage(cfg: Mapping[str, Any], root: Path) -> BacktestResult:
    """Read the features, run every fold, write backtest.csv/.png/.json and log one MLflow run."""

    started = time.perf_counter()
    settings = BacktestSettings.from_mapping(cfg["backtest"])
    snapshots, metadata, features_manifest, _ = read_features(
        Path(cfg["input_dir"]), cfg["features"].get("exclude", ())
    )
    mlflow_cfg = cfg["mlflow"]
    uri = tracking.resolve_tracking_uri(mlflow_cfg.get("tracking_uri"), root)
    tracking.configure(uri, mlflow_cfg["experiment"], Path(mlflow_cfg["artifact_root"]))

    table = run_backtest_folds(snapshots, metadata, cfg)
    sentences = summary_sentences(table, settings)

    out = Path(cfg["report_dir"])
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": out / CSV, "png": out / PNG, "json": out / JSON}
    write_csv_atomic(table, files["csv"], index=False)
    figure = backtest_figure(table, settings)
    figure.savefig(files["png"], dpi=110, bbox_inches="tight")
    plt.close(figure)

    model = cfg["model"]["name"]
    means = {
        "roc_auc": table["roc_auc"].mean(),
        "ece": table["ece"].mean(),
        "ece_recent": table["ece_recent"].mean(),
        "brier": table["brier"].mean(),
        "brier_recent": table["brier_recent"].mean(),
        "score_psi": table["score_psi"].mean(),
    }
    flags = {
        "base_rate_shift": table.loc[table["base_rate_shift"], "period"].tolist(),
        "population_shift": table.loc[table["population"] == SHIFT, "period"].tolist(),
        "population_watch": table.loc[table["population"] == WATCH, "period"].tolist(),
    }
    with tracking.run(run_name=f"backtest-{model}", tags={"leadml.kind": "backtest"}) as run_id:
        tracking.log_params(masked_urls({k: v for k, v in cfg.items() if k != "hydra"}))
        tracking.log_text(yaml.safe_dump(_plain_tree(masked_urls(dict(cfg))), sort_keys=False), "config.yaml")
        for record in table.to_dict(orient="records"):
            numbers = {k: _number(v) for k, v in record.items() if k != "period" and _number(v) is not None}
            tracking.log_metrics(numbers, prefix="backtest.", step=int(record["period"]))
        tracking.log_metrics(means, prefix="backtest.mean.")
        tracking.log_metrics(
            {"base_rate_shift_periods": len(flags["base_rate_shift"]),
             "population_shift_periods": len(flags["population_shift"])},
            prefix="backtest.",
        )  # fmt: skip
        record = {
            "data": cfg["data"]["name"],
            "model": model,
            "split_kind": cfg["split"]["kind"],
            "settings": _plain_tree(dict(cfg["backtest"])),
            "features_fingerprint": features_manifest.get("fingerprint"),
            "summary": sentences,
            "flags": flags,
            "means": {k: _number(v) for k, v in means.items()},
            "periods": [{k: _json_value(v) for k, v in r.items()} for r in table.to_dict(orient="records")],
            "files": {k: str(v) for k, v in files.items()},
            "run_id": run_id,
            "tracking_uri": tracking.masked_uri(uri),
            "seconds": round(time.perf_counter() - started, 1),
        }
        write_json_atomic(record, files["json"])
        for path in files.values():
            tracking.log_file(path, "backtest")
        tracking.set_tags({"backtest.summary": " | ".join(sentences)[:5000]})
    return BacktestResult(
        data=record["data"],
        model=model,
        split_kind=record["split_kind"],
        table=table,
        summary=tuple(sentences),
        files=record["files"],
        run_id=run_id,
        tracking_uri=record["tracking_uri"],
        seconds=record["seconds"],
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating) and math.isfinite(float(value)):
        return float(value)
    return None


def _json_value(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(float(value)) else None
    return value


def _plain_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_tree(v) for v in value]
    return value
