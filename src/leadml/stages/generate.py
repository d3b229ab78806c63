"""``leadml-generate``: the synthetic CRM export, written once per settings and generator version."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from leadml.adapters.layout import MANIFEST
from leadml.adapters.sources import write_json_atomic, write_parquet_atomic
from leadml.data.synthetic import GENERATOR_VERSION, generate_crm, settings_from_mapping


def up_to_date(out: Path, requested: Mapping[str, Any]) -> dict[str, Any] | None:
    """The manifest of the export in ``out`` when it was written with these settings and this
    generator, else None."""
    if not (out / MANIFEST).exists():
        return None
    existing = json.loads((out / MANIFEST).read_text())
    same = existing.get("settings") == requested and existing.get("generator_version") == GENERATOR_VERSION
    return existing if same else None


def generate_stage(requested: Mapping[str, Any], out: Path, *, progress: bool = False) -> dict[str, Any]:
    """Generate the CRM tables with ``requested`` settings into ``out``; the manifest written."""
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
    return manifest
