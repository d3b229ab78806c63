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


# --------------------------------------------------------------------------- a server that refuses (issue 22)
class _RefusingClient:
    """An MlflowClient whose server answers but refuses every call, as MLflow raises it."""

    error_code = "PERMISSION_DENIED"

    def get_model_version_by_alias(self, name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import ErrorCode

        code = ErrorCode.Value(self.error_code)
        raise MlflowException("API request to endpoint failed with error code 403 != 200", code)


@pytest.mark.parametrize("error_code", ["PERMISSION_DENIED", "UNAUTHENTICATED"])
def test_a_server_refusing_the_alias_lookup_is_exit_6_not_authorised(monkeypatch, error_code) -> None:
    import mlflow

    from leadml.adapters import tracking
    from leadml.errors import TrackingUnavailableError

    monkeypatch.setattr(_RefusingClient, "error_code", error_code)
    monkeypatch.setattr(mlflow, "MlflowClient", _RefusingClient)
    with pytest.raises(TrackingUnavailableError) as error:
        tracking.production_model("leadml-synthetic")
    assert error.value.exit_code == 6
    refused = "refused leadml's request to look up @champion of leadml-synthetic: not authorised"
    assert refused in str(error.value)
    assert f"({error_code})" in str(error.value)


def test_a_missing_alias_is_still_no_version(monkeypatch) -> None:
    import mlflow

    from leadml.adapters import tracking

    monkeypatch.setattr(_RefusingClient, "error_code", "INVALID_PARAMETER_VALUE")  # MLflow's "no such alias"
    monkeypatch.setattr(mlflow, "MlflowClient", _RefusingClient)
    assert tracking.version_by_alias("leadml-synthetic", "champion") is None
