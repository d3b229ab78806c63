"""Benchmark: point-in-time features.

Measures, on data from leadml-generate (through leadml-ingest, as the pipeline reads it):
1. training snapshots for the default data set (50,000 leads), target at most 30 s;
2. features of 1,000,000 leads (about 20 M events) as of one date, target at most 60 s.
Each figure is the median of several runs; results go to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_features.py            # both (generates 1M leads once, cached)
    .venv/bin/python benchmarks/bench_features.py --skip-million
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from leadml.adapters.layout import read_interim
from leadml.cli import CONFIG_DIR, run_generate, run_ingest
from leadml.data import schema as s
from leadml.data.features import FeatureSettings, build_features, build_training_snapshots

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- features:begin -->", "<!-- features:end -->"


def _cfg(name: str, root: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, [f"paths.root={root}", *overrides])


def prepared(root: Path, overrides: list[str], repeats: int) -> tuple[dict[str, pd.DataFrame], list[float]]:
    """Generate once into ``root`` (later runs reuse it), then time ingestion ``repeats`` times."""
    run_generate(_cfg("generate", root, overrides))
    ingest_cfg = _cfg("ingest", root, overrides)
    _, runs, _ = timed(lambda: run_ingest(ingest_cfg), repeats)
    print(f"  ingest: {statistics.median(runs):.1f} s median of {runs}")
    return read_interim(Path(ingest_cfg.output_dir), s.CRM_TABLES), runs


def _row(measure: str, runs: list[float], target: str, size: str) -> tuple[str, str, str, str, str]:
    return (measure, f"{statistics.median(runs):.1f} s", ", ".join(f"{r:.1f}" for r in runs), target, size)


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, list[float], object]:
    runs, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs), runs, result


def machine() -> str:
    cpu = "unknown cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = f"Python {platform.python_version()}, pandas {pd.__version__}"
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {versions}"


def _previous_rows(text: str) -> dict[str, str]:
    """Rows already in RESULTS.md by measure, so a partial run (--skip-million) keeps the others."""
    if BEGIN not in text:
        return {}
    section = text[text.index(BEGIN) : text.index(END)]
    rows = [
        line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| measure")
    ]
    return {row.split("|")[1].strip(): row for row in rows}


def write_results(rows: list[tuple[str, str, str, str, str]], command: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    table_rows = _previous_rows(text)
    table_rows.update({row[0]: "| " + " | ".join(row) + " |" for row in rows})
    section = "\n".join(
        [
            BEGIN,
            "## Point-in-time features",
            "",
            f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d} on {machine()}.",
            f"Command: `{command}`",
            "",
            "| measure | median | runs (s) | target | size |",
            "|---|---|---|---|---|",
            *table_rows.values(),
            END,
        ]
    )
    replace_section(section, BEGIN, END)


def measured_with(script: str) -> str:
    """A RESULTS section's first words: today, this machine, and the command that ran ``script``
    with this run's arguments, in backticks."""
    arguments = " ".join(sys.argv[1:])
    return (
        f"Measured {pd.Timestamp.now(tz='UTC'):%Y-%m-%d} on {machine()}. Command: "
        f"`.venv/bin/python benchmarks/{script}{' ' + arguments if arguments else ''}`"
    )


# hand-written prose inside a section (what a figure means, how it got there): kept when a script
# rewrites its section, which would otherwise lose it
NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"


def replace_section(section: str, begin: str, end: str) -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) into RESULTS.md in place,
    keeping the old section's notes (between :data:`NOTES_BEGIN` and :data:`NOTES_END`) at its end."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if begin in text:
        old = text[text.index(begin) : text.index(end)]
        if NOTES_BEGIN in old and NOTES_END in old and NOTES_BEGIN not in section:
            notes = old[old.index(NOTES_BEGIN) : old.index(NOTES_END) + len(NOTES_END)]
            section = section[: section.rindex(end)].rstrip("\n") + "\n\n" + notes + "\n" + end
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args()
    settings = FeatureSettings.from_mapping(
        {"extra_categorical": ["browser"], "extra_numeric": ["campaign_code"]}
    )
    rows = []

    print("default data set (conf/synthetic/default.yaml)")
    tables, ingest_runs = prepared(args.workdir / "default", [], args.repeats)
    size = f"{len(tables[s.LEADS]):,} leads, {len(tables[s.ACTIVITIES]):,} events"
    rows.append(_row("ingest with contracts, default data set", ingest_runs, "-", size))
    median, runs, snaps = timed(lambda: build_training_snapshots(tables, settings), args.repeats)
    print(f"  training snapshots: {median:.1f} s median of {runs}")
    rows.append(
        _row("training snapshots, default data set", runs, "<= 30 s", f"{size} -> {len(snaps):,} snapshots")
    )

    if not args.skip_million:
        print("1,000,000 leads (conf/synthetic/million.yaml)")
        tables, ingest_runs = prepared(args.workdir / "million", ["synthetic=million"], 1)
        size = f"{len(tables[s.LEADS]):,} leads, {len(tables[s.ACTIVITIES]):,} events"
        rows.append(_row("ingest with contracts, 1M-lead data set (one run)", ingest_runs, "-", size))
        as_of = pd.Timestamp("2026-07-01", tz="UTC")
        median, runs, frame = timed(
            lambda: build_features(
                tables[s.LEADS], tables[s.ACCOUNTS], tables[s.ACTIVITIES], as_of, settings
            ),
            args.repeats,
        )
        print(f"  features as of {as_of:%Y-%m-%d}: {median:.1f} s median of {runs}")
        rows.append(
            _row(
                "features of every lead as of one date", runs, "<= 60 s", f"{size}, {frame.shape[1]} columns"
            )
        )
    write_results(rows, "make bench  (.venv/bin/python benchmarks/bench_features.py)")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
