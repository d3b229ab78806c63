"""``leadml-generate``: the synthetic CRM export, written once per settings and generator version."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from leadml.adapters.layout import MANIFEST
from leadml.adapters.sources import write_json_atomic, write_parquet_atomic
from leadml.data.synthetic import GENERATOR_VERSION, generate_crm, settings_from_mapping

# new: nothing was there; kept: the export there has these settings; replaced: it had others
Written = Literal["new", "kept", "replaced"]


@dataclass(frozen=True)
class GenerateResult:
    """The synthetic export in ``output_dir``, as its manifest describes it."""

    output_dir: Path
    written: Written
    rows: Mapping[str, int]  # table -> rows
    seed: Any
    seconds: float  # the time its generation took (when it was written, for a kept export)
    created_at: str  # when it was written (ISO 8601, UTC)


def up_to_date(out: Path, requested: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest of the export in ``out`` when it was written with these settings and this
    generator, else None."""
    if not (out / MANIFEST).exists():
        return None
    existing = json.loads((out / MANIFEST).read_text())
    same = existing.get("settings") == requested and existing.get("generator_version") == GENERATOR_VERSION
    return existing if same else None


def generate_stage(
    requested: Mapping[str, Any], out: Path, *, overwrite: bool = False, progress: bool = False
) -> GenerateResult:
    """Generate the CRM tables with ``requested`` settings into ``out`` unless an export with these
    settings and this generator is already there (``overwrite`` writes it again anyway)."""
    existed = (out / MANIFEST).exists()
    existing = up_to_date(out, requested) if existed and not overwrite else None
    if existing is not None:
        return _result(out, "kept", existing)
    started = time.perf_counter()
    frames = generate_crm(settings_from_mapping(dict(requested)), progress=progress)
    for name, frame in frames.items():
        write_parquet_atomic(frame, out / f"{name}.parquet")
    manifest = {
        "stage": "generate",
        "settings": dict(requested),
        "generator_version": GENERATOR_VERSION,
        "rows": {name: len(frame) for name, frame in frames.items()},
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    write_json_atomic(manifest, out / MANIFEST)
    return _result(out, "replaced" if existed else "new", manifest)


def _result(out: Path, written: Written, manifest: Mapping[str, Any]) -> GenerateResult:
    return GenerateResult(
        output_dir=out,
        written=written,
        rows=manifest["rows"],
        seed=(manifest.get("settings") or {}).get("seed"),
        seconds=float(manifest["seconds"]),
        created_at=str(manifest["created_at"]),
    )
