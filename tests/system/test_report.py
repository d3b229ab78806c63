"""leadml-report: the leadership report from a scored run, in a real browser (headless Chromium).

The project is the shared small trained one (a copy) whose leads are then given hostile names,
scored on two dates (so there are movers and resolved predictions), and reported with the
first name shown. The browser test drives Debian's Chromium through Playwright.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import local_tracking, project_config
from leadml.adapters.sinks import earlier_predictions, scored_partition
from leadml.cli import run_features, run_ingest, run_report, run_score
from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling.scorer import PROBABILITY
from leadml.reporting.leadership import ReportSettings, breakdown, calibration_table, resolved_predictions

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_COMPANY = '=1+2<img src=x onerror="alert(2)">'
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
EARLIER_RUN = "2025-09-01"


def _cfg(root: Path, name: str, overrides: list[str] | tuple[str, ...] = ()):
    return project_config(root, name, overrides)


@pytest.fixture(scope="module")
def reported(project_copy) -> dict:
    """Trained, scored on two dates, reported with first names shown: the summaries and paths.

    The champion is the shared one (conftest.trained_project, in a copy); the copy's raw tables
    then get the hostile names and are ingested and featured again. Names are never features: the
    snapshots come out as the champion was trained on them (checked), so it is the champion this
    data trains.
    """
    root = project_copy("report")
    snapshots = root / "data" / "features" / "synthetic" / "snapshots.parquet"
    trained_on = pd.read_parquet(snapshots)
    with local_tracking():
        raw = root / "data" / "raw" / "synthetic"
        leads = pd.read_parquet(raw / "leads.parquet")
        leads[s.FIRST_NAME] = HOSTILE_NAME
        leads.to_parquet(raw / "leads.parquet", index=False)
        accounts = pd.read_parquet(raw / "accounts.parquet")
        accounts[s.COMPANY_NAME] = HOSTILE_COMPANY
        accounts.to_parquet(raw / "accounts.parquet", index=False)
        for stage, run in (("ingest", run_ingest), ("features", run_features)):
            run(_cfg(root, stage))
        pd.testing.assert_frame_equal(pd.read_parquet(snapshots), trained_on)
        earlier = run_score(_cfg(root, "score", [f"score.as_of={EARLIER_RUN}"]))
        latest = run_score(_cfg(root, "score", ["score.as_of=latest"]))
        files = run_report(
            _cfg(
                root,
                "report",
                ["report.settings.personal_columns=[first_name]", "report.settings.top_leads=5"],
            )
        )
    return {"root": root, "earlier": earlier, "latest": latest, "files": files}


# --------------------------------------------------------------------------- files
def test_report_writes_html_and_a_csv_of_every_lead(reported: dict) -> None:
    files, latest = reported["files"], reported["latest"]
    assert files.html.exists() and files.csv.exists()
    assert files.as_of == latest.as_of
    ranked = pd.read_csv(files.csv)
    scored = pd.read_parquet(Path(latest.output))
    assert len(ranked) == len(scored) == files.leads
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked[PROBABILITY].is_monotonic_decreasing
    assert set(ranked[s.LEAD_ID]) == set(scored[s.LEAD_ID])
    assert s.FIRST_NAME in ranked.columns  # configured
    assert not {s.LAST_NAME, s.EMAIL, s.PHONE} & set(ranked.columns)  # not configured: never shown
    assert (ranked["company"] == "'" + HOSTILE_COMPANY).all()  # a spreadsheet shows it, never runs it


def test_personal_data_is_left_out_unless_configured(reported: dict, tmp_path: Path) -> None:
    root = reported["root"]
    with local_tracking():
        files = run_report(
            _cfg(root, "report", [f"report.output_dir={tmp_path}", "report.settings.top_leads=2"])
        )
    page = files.html.read_text()
    assert "alert(1)" not in page  # the first name is not configured, so it is nowhere
    assert s.FIRST_NAME not in pd.read_csv(files.csv).columns
    with pytest.raises(LeadmlError, match="personal_columns"):
        ReportSettings.from_mapping({"personal_columns": ["company_name"]})


def test_page_is_self_contained_and_escapes_data(reported: dict) -> None:
    page = reported["files"].html.read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onerror="alert(2)"' not in page
    # nothing fetched from anywhere: no external scripts, styles or images
    assert not re.search(r"""(src|href)=["']https?://""", page)
    assert len(re.findall(r"<script\b", page)) == 1  # the report's own sorting/filtering script
    # closed leads: the rate the probability is about sits beside the sales team's conversion rate
    assert "won within 90 days</th>" in page


def test_reasons_are_sentences_never_feature_names(reported: dict) -> None:
    ranked = pd.read_csv(reported["files"].csv)
    reasons = ranked.filter(regex=r"^(positive|negative)_reason_\d$").stack().dropna().astype(str)
    assert len(reasons) > 0
    snapshots = reported["root"] / "data" / "features" / "synthetic" / "snapshots.parquet"
    model_features = set(pd.read_parquet(snapshots).columns)
    internal = {name for name in model_features if "_" in name}
    for reason in reasons.unique():
        assert not set(re.findall(r"[a-z0-9]+(?:_[a-z0-9]+)+", reason)) & internal, reason
    assert reasons.str.contains(r"\d").mean() > 0.5  # most reasons quote a value


def test_earlier_predictions_resolve_against_outcomes(reported: dict) -> None:
    root, latest = reported["root"], reported["latest"]
    outcomes = pd.read_parquet(root / "data" / "scoring" / "synthetic" / "interim" / "outcomes.parquet")
    earlier = earlier_predictions(root / "data" / "scored" / "synthetic", latest.as_of)
    resolved = resolved_predictions(earlier, latest.as_of, outcomes, 90)
    assert len(resolved) > 0 and resolved[s.LEAD_ID].is_unique
    assert set(resolved["won"].unique()) <= {0, 1}
    table = calibration_table(resolved)
    assert table["leads"].sum() == len(resolved)
    # the earlier run's probabilities were honest: predicted and realised rates are close overall
    assert abs(resolved[PROBABILITY].mean() - resolved["won"].mean()) < 0.08


def test_scored_partition_picks_latest_or_a_date_and_names_missing_ones(reported: dict) -> None:
    scored_dir = reported["root"] / "data" / "scored" / "synthetic"
    assert scored_partition(scored_dir, "latest").name == f"as_of={reported['latest'].as_of:%Y-%m-%d}"
    assert scored_partition(scored_dir, EARLIER_RUN).name == f"as_of={EARLIER_RUN}"
    with pytest.raises(LeadmlError, match="no scored run for 2020-01-01"):
        scored_partition(scored_dir, "2020-01-01")
    with pytest.raises(LeadmlError, match="run leadml-score"):
        scored_partition(scored_dir / "nothing", "latest")


def test_breakdown_adds_up() -> None:
    frame = pd.DataFrame({
        "tier": ["A", "B", "A", "D"], PROBABILITY: [0.5, 0.2, 0.4, 0.01],
        "expected_value": [100.0, 50.0, np.nan, 1.0],
    })  # fmt: skip
    table = breakdown(frame, "tier", ["A", "B", "C", "D"])
    assert table["tier"].tolist() == ["A", "B", "D"]
    assert table["leads"].sum() == 4
    assert table.loc[0, "expected_conversions"] == pytest.approx(0.9)
    assert table.loc[0, "expected_revenue"] == pytest.approx(100.0)
    assert table["share"].sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make test installs Debian's chromium when it runs as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _visible_size(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    return box["width"], box["height"]


def test_report_in_a_browser(reported: dict, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(reported["files"].html.as_uri())
    page.wait_for_load_state("load")

    # the tier table, a lead card and the charts are there, with a size
    for selector in ("#tier-table", "#lead-1", "#lead-1 .waterfall", "#ranked-table", "#conversion-tier"):
        width, height = _visible_size(page.locator(selector))
        assert width > 0 and height > 0, selector
    tiers = page.locator("#tier-table tbody tr")
    assert tiers.count() >= 2
    for chart in page.locator("img.chart").all():
        chart.scroll_into_view_if_needed()
        assert chart.evaluate("img => img.complete && img.naturalWidth > 0"), "a chart did not render"
        assert _visible_size(chart)[1] > 50
    assert page.locator(".waterfall .bar").first.evaluate("bar => bar.getBoundingClientRect().width") > 0

    # the hostile name is text on the page, and nothing ran
    assert HOSTILE_NAME in page.locator("#ranked-table tbody tr").first.inner_text()
    assert HOSTILE_NAME in page.locator("#lead-1 h3").inner_text()
    assert dialogs == [] and errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests

    # sort by probability (ascending, then descending) by clicking its header
    rows = page.locator("#ranked-table tbody tr")
    header = page.locator("#ranked-table thead th", has_text="probability")
    header.click()
    ascending = _column(page, "probability")
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    header.click()
    assert _column(page, "probability") == sorted(ascending, reverse=True)

    # filter by tier, then by text
    total = rows.count()
    page.select_option("#tier-filter", "A")
    shown = _visible_rows(rows)
    assert 0 < len(shown) < total
    assert all(tier == "A" for tier, _ in shown)
    assert page.locator("#shown-count").inner_text() == str(len(shown))
    page.select_option("#tier-filter", "")
    first_id = rows.first.locator("td").nth(1).inner_text()
    page.fill("#filter", first_id)
    assert [lead for _, lead in _visible_rows(rows)] == [first_id]
    page.fill("#filter", "")
    assert page.locator("#shown-count").inner_text() == str(total)

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, reported["root"] / "report.png")
    page.close()


def _visible_rows(rows) -> list[tuple[str, str]]:
    """(data-tier, text of the second cell) of the rows Playwright's ``is_visible`` calls visible (a
    non-empty box, visibility "visible"), asked of the page at once: a call per row cost 30 s."""
    return [
        tuple(row)
        for row in rows.evaluate_all(
            """rows => rows.filter(row => {
                const box = row.getBoundingClientRect();
                return box.width > 0 && box.height > 0 && getComputedStyle(row).visibility === "visible";
            }).map(row => [row.getAttribute("data-tier"), row.querySelectorAll("td")[1].innerText])"""
        )
    ]


def _column(page, name: str) -> list[float]:
    """The probabilities of the ranked table's visible rows, top to bottom, as numbers."""
    headers = [h.inner_text().strip(" ▲▼") for h in page.locator("#ranked-table thead th").all()]
    index = headers.index(name)
    cells = page.locator(f"#ranked-table tbody tr td:nth-child({index + 1})")
    return [float(value) for value in cells.evaluate_all("cells => cells.map(c => c.dataset.sort)")]
