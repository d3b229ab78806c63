"""The tracking adapter's pieces that need no tracking store."""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import pytest

from leadml.adapters.tracking import warn_requirement_mismatches


def test_a_model_saved_with_other_package_versions_is_named_in_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MLflow's own check maps every installed distribution (1.4 s a load); ours reads the pins."""
    numpy = importlib.metadata.version("numpy")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# pinned\nnumpy=={numpy}\nlightgbm==0.0.1\nno-such-package==1.0\nleadml\n")
    with caplog.at_level(logging.WARNING, logger="leadml.adapters.tracking"):
        found = warn_requirement_mismatches(requirements, "models:/m/1")
    installed = importlib.metadata.version("lightgbm")
    assert found == [
        f"lightgbm 0.0.1 (installed: {installed})",
        "no-such-package 1.0 (installed: not installed)",
    ]
    assert len(caplog.records) == 1 and "models:/m/1 was saved with lightgbm 0.0.1" in caplog.text
    requirements.write_text(f"numpy=={numpy}\n")
    assert warn_requirement_mismatches(requirements, "models:/m/1") == []
    assert warn_requirement_mismatches(tmp_path / "missing.txt", "models:/m/1") == []
