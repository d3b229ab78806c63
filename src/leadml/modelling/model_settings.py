"""The settings of the model a config names: LightGBM, logistic regression or the points sheet."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from leadml.errors import LeadmlError
from leadml.modelling.models import LightGBMSettings, LogRegSettings, ModelSettings
from leadml.modelling.points import PointsSettings

logger = logging.getLogger(__name__)


def model_settings_from_mapping(
    mapping: Mapping[str, Any], points: Mapping[str, Any] | None = None, data_name: str | None = None
) -> ModelSettings | PointsSettings:
    """Settings for the model named by ``mapping["name"]``.

    ``points`` is the data config's ``points`` block (``data.points``): model=points takes its
    rules and tiers from there (``data_name`` names the data config in its error); others ignore it.
    """
    name = mapping.get("name", "lightgbm")
    if name == "points":
        return PointsSettings.from_mapping(mapping, points, data_name)
    kinds: dict[str, type[LightGBMSettings] | type[LogRegSettings]] = {
        "lightgbm": LightGBMSettings,
        "logreg": LogRegSettings,
    }
    if name not in kinds:
        raise LeadmlError(f"model.name must be one of {sorted([*kinds, 'points'])}, got {name!r}")
    return kinds[name].from_mapping(mapping)
