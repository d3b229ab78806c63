"""The CRM ingestion batch by batch (``data.batch_rows``): the same files as the whole tables in memory.

The stage reads each source in batches, so the nightly job's memory is bounded by a batch and not by
the export; what it writes must not depend on the batch size (the property test over hostile tables
is in ``tests/system/test_hostile_input.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from factories import assert_batches_ingest_as_whole_tables, project_config
from leadml.adapters import streamed_ingest
from leadml.adapters.sources import read_source, source_batches
from leadml.data import schema as s
from leadml.data.contracts import column_specs_from_config, crm_contracts
from leadml.data.ingest import ingest_crm, respelt_categories
from leadml.errors import LeadmlError
from leadml.stages.ingest import crm_contracts_of, ingest_settings, ingest_stage, source_specs


def _data(trained_project: Path) -> dict:
    return OmegaConf.to_container(project_config(trained_project, "ingest").data, resolve=True)


def _raw(data: dict) -> dict[str, pd.DataFrame]:
    return {table: read_source(spec) for table, spec in source_specs(data).items()}


@pytest.mark.parametrize("batch_rows", [1_777, 40_000])
def test_the_synthetic_export_in_batches_is_ingested_as_the_whole_tables(
    trained_project: Path, tmp_path: Path, batch_rows: int
) -> None:
    """Every table of the small project's export (5,000 leads, ~100,000 events, every kind of mess
    the generator plants) in batches of 1,777 rows and in one batch each."""
    data = {**_data(trained_project), "reference_time": "2026-01-01T00:00:00Z"}
    contracts = crm_contracts({s.LEADS: column_specs_from_config(data.get("extra_features"))})
    raw = _raw(data)
    assert len(raw[s.ACTIVITIES]) > 20 * 1_777  # many batches
    assert_batches_ingest_as_whole_tables(raw, contracts, ingest_settings(data), batch_rows, tmp_path)


def test_the_stage_writes_what_the_whole_tables_give_and_leaves_no_spill(
    trained_project: Path, tmp_path: Path
) -> None:
    data = {**_data(trained_project), "reference_time": "2026-01-01T00:00:00Z", "batch_rows": 5_000}
    summary = ingest_stage(data, tmp_path / "interim")
    contracts = crm_contracts({s.LEADS: column_specs_from_config(data.get("extra_features"))})
    raw = _raw(data)
    whole = ingest_crm(raw, contracts, ingest_settings(data))
    for table in s.CRM_TABLES:
        record = summary.tables[table]
        assert record["output_rows"] == len(whole.tables[table])
        assert record["columns"] == {str(c): str(d) for c, d in whole.tables[table].dtypes.items()}
        assert record["quarantined_rows"] == len(whole.quarantines[table])
        assert record["reasons"] == whole.reports[table].reason_counts
        assert record["warnings"] == whole.reports[table].warnings
        assert record["quarantine_path"] == str(tmp_path / "interim" / "quarantine" / f"{table}.parquet")
    written = sorted(path.name for path in (tmp_path / "interim").iterdir())
    assert written == sorted([*(f"{table}.parquet" for table in s.CRM_TABLES), "manifest.json", "quarantine"])
    recorded = json.loads((tmp_path / "interim" / "manifest.json").read_text())["tables"]
    for table, frame in raw.items():
        expected = respelt_categories(frame, contracts[table], ingest_settings(data))
        assert recorded[table].get("respelt", {}) == expected, table


def test_a_run_that_fails_midway_leaves_the_last_ingestion_as_it_was(
    trained_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {**_data(trained_project), "batch_rows": 5_000}
    interim = tmp_path / "interim"
    ingest_stage(data, interim)
    before = {path.name: path.read_bytes() for path in interim.rglob("*") if path.is_file()}

    def broken(*args: object, **kwargs: object) -> None:
        raise LeadmlError("disk went away")

    monkeypatch.setattr(streamed_ingest, "_resolve_duplicates", broken)
    with pytest.raises(LeadmlError, match="disk went away"):
        ingest_stage(data, interim)
    after = {path.name: path.read_bytes() for path in interim.rglob("*") if path.is_file()}
    assert after == before  # no partial file, no spill folder, the manifest and tables unchanged


@pytest.mark.parametrize("value", [0, -5, "many", 2.5, True])
def test_a_bad_batch_size_names_the_key(trained_project: Path, tmp_path: Path, value: object) -> None:
    with pytest.raises(LeadmlError, match=r"data\.batch_rows"):
        ingest_stage({**_data(trained_project), "batch_rows": value}, tmp_path)


def test_a_csv_source_read_in_batches_equals_the_whole_read(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        'id,created,note\nL1,2024-01-01,"a, quoted"\nL2,,NA\n" L3 ",2024-01-03,""\nL4,2024-01-04,1.50\n'
        "L5,2024-01-05,007\n",
        encoding="utf-8",
    )
    spec = {"path": str(path), "columns": {"lead_id": "id"}}
    whole = read_source(spec)
    for rows in (1, 2, 100):
        batches = list(source_batches(spec, rows))
        assert all(len(batch) <= max(rows, 1) for batch in batches[:-1])
        pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole)


def test_a_parquet_source_read_in_batches_equals_the_whole_read(tmp_path: Path) -> None:
    frame = pd.DataFrame({"lead_id": [f"L{i}" for i in range(10)], "n": range(10)})
    frame.to_parquet(tmp_path / "leads.parquet", index=False)
    spec = {"path": str(tmp_path / "leads.parquet")}
    batches = list(source_batches(spec, 3))
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), read_source(spec))
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet", index=False)
    (empty,) = source_batches({"path": str(tmp_path / "empty.parquet")}, 3)
    assert list(empty.columns) == ["lead_id", "n"] and empty.empty


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype({name: "str" for name, dtype in frame.dtypes.items() if dtype == "category"})


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_category_columns_read_as_dictionaries_hold_the_same_values(tmp_path: Path, file_format: str) -> None:
    """Category columns come as pandas categoricals (their few values checked once per batch), under
    their canonical names through the columns mapping; numbers asked for as categories stay numbers, and
    a category column the file lacks is no error (the contract names it)."""
    frame = pd.DataFrame(
        {
            "id": [f"L{i}" for i in range(7)],
            "channel": ["Web", None, " web ", "NA", "", "Web", "PPC"],
            "n": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    path = tmp_path / f"leads.{file_format}"
    frame.to_csv(path, index=False) if file_format == "csv" else frame.to_parquet(path, index=False)
    spec = {"path": str(path), "columns": {"lead_id": "id", "source": "channel"}}
    for rows in (2, 100):
        batches = list(source_batches(spec, rows, categories=["source", "n", "absent"]))
        assert all(isinstance(batch["source"].dtype, pd.CategoricalDtype) for batch in batches)
        if file_format == "parquet":
            assert all(batch["n"].dtype == "int64" for batch in batches)
        whole = pd.concat([_as_text(batch) for batch in batches], ignore_index=True)
        pd.testing.assert_frame_equal(whole, read_source(spec), check_dtype=file_format == "parquet")


def test_a_broken_csv_in_batches_stops_with_the_whole_read_s_message(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("id,created\nL1,2024-01-01\nL2,2024-01-02,extra\n", encoding="utf-8")
    with pytest.raises(LeadmlError, match="line 3"):
        list(source_batches({"path": str(path)}, 1))


def test_the_stage_s_contracts_take_the_data_config_s_limits() -> None:
    contracts = crm_contracts_of(
        {"limits": {"deal_value": {"max": 10}}, "extra_features": {"numeric": ["score"]}}
    )
    assert contracts["outcomes"].column("deal_value").max == 10.0
    assert contracts["leads"].column("estimated_deal_value").max == 1e12  # the others keep their defaults
    limited = crm_contracts_of(
        {"limits": {"score": {"min": 0, "max": 1}}, "extra_features": {"numeric": ["score"]}}
    )
    assert (limited["leads"].column("score").min, limited["leads"].column("score").max) == (0.0, 1.0)
