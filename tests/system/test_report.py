"""leadml-report: the leadership report from a scored run, in a real browser (headless Chromium).

The project is the shared small trained one (a copy) whose leads are then given hostile names,
scored on five dates over four months (so there are movers, resolved predictions and months to
measure the scoring programme over), and reported with the first name shown. The browser test
drives Debian's Chromium through Playwright.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from html import unescape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import README, SMALL_PROJECT, local_tracking, project_config, run_entry_point
from leadml import cli
from leadml.adapters import sinks, tracking
from leadml.adapters.sinks import earlier_predictions, scored_partition
from leadml.cli import run_features, run_ingest, run_report, run_score
from leadml.data import schema as s
from leadml.data.features import FeatureMeta
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
# the nights scored before the latest one: two in August (a lead scored on both counts once)
EARLIER_RUNS = ("2025-08-01", "2025-08-15", EARLIER_RUN, "2025-10-01")
PAGE_ROWS = 50  # rows of the ranked table at once: the small project's leads span several pages
WIDTHS = (1280, 1920)
# screenshots of every run are also copied here, for a person to look at (reports/ is not committed)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "reports" / "screenshots"


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
        earlier = None
        for day in EARLIER_RUNS:
            scored = run_score(_cfg(root, "score", [f"score.as_of={day}"]))
            earlier = scored if day == EARLIER_RUN else earlier
        latest = run_score(_cfg(root, "score", ["score.as_of=latest"]))
        files = run_report(
            _cfg(
                root,
                "report",
                [
                    "report.settings.personal_columns=[first_name]",
                    "report.settings.top_leads=5",
                    f"report.settings.page_rows={PAGE_ROWS}",
                ],
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
    # figures rounded for a CRM: probabilities to 4 places, money to whole units
    text = files.csv.read_text()
    assert not re.search(r"\d\.\d{5,}", text), "an unrounded figure"
    assert (ranked[PROBABILITY] == ranked[PROBABILITY].round(4)).all()
    if "expected_value" in ranked:
        assert (ranked["expected_value"].dropna() % 1 == 0).all()


def test_personal_data_is_left_out_unless_configured(reported: dict, tmp_path: Path) -> None:
    root = reported["root"]
    overrides = [
        f"report.output_dir={tmp_path}",
        "report.settings.top_leads=2",
        "report.settings.table_rows=100",
    ]
    with local_tracking():
        files = run_report(_cfg(root, "report", overrides))
    page = files.html.read_text()
    assert "alert(1)" not in page  # the first name is not configured, so it is nowhere
    assert s.FIRST_NAME not in pd.read_csv(files.csv).columns
    # above report.settings.table_rows the page holds the best leads and says the CSV is complete
    table = json.loads(re.search(r'<script type="application/json" id="ranked-data">(.*?)</script>', page)[1])
    assert len(table["rows"]) == 100 < table["total"] == files.leads == len(pd.read_csv(files.csv))
    assert 'id="table-cap"' in page and "the ranked CSV beside this page is complete" in page
    assert s.FIRST_NAME not in table["columns"]
    with pytest.raises(LeadmlError, match="personal_columns"):
        ReportSettings.from_mapping({"personal_columns": ["company_name"]})


def test_the_accounts_section_and_csv_hold_the_nights_account_rows(reported: dict) -> None:
    """The CSV is the run's account partition, ranked, company names inert, no per-group sums; the
    page's section shows the most likely accounts by company name, in words."""
    files, latest = reported["files"], reported["latest"]
    assert latest.accounts is not None and files.accounts_csv is not None
    partition = pd.read_parquet(Path(latest.accounts["output"]) / sinks.PART_FILE)
    ranked = pd.read_csv(files.accounts_csv)
    assert len(ranked) == len(partition) == latest.accounts["accounts"] > 0
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked[s.ACCOUNT_ID].tolist() == partition[s.ACCOUNT_ID].tolist()
    assert ranked["account_probability"].is_monotonic_decreasing
    assert (ranked[s.COMPANY_NAME] == "'" + HOSTILE_COMPANY).all()
    assert not any(c.startswith("group:") for c in ranked.columns)
    assert not re.search(r"\d\.\d{5,}", files.accounts_csv.read_text()), "an unrounded figure"
    page = files.html.read_text()
    section = page[page.index('<section id="accounts">') : page.index('<section id="ranked">')]
    assert section.count('<tr><td class="num">') == min(25, len(partition))
    assert partition[s.ACCOUNT_ID].iloc[0] in section and "History:" in section
    assert 'onerror="alert(2)"' not in section and "&lt;img" in section
    assert not re.search(r"p_(independent|max|sum)|account_probability|group:|logodds", section)


def test_page_is_self_contained_and_escapes_data(reported: dict) -> None:
    page = reported["files"].html.read_text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onerror="alert(2)"' not in page
    # nothing fetched from anywhere: no external scripts, styles or images
    assert not re.search(r"""(src|href)=["']https?://""", page)
    # the ranked table's data (JSON, with <, > and & escaped) and the report's own script
    assert len(re.findall(r"<script\b", page)) == 2 and page.count("</script>") == 2
    assert '<script type="application/json" id="ranked-data">' in page
    assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in page  # the name, inert in the JSON
    # points only: no log-odds and no technical drift lines for a sales leader (in the page's words,
    # not in its charts' base64, where any three letters turn up by chance)
    words = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "log-odds" not in words and "PSI" not in words
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


# what the reasons read like before the style guide (issue 20): none may appear anywhere a person reads
CODE_LIKE = (
    re.compile(r"(^|\s)0\.0 "),  # "0.0 recent e-mail clicks"
    re.compile(r"\b1 activities\b"),
    re.compile(r"\(1 = yes\)"),
    re.compile(r"half-life|weighted"),
    re.compile(r"\d\.0(?![\d%])"),  # a code read as a number: "campaign code: 1152.0"
    re.compile(r"\b1 days\b|\b0 days ago\b"),
    re.compile(r"[a-z]_[a-z]"),  # a raw code: "c_level", "web_organic"
    re.compile(r"\bunknown\b"),
)


def _code_like(texts: pd.Series) -> list[str]:
    return [text for text in texts.dropna().astype(str).unique() if any(p.search(text) for p in CODE_LIKE)]


def test_no_reason_reads_like_code_in_the_partition_the_csv_or_the_page(reported: dict) -> None:
    """The patterns the issue counted on the default data, scanned in every place a reason appears."""
    rows = pd.read_parquet(reported["latest"].output)
    reasons = rows.filter(regex=r"^((positive|negative)_reason_\d|movement)$").stack()
    assert len(reasons) > 0 and _code_like(reasons) == []
    ranked = pd.read_csv(reported["files"].csv)
    assert _code_like(ranked.filter(regex=r"_reason_\d$").stack()) == []
    page = reported["files"].html.read_text()
    table = json.loads(re.search(r'<script type="application/json" id="ranked-data">(.*?)</script>', page)[1])
    assert _code_like(pd.Series(table["strings"])) == []
    cards = re.findall(r'<div class="step"><span>(.*?)</span>', page)
    assert cards and _code_like(pd.Series(cards)) == []
    # a missing value is a reason in a lead's favour only where the features stage found that
    # missing tells (FeatureMeta.missing_informative); "unknown" never is
    metadata = json.loads(
        (reported["root"] / "data" / "features" / "synthetic" / "feature_metadata.json").read_text()
    )
    telling = {FeatureMeta(**m).describe(None) for m in metadata if m["missing_informative"]}
    favourable = rows.filter(regex=r"^positive_reason_\d$").stack().dropna().astype(str)
    assert set(favourable[favourable.str.contains("recorded")]) <= telling


def test_the_movers_say_why_each_lead_moved(reported: dict) -> None:
    """Scored on two dates: the partition's movement sentences, and the report's movers quoting them
    in today's words with points that add up to the change."""
    rows = pd.read_parquet(reported["latest"].output)
    carried = rows[rows["previous_probability"].notna()]
    assert len(carried) > 0 and carried["movement"].notna().all()
    page = reported["files"].html.read_text()
    movers = re.findall(r'<table class="movers">(.*?)</table>', page, flags=re.S)
    assert movers, "no movers table"
    said = re.findall(r"<td>((?:rose|fell) [\d.]+ points?: [^<]*)</td>", " ".join(movers))
    assert said, "the movers do not say why they moved"
    for text in said:
        head = float(re.match(r"(?:rose|fell) ([\d.]+)", text)[1])
        parts = [float(v) for v in re.findall(r"\(([+-][\d.]+)\)", text)]
        assert parts and max(abs(v) for v in parts) <= head + 30  # the quoted groups are of the change's size


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


def test_report_in_a_browser(reported: dict, browser) -> None:
    ranked = pd.read_csv(reported["files"].csv)
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 1000})
        problems = _watched(page)
        page.goto(reported["files"].html.as_uri())
        page.wait_for_load_state("load")
        _check_layout(page, width)
        _check_ranked_table(page, ranked)
        _check_cards(page, ranked)
        assert problems == {"dialogs": [], "errors": [], "requests": []}, problems
        page.locator("#lead-dialog").evaluate("dialog => dialog.open && dialog.close()")
        _screenshot(page, reported["root"] / "reports" / f"leadership-{width}.png")
        page.close()


def _watched(page) -> dict[str, list[str]]:
    """Alerts, script errors and requests beyond the file itself (none expected), as they come."""
    problems: dict[str, list[str]] = {"dialogs": [], "errors": [], "requests": []}
    page.on("dialog", lambda dialog: (problems["dialogs"].append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: problems["errors"].append(str(error)))
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(("file:", "data:")) else problems["requests"].append(request.url)
        ),
    )
    return problems


def _check_layout(page, width: int) -> None:
    """Everything is drawn, nothing is wider than the window, numbered lists have room for "12."."""
    for selector in ("#tier-table", "#lead-1", "#lead-1 .waterfall", "#ranked-table", "#conversion-tier"):
        box_width, height = _visible_size(page.locator(selector))
        assert box_width > 0 and height > 0, selector
    assert page.locator("#tier-table tbody tr").count() >= 2
    for chart in page.locator("img.chart").all():
        chart.scroll_into_view_if_needed()
        assert chart.evaluate("img => img.complete && img.naturalWidth > 0"), "a chart did not render"
        assert _visible_size(chart)[1] > 50
    assert page.locator(".waterfall .bar").first.evaluate("bar => bar.getBoundingClientRect().width") > 0
    # no horizontal cut-off: the page never scrolls sideways and no element reaches past the window
    # but inside a box that scrolls on its own; and the tables fit without scrolling
    overflow = page.evaluate(
        """() => {
            const wide = [];
            const inScroller = el => { for (let p = el.parentElement; p; p = p.parentElement) {
                if (getComputedStyle(p).overflowX === "auto") return true; } return false; };
            for (const el of document.querySelectorAll("body *")) {
                const box = el.getBoundingClientRect();
                const past = box.width && box.right > innerWidth + 1;
                if (past && !inScroller(el)) wide.push(el.tagName + "#" + el.id);
            }
            const tables = [...document.querySelectorAll(".table-wrap")]
                .filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.firstElementChild.id);
            return {page: document.documentElement.scrollWidth - innerWidth, wide, tables};
        }"""
    )
    assert overflow == {"page": 0, "wide": [], "tables": []}, (width, overflow)
    padding = page.locator("ol.timeline").first.evaluate(
        "ol => parseFloat(getComputedStyle(ol).paddingLeft) / parseFloat(getComputedStyle(ol).fontSize)"
    )
    assert padding >= 2.2, "two-digit list numbers would be clipped"


def _check_ranked_table(page, ranked: pd.DataFrame) -> None:
    """Every lead is in the page: sorted, filtered by tier and text, paged."""
    rows = page.locator("#ranked-table tbody tr")
    assert rows.count() == min(PAGE_ROWS, len(ranked))
    assert page.locator("#shown-count").inner_text() == f"{len(ranked):,}"
    # the hostile name is text on the page, and nothing ran
    assert HOSTILE_NAME in rows.first.inner_text()

    # sort by probability (ascending, then descending) by clicking its header: over all leads
    header = page.locator("#ranked-table thead th", has_text="probability")
    header.click()
    ascending = _column(page, "probability")
    assert ascending == sorted(ascending) and ascending[0] == pytest.approx(
        ranked[PROBABILITY].min(), abs=1e-4
    )
    header.click()
    assert _column(page, "probability")[0] == pytest.approx(ranked[PROBABILITY].max(), abs=1e-4)
    page.locator("#ranked-table thead th", has_text="#").click()

    # the tier filter works over every lead, not the first page only: B (else the first tier below A)
    below_a = [tier for tier in sorted(ranked["tier"].unique()) if tier > "A"]
    assert below_a, "the small project has leads of one tier only"
    tier = "B" if "B" in below_a else below_a[0]
    page.select_option("#tier-filter", tier)
    shown = _visible_rows(rows)
    expected = int((ranked["tier"] == tier).sum())
    assert 0 < len(shown) == min(expected, PAGE_ROWS)
    assert all(row_tier == tier for row_tier, _ in shown)
    assert page.locator("#shown-count").inner_text() == f"{expected:,}"
    page.select_option("#tier-filter", "")

    # a text filter finds the last lead, far beyond the first page
    last_id = str(ranked[s.LEAD_ID].iloc[-1])
    page.fill("#filter", last_id)
    assert [lead for _, lead in _visible_rows(rows)] == [last_id]
    page.fill("#filter", "")
    assert page.locator("#shown-count").inner_text() == f"{len(ranked):,}"

    # the next page starts where the first ended
    if len(ranked) > PAGE_ROWS:
        page.click("#page-next")
        assert rows.first.locator("td").first.inner_text() == str(PAGE_ROWS + 1)
        page.click("#page-prev")
        assert rows.first.locator("td").first.inner_text() == "1"


def _check_cards(page, ranked: pd.DataFrame) -> None:
    """Clicking a ranked row opens its card: the full one for the top leads, a compact one for others."""
    dialog = page.locator("#lead-dialog")
    assert not dialog.is_visible()
    assert HOSTILE_NAME in page.locator("#lead-1 h3").inner_text()
    first_id = str(ranked[s.LEAD_ID].iloc[0])
    page.locator("#ranked-table tbody tr").first.click()
    assert dialog.is_visible() and first_id in dialog.locator("h3").inner_text()
    assert dialog.locator(".waterfall .bar").count() >= 3
    page.keyboard.press("Escape")
    assert not dialog.is_visible()

    # a lead without a full card (top_leads=5): its compact card, from the row's own reasons
    row = 7
    lead_id, probability = str(ranked[s.LEAD_ID].iloc[row - 1]), float(ranked[PROBABILITY].iloc[row - 1])
    page.locator("#ranked-table tbody tr").nth(row - 1).locator("button.lead-link").click()
    assert dialog.is_visible()
    assert dialog.locator("h3").inner_text().startswith(f"#{row} {lead_id}")
    values = dialog.locator(".waterfall .step .num").all_inner_texts()
    assert values[0].endswith("%") and values[-1] == f"{100 * probability:.1f}%"
    points = [float(value.removesuffix(" pts")) for value in values[1:-1]]
    start = float(values[0].removesuffix("%"))
    assert sum(points) == pytest.approx(100 * probability - start, abs=0.05 * len(points) + 0.1)
    assert "log-odds" not in dialog.inner_text()
    page.keyboard.press("Escape")


def _screenshot(page, path: Path) -> None:
    """A full-page screenshot in the project's reports/, copied to the repository's reports/screenshots/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)


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


# --------------------------------------------------------------------------- the scoring programme over time
def _page_rows(page: str, table_id: str) -> list[list[str]]:
    """The cells' text of each body row of the page's table ``table_id``."""
    body = re.search(rf'<table id="{table_id}"[^>]*>.*?<tbody>(.*?)</tbody>', page, re.S)
    assert body is not None, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body[1], re.S)
    return [
        [
            unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def _number(text: str) -> float:
    return float(text.split()[0].replace(",", "").replace("$", "").rstrip("%"))


def _direct_kpis(root: Path, as_of: pd.Timestamp) -> pd.DataFrame:
    """Per month, counted here from the scored partitions and the CRM's outcomes (not with
    leadml.reporting): leads (each once a month, by its first night), sales-ready (A or B),
    resolved, won within 90 days, the sum of their probabilities, closed, wins, deal values."""
    outcomes = pd.read_parquet(root / "data" / "scoring" / "synthetic" / "interim" / "outcomes.parquet")
    outcomes = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)
    rows = []
    for day in EARLIER_RUNS:
        part = pd.read_parquet(
            root / "data" / "scored" / "synthetic" / f"as_of={day}", columns=[s.LEAD_ID, PROBABILITY, "tier"]
        )
        rows.append(part.assign(run_date=pd.Timestamp(day, tz="UTC")))
    earlier = pd.concat(rows, ignore_index=True)
    earlier["month"] = earlier["run_date"].dt.strftime("%Y-%m")
    first = earlier.sort_values("run_date").drop_duplicates([s.LEAD_ID, "month"])
    closed_at = pd.to_datetime(first[s.LEAD_ID].map(outcomes[s.CLOSED_AT]), utc=True)
    status = first[s.LEAD_ID].map(outcomes[s.STATUS])
    deadline = first["run_date"] + pd.Timedelta(days=90)
    closed = closed_at.notna() & (closed_at < as_of) & status.isin([s.WON, s.LOST])
    first = first.assign(
        ready=first["tier"].isin(["A", "B"]),
        resolved=(closed_at.notna() & (closed_at < as_of)) | (deadline <= as_of),
        won=(status == s.WON) & (closed_at <= deadline) & (closed_at < as_of),
        closed=closed,
        closed_won=closed & (status == s.WON),
        deal=first[s.LEAD_ID].map(outcomes[s.DEAL_VALUE]).where(closed & (status == s.WON)),
    )
    first["expected"] = first[PROBABILITY].where(first["resolved"], 0.0)
    return first.groupby("month").agg(
        leads=(s.LEAD_ID, "size"), ready=("ready", "mean"), resolved=("resolved", "sum"), won=("won", "sum"),
        expected=("expected", "sum"), closed=("closed", "sum"), closed_won=("closed_won", "sum"),
        deal=("deal", "mean"),
    )  # fmt: skip


def test_the_programme_over_time_matches_a_direct_count(reported: dict) -> None:
    root, files = reported["root"], reported["files"]
    page = files.html.read_text()
    expected = _direct_kpis(root, files.as_of)
    rows = _page_rows(page, "kpi-table")
    assert [row[0] for row in rows] == ["2025-08", "2025-09", "2025-10"] == list(expected.index)
    for row in rows:
        want = expected.loc[row[0]]
        assert _number(row[1]) == want["leads"]
        assert _number(row[2]) == pytest.approx(100 * want["ready"], abs=0.05)
        assert _number(row[3]) == want["resolved"]
        assert _number(row[4]) == want["won"]
        assert _number(row[5]) == pytest.approx(100 * want["won"] / want["resolved"], abs=0.05)
        assert _number(row[6]) == pytest.approx(want["expected"], abs=0.05)
        assert _number(row[7]) == pytest.approx(100 * want["closed_won"] / want["closed"], abs=0.05)
        assert _number(row[8]) == pytest.approx(want["deal"], abs=0.5)
    # August's two nights: a lead scored on both counts once, so fewer leads than the two nights' rows
    august = [
        pd.read_parquet(root / "data" / "scored" / "synthetic" / f"as_of={day}") for day in EARLIER_RUNS[:2]
    ]
    assert expected.loc["2025-08", "leads"] < sum(len(part) for part in august)
    # honest probabilities: over the months, expected conversions close to the realised ones
    assert expected["expected"].sum() == pytest.approx(expected["won"].sum(), rel=0.25)
    assert 'id="kpi-chart"' in page and 'id="cohort-table"' in page
    tier_rows = _page_rows(page, "kpi-tier-table")
    assert (
        sum(_number(row[2]) for row in tier_rows if row[0] == "2025-09") == expected.loc["2025-09", "leads"]
    )


def test_the_revenue_threshold_is_worked_out_on_tonights_leads(reported: dict) -> None:
    root, files = reported["root"], reported["files"]
    page = files.html.read_text()
    scored = pd.read_parquet(Path(reported["latest"].output))
    leads = pd.read_parquet(root / "data" / "scoring" / "synthetic" / "interim" / "leads.parquet")
    value = scored[s.LEAD_ID].map(
        leads.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.ESTIMATED_DEAL_VALUE]
    )
    assert value.notna().all()  # the synthetic leads carry an estimated deal value: no averages needed
    thresholds = json.loads((Path(reported["latest"].output) / "_scoring_run.json").read_text())["thresholds"]
    today = scored[PROBABILITY] >= thresholds["B"]
    rows = {row[0]: row for row in _page_rows(page, "threshold-table")}
    mine = rows["Today's sales-ready threshold"]
    assert _number(mine[2]) == today.sum()
    assert _number(mine[4]) == pytest.approx((scored[PROBABILITY] * value)[today].sum(), abs=0.5)
    # no cost per lead and every value positive: the best cut works as many leads as the capacity (today's)
    best = rows["Best for the capacity"]
    assert _number(best[2]) <= today.sum() and _number(best[4]) >= _number(mine[4]) - 0.5
    assert f"{today.sum():,} leads" in page or f"({today.sum():,})" in page
    assert f"{len(scored):,} leads' own estimated deal value" in page


def test_the_kpis_are_logged_to_the_scoring_run_of_the_date(reported: dict) -> None:
    files, latest = reported["files"], reported["latest"]
    assert latest.run_id and files.kpi_run_id == latest.run_id
    with local_tracking():
        import mlflow

        tracking.configure(
            tracking.resolve_tracking_uri(None, reported["root"]), "leadml-synthetic-scoring",
            reported["root"] / "mlruns",
        )  # fmt: skip
        found = tracking.run_artifacts(
            latest.run_id, ["kpis/kpis.csv", "kpis/cohorts.csv", "kpis/threshold.csv"]
        )
        metrics = mlflow.get_run(latest.run_id).data.metrics
        assert mlflow.get_run(latest.run_id).info.status == "FINISHED"
    table = found["kpis/kpis.csv"]
    assert set(table["period"]) == {"2025-08", "2025-09", "2025-10"}
    october = table[(table["period"] == "2025-10") & (table["tier"] == "all")].iloc[0]
    assert metrics["kpi_leads"] == october["leads"]
    assert metrics["kpi_conversion_rate"] == pytest.approx(october["conversion_rate"])
    assert len(found["kpis/threshold.csv"]) == 2 and "kpi_best_threshold" in metrics


def test_with_no_earlier_outcome_the_section_says_so(reported: dict, tmp_path: Path) -> None:
    with local_tracking():
        files = run_report(
            _cfg(
                reported["root"],
                "report",
                [f"report.as_of={EARLIER_RUNS[0]}", f"report.output_dir={tmp_path}"],
            )
        )
    page = files.html.read_text()
    assert 'id="kpi-none"' in page and 'id="kpi-table"' not in page
    assert "No lead scored on an earlier night has an outcome yet" in page
    assert 'id="threshold-table"' in page  # tonight's leads still get their threshold


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "report.kpis.sales_ready_tier=Z",
            "report.kpis.sales_ready_tier: 'Z' is not a tier of the scored run",
        ),
        ("report.kpis.period=year", "report.kpis.period must be one of month, week, quarter, got 'year'"),
        ("tiers.sales_capacity.leads=-3", "tiers.sales_capacity.leads must be a whole number >= 1"),
    ],
)
def test_a_bad_kpi_setting_is_one_line_naming_it(
    reported: dict, tmp_path: Path, override: str, message: str
) -> None:
    quick = [f"{k}={v}" for k, v in SMALL_PROJECT.items()]
    argv = [
        "leadml-report",
        f"paths.root={reported['root']}",
        *quick,
        f"report.output_dir={tmp_path}",
        override,
    ]
    with local_tracking():
        code, _, err = run_entry_point(cli.report, argv)
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def _readme_report_line() -> list[str]:
    """The overrides of the README's example of the KPI and capacity settings."""
    text = README.read_text()
    start = text.index("(`tests/system/test_report.py` runs this line):")
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match is not None
    (line,) = [shlex.split(line) for line in match.group(1).splitlines() if line.strip()]
    assert line[0] == ".venv/bin/leadml-report"
    return line[1:]


def test_the_readme_example_of_the_kpi_settings(reported: dict, tmp_path: Path) -> None:
    quick = [f"{k}={v}" for k, v in SMALL_PROJECT.items()]
    argv = ["leadml-report", f"paths.root={reported['root']}", *quick, f"report.output_dir={tmp_path}"]
    with local_tracking():
        code, _, err = run_entry_point(cli.report, [*argv, *_readme_report_line()])
    assert code == 0, err
    page = next(tmp_path.glob("leads-*.html")).read_text()
    periods = [row[0] for row in _page_rows(page, "kpi-table")]
    assert periods == ["2025 Q3", "2025 Q4"]
    assert "Sales-ready leads are those in tier A." in page and "a capacity of 300 leads" in page
    rows = {row[0]: row for row in _page_rows(page, "threshold-table")}
    assert _number(rows["Best for the capacity"][2]) <= 300
    assert "less $40 for working it" in page
