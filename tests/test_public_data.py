"""Data tests on the real public sets shipped beside the repository (../shared/data/public)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from factories import local_tracking
from leadml import schema as s
from leadml.cli import CONFIG_DIR, run_features, run_ingest, run_train

PUBLIC = Path(CONFIG_DIR).parent.parent / "shared" / "data" / "public"
pytestmark = [
    pytest.mark.public_data,
    pytest.mark.skipif(not PUBLIC.exists(), reason=f"public data not found at {PUBLIC}"),
]


def _cfg(name: str, root: Path, data: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, [f"paths.root={root}", f"paths.public_data_dir={PUBLIC}", f"data={data}"])


def test_x_education_flat_table_through_contracts_and_features(tmp_path: Path) -> None:
    record = run_ingest(_cfg("ingest", tmp_path, "x_education"))
    report = record["tables"]["leads"]
    assert report["input_rows"] == 9240
    assert report["accepted_rows"] + report["quarantined_rows"] == 9240
    summary = run_features(_cfg("features", tmp_path, "x_education"))
    snaps = pd.read_parquet(tmp_path / "data/features/x_education/snapshots.parquet")
    assert len(snaps) == report["accepted_rows"] == summary["snapshots"]
    assert snaps[s.LEAD_ID].is_unique
    assert snaps[s.ORDER_KEY].notna().all()
    assert 0.3 < snaps[s.LABEL].mean() < 0.45  # 38.5% of X Education's leads converted
    assert "Converted" not in snaps.columns and "Prospect ID" not in snaps.columns
    # "Select" is the form's placeholder: it must read as missing, never as a category
    for column in ("Specialization", "City", "Lead Profile"):
        assert "select" not in set(snaps[column].astype("string").dropna())
    meta = {
        m["name"]: m
        for m in json.loads((tmp_path / "data/features/x_education/feature_metadata.json").read_text())
    }
    assert meta["Lead Source"]["family"] == "source" and meta["TotalVisits"]["kind"] == "numeric"


def test_x_education_trains_with_its_own_out_of_order_split(tmp_path: Path) -> None:
    """``data=x_education`` chooses ``split=order`` itself (no time column); train runs end to end."""
    cfg = _cfg("train", tmp_path, "x_education")
    assert cfg.split.kind == "order"
    with local_tracking():
        run_ingest(_cfg("ingest", tmp_path, "x_education"))
        run_features(_cfg("features", tmp_path, "x_education"))
        summary = run_train(cfg)
    assert summary["split"]["test"]["rows"] > 0
    assert summary["version"] == "1"
    assert (tmp_path / "reports" / "x_education" / "model-v1.html").exists()
