"""Flat tables through ingest and features the way a user adds one: exact duplicate rows and no time.

A table without an id column (``id: source_row``) may hold the same lead several times: the copies
are counted at ingest, tied together by ``dup_group`` and never split across windows. A table with
neither ``time:`` nor ``order:`` is split at random by itself (:func:`leadml.modelling.split.resolve_split`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadml.cli import run_features, run_ingest
from leadml.data import schema as s
from leadml.data.ingest import find_duplicates
from leadml.errors import ContractError, LeadmlError
from leadml.modelling.split import RANDOM_FALLBACK_NOTE, SplitSettings, resolve_split, split_with_report

DATA_CONFIG = """\
name: {name}
kind: flat
table: {{format: csv, path: {path}}}
contract:
  id: source_row
  target: converted
  positive: ["yes"]
  negative: ["no"]
{extra}
  numeric: [visits, minutes]
  categorical: [channel]
  personal: [email]
"""
# what each split kind needs from the contract (the created column is a feature otherwise)
CONTRACT_LINES = {
    "time": "  time: created",
    "order": "  order: source_row\n  drop: [created]",
    "random": "  drop: [created]",
}
# rows of leads_with_copies: 500 distinct leads, 40 copied once, 10 twice, 1 copied once and once
# more with the other label, 15 once with the other label
EXACT_ROWS, EXACT_GROUPS, CONFLICTING_ROWS, ROWS = 40 * 2 + 10 * 3 + 2, 40 + 10 + 1, 15 * 2 + 3, 577


def distinct_leads(n: int = 500, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n)
    converted = rng.random(n) < 1 / (1 + np.exp(-(visits - 4) / 1.5))
    return pd.DataFrame(
        {
            "created": (pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 730, n), unit="D"))
            .strftime("%Y-%m-%d")
            .to_numpy(),
            "channel": rng.choice(["paid_search", "organic", "referral"], n),
            "visits": visits,
            "minutes": rng.permutation(n) / 4,  # every lead differs from every other
            "email": [f"person{i}@example.com" for i in range(n)],
            "converted": np.where(converted, "yes", "no"),
        }
    )


def leads_with_copies(seed: int = 5) -> pd.DataFrame:
    """``distinct_leads`` with exact copies and copies with the other label, shuffled through the file."""
    base = distinct_leads(seed=seed)
    pick = np.random.default_rng(seed + 1).permutation(len(base))
    once, twice, flipped, both = pick[:40], pick[40:50], pick[50:65], pick[65:66]

    def other_label(rows: np.ndarray) -> pd.DataFrame:
        copy = base.iloc[rows].copy()
        copy["converted"] = np.where(copy["converted"] == "yes", "no", "yes")
        return copy

    parts = [base, base.iloc[once], base.iloc[twice], base.iloc[twice], base.iloc[both]]
    rows = pd.concat([*parts, other_label(flipped), other_label(both)], ignore_index=True)
    return rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _config(stage: str, root: Path, config_dir: Path, name: str):
    from hydra import compose, initialize_config_dir

    from leadml.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            stage, [f"hydra.searchpath=[file://{config_dir}]", f"data={name}", f"paths.root={root}"]
        )


def prepare(tmp_path: Path, leads: pd.DataFrame, kind: str) -> tuple[dict, dict, pd.DataFrame]:
    """(ingest manifest, features manifest, snapshots) of ``leads`` as a user's CSV export."""
    name = f"exports_{kind}"
    config_dir = tmp_path / "my_configs"
    (config_dir / "data").mkdir(parents=True, exist_ok=True)
    csv = tmp_path / f"{name}.csv"
    leads.to_csv(csv, index=False)
    config = DATA_CONFIG.format(name=name, path=csv, extra=CONTRACT_LINES[kind])
    (config_dir / "data" / f"{name}.yaml").write_text(config)
    root = tmp_path / "project"
    ingested = run_ingest(_config("ingest", root, config_dir, name))
    featured = run_features(_config("features", root, config_dir, name))
    snapshots = pd.read_parquet(root / "data" / "features" / name / "snapshots.parquet")
    return ingested, featured, snapshots


@pytest.mark.parametrize("kind", ["time", "order", "random"])
def test_exact_copies_are_counted_at_ingest_and_kept_in_one_split_window(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ingested, featured, snapshots = prepare(tmp_path, leads_with_copies(), kind)
    counts = ingested.tables["leads"]["duplicates"]
    assert (counts["rows"], counts["groups"], counts["conflicting_rows"]) == (
        EXACT_ROWS,
        EXACT_GROUPS,
        CONFLICTING_ROWS,
    )
    sentence = (
        "112 rows are exact copies of another row (in 51 groups), kept together in one split window; "
        "33 rows share their features with a row of the other label"
    )
    assert counts["sentence"] == sentence
    assert featured.duplicates == counts
    assert f"ingest leads: {sentence}" in capsys.readouterr().out
    # the group key is the lead id (row number) of the group's first row, and never a feature
    assert len(snapshots) == ROWS and snapshots[s.DUP_GROUP].nunique() == ROWS - EXACT_ROWS + EXACT_GROUPS
    first_row = snapshots[s.LEAD_ID].astype(int).groupby(snapshots[s.DUP_GROUP]).min()
    assert (first_row.index.astype(int) == first_row.to_numpy()).all()
    metadata = json.loads(
        (tmp_path / "project/data/features" / f"exports_{kind}/feature_metadata.json").read_text()
    )
    assert s.DUP_GROUP not in {m["name"] for m in metadata}

    settings, note = resolve_split(snapshots, SplitSettings(test_months=4, calibration_months=4))
    assert settings.kind == kind and (note is None) == (kind == "time")
    result = split_with_report(snapshots, settings)
    kept = pd.concat([part.assign(window=name) for name, part in result.parts.items()])
    assert (kept.groupby(s.DUP_GROUP)["window"].nunique() == 1).all()
    dropped = sum(result.duplicate_rows.values()) + sum(result.purged_rows.values())
    assert len(kept) + dropped + result.gap_rows + result.later_rows == ROWS
    if kind == "order":  # copies further down the file than their first row's window: dropped, counted
        assert result.duplicate_rows["train"] == 0 and dropped > 0


def test_the_counts_match_a_plain_pandas_count_and_conflicts_are_not_grouped() -> None:
    leads = leads_with_copies(seed=9).rename(columns={"converted": s.LABEL})
    leads.insert(0, s.LEAD_ID, [str(i + 1) for i in range(len(leads))])
    found = find_duplicates(leads, ignore=[s.LEAD_ID])
    compared = leads.drop(columns=[s.LEAD_ID])
    features = [column for column in compared.columns if column != s.LABEL]
    assert found.rows == int(compared.duplicated(keep=False).sum()) == EXACT_ROWS
    assert found.groups == int(compared[compared.duplicated(keep=False)].drop_duplicates().shape[0])
    labels = compared.groupby(features)[s.LABEL].transform("nunique")
    assert found.conflicting_rows == int((labels > 1).sum()) == CONFLICTING_ROWS
    assert found.group is not None
    # a row and its copy with the other label are not one group: only exact copies are kept together
    sizes = found.group.map(found.group.value_counts())
    assert int((sizes > 1).sum()) == EXACT_ROWS
    later_copy = leads.duplicated(subset=[*features, s.LABEL], keep="first")
    assert (found.group[later_copy] != leads.loc[later_copy, s.LEAD_ID]).all()
    assert (found.group[~later_copy] == leads.loc[~later_copy, s.LEAD_ID]).all()  # first rows name the group


def test_missing_values_are_equal_and_a_source_column_named_dup_group_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            s.LEAD_ID: ["1", "2", "3"],
            s.LABEL: [1, 1, 1],
            "a": pd.Series([None, None, "x"], dtype="str"),
            "b": [np.nan, np.nan, np.nan],
        }
    )
    found = find_duplicates(frame, ignore=[s.LEAD_ID])
    assert (found.rows, found.groups, found.conflicting_rows) == (2, 1, 0)
    assert found.group is not None and found.group.tolist() == ["1", "1", "3"]
    without = find_duplicates(frame.iloc[2:], ignore=[s.LEAD_ID])
    assert (without.rows, without.group) == (0, None)
    assert without.sentence() == (
        "no row is an exact copy of another; 0 rows share their features with a row of the other label"
    )
    with pytest.raises(ContractError, match="dup_group would clash with the columns ingestion adds"):
        prepare(tmp_path, distinct_leads().assign(dup_group="x"), "random")


def test_a_flat_config_without_time_or_order_ingests_builds_features_and_splits_at_random(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ingested, featured, snapshots = prepare(tmp_path, distinct_leads(), "random")
    printed = capsys.readouterr().out
    assert "ingest leads: 500 rows in, 500 accepted, 0 quarantined" in printed
    assert "(no time column: one row per lead)" in printed and "exact cop" not in printed
    assert ingested.tables["leads"]["duplicates"]["rows"] == 0 == featured.duplicates["rows"]
    assert {s.AS_OF, s.ORDER_KEY, s.DUP_GROUP}.isdisjoint(snapshots.columns)  # no copies: no group key
    with pytest.raises(LeadmlError, match=r"split needs column\(s\) \['as_of'\]"):  # what train did before
        split_with_report(snapshots, SplitSettings())
    settings, note = resolve_split(snapshots, SplitSettings())
    assert settings.kind == "random" and note == RANDOM_FALLBACK_NOTE
    parts = split_with_report(snapshots, settings).parts
    assert sum(len(part) for part in parts.values()) == 500
    assert set(parts["train"][s.LEAD_ID]).isdisjoint(parts["test"][s.LEAD_ID])


def test_the_group_key_is_never_a_model_feature() -> None:
    from leadml.modelling.models import feature_columns

    frame = pd.DataFrame(columns=[s.LEAD_ID, s.LABEL, s.DUP_GROUP, "visits"])
    assert feature_columns(frame) == ["visits"]
