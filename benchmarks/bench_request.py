"""Benchmark: one lead in-process through ``predict_request``, compiled path against the pandas reference.

Loads the champion of a trained project (default: this repository after ``make train``: its
mlflow.db, mlruns and data/interim/synthetic) and builds single-lead requests of both shapes as
benchmarks/bench_serve.py does: open leads of the data 30 days before its end, with their fields and
all their activities, or with their precomputed features. The requests are answered one after
another; ``--warmup`` requests are left out, then ``--requests`` are timed per path and shape:
``predict_request`` on the request's frame, and with the building of that frame
(``pd.DataFrame([request])``, what MLflow does before the pyfunc sees a request and what
bench_serve.py's in-process rows include). Before timing, the two paths' answers are compared
(numbers within 1e-12, words equal). Results go to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_request.py [--requests 500] [--root .] [--path both]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_features import machine, measured_with, replace_section
from bench_serve import lead_requests, summary

from leadml.adapters import tracking
from leadml.modelling.scorer import LeadScorer
from leadml.scoring.request_plan import request_plan
from leadml.scoring.requests import predict_request

ROOT = Path(__file__).resolve().parents[1]
MODEL_URI = "models:/leadml-synthetic@champion"
PATHS = {"reference": False, "compiled": True}
BEGIN, END = "<!-- request:begin -->", "<!-- request:end -->"


def load_champion(root: Path) -> LeadScorer:
    tracking.configure(f"sqlite:///{root / 'mlflow.db'}", "leadml-synthetic", root / "mlruns")
    return tracking.load_scorer(MODEL_URI)


def timed(
    scorer: LeadScorer, bodies: list[dict], compiled: bool, warmup: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seconds per request, one request at a time, the first ``warmup`` left out: of
    ``predict_request`` on the request's frame, and of building that frame and answering it."""
    answering, with_frame = [], []
    for body in bodies:
        started = time.perf_counter()
        frame = pd.DataFrame([body])
        built = time.perf_counter()
        predict_request(scorer, frame, compiled=compiled)
        done = time.perf_counter()
        answering.append(done - built)
        with_frame.append(done - started)
    return np.asarray(answering[warmup:]), np.asarray(with_frame[warmup:])


def check_same(scorer: LeadScorer, bodies: list[dict]) -> None:
    """The compiled path answers these requests itself, as the reference does."""
    for body in bodies:
        frame = pd.DataFrame([body])
        now = pd.Timestamp.now(tz="UTC")  # one "now" for both paths (a body may leave as_of out)
        compiled = predict_request(scorer, frame, now, compiled=True)
        reference = predict_request(scorer, frame, now, compiled=False)
        pd.testing.assert_frame_equal(compiled, reference, check_exact=False, rtol=0, atol=1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="a trained project (mlflow.db, mlruns, data)")
    parser.add_argument("--requests", type=int, default=500, help="timed requests per path and shape")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--path", choices=["both", *PATHS], default="both")
    parser.add_argument("--check", type=int, default=50, help="requests of each shape compared first")
    args = parser.parse_args()
    root = args.root.resolve()
    scorer = load_champion(root)
    if request_plan(scorer) is None:
        sys.exit("the compiled path does not cover this model: nothing to compare")
    n = args.requests + args.warmup
    by_lead, by_features, as_of = lead_requests(root, scorer, n)
    check_same(scorer, by_lead[: args.check] + by_features[: args.check])
    events = [len(body["activities"]) for body in by_lead]
    print(
        f"{machine()}; {root}, as_of {as_of}, {np.mean(events):.0f} activities a lead (up to {max(events)})"
    )
    print(f"{args.requests} timed requests of one lead after {args.warmup} warm-up, per path and shape")
    paths = PATHS if args.path == "both" else {args.path: PATHS[args.path]}
    results, framed_results = {}, {}
    for shape, bodies in (("lead fields and activities", by_lead), ("precomputed features", by_features)):
        for path, compiled in paths.items():
            answering, with_frame = timed(scorer, bodies, compiled, args.warmup)
            results[(shape, path)] = figures = summary(answering)
            framed_results[(shape, path)] = framed = summary(with_frame)
            print(
                f"{shape}, {path}: p50 {figures['p50']:.2f} ms, p99 {figures['p99']:.2f} ms "
                f"(with pd.DataFrame([request]): p50 {framed['p50']:.2f} ms, p99 {framed['p99']:.2f} ms) "
                f"over {figures['n']}"
            )
    rows = []
    for (shape, path), figures in results.items():
        framed = framed_results[(shape, path)]
        rows.append(
            f"| {shape} | {path} | {figures['p50']:.2f} ms | {figures['p99']:.2f} ms | "
            f"{framed['p50']:.2f} ms | {framed['p99']:.2f} ms |"
        )
    section = [
        BEGIN,
        "## One lead in-process: the compiled request path against the pandas reference (issue 21)",
        "",
        measured_with("bench_request.py") + " (the champion "
        f"of `make train`; open leads as of {as_of}, {np.mean(events):.0f} activities a lead on average, "
        f"up to {max(events)}). {args.requests} requests of one lead one after another after "
        f"{args.warmup} warm-up, per path and shape; the two paths' answers compared first (numbers "
        'within 1e-12, words equal). "with its frame" adds `pd.DataFrame([request])`, which MLflow '
        "builds before the model sees a request.",
        "",
        "| request | path | p50 | p99 | p50 with its frame | p99 with its frame |",
        "|---|---|---|---|---|---|",
        *rows,
        END,
    ]
    replace_section("\n".join(section), BEGIN, END)


if __name__ == "__main__":
    main()
