"""The production model: feature preparation, model, calibrator and explainer in one object.

MLflow wraps a :class:`LeadScorer` as one pyfunc (see ``tracking.py``), so the same
artifact scores on one machine and inside Spark. Its input is the feature frame
(categoricals as text, numbers as floats); its output the calibrated probability and
the model's raw margin in log-odds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.calibration import Calibrator
from leadml.models import LightGBMModel, ScoringModel

PROBABILITY, MARGIN = "probability", "margin"
BASE_VALUE = "base_value"


@dataclass
class LeadScorer:
    model: ScoringModel
    calibrator: Calibrator
    feature_names: list[str]
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the FeatureSettings the snapshots were built with: scoring rebuilds features the same way
    feature_settings: dict[str, Any] | None = None
    # training-window distributions of every feature and of the score, for drift (PSI) checks
    reference: dict[str, Any] = field(default_factory=dict)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        margin = self.model.predict_margin(frame)
        return pd.DataFrame(
            {PROBABILITY: self.calibrator.predict_proba(margin), MARGIN: margin}, index=frame.index
        )

    @property
    def can_explain(self) -> bool:
        return isinstance(self.model, LightGBMModel)

    def explain(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Exact TreeSHAP contributions in log-odds, one column per feature plus ``base_value``.

        Per row, base value plus contributions equals the booster's margin.
        """
        if not isinstance(self.model, LightGBMModel):
            raise TypeError(f"{type(self.model).__name__} has no tree explainer")
        contributions = self.model.booster.predict(
            self.model.prepare(frame), pred_contrib=True, num_iteration=self.model.best_iteration
        )
        columns = [*self.feature_names, BASE_VALUE]
        return pd.DataFrame(np.asarray(contributions), columns=columns, index=frame.index)


def as_model_input(frame: pd.DataFrame, feature_names: list[str]) -> pd.DataFrame:
    """Feature columns as the pyfunc signature expects them: categoricals as text, numbers as floats."""
    out = {}
    for name in feature_names:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(column.dtype):
            out[name] = column.astype(object).where(column.notna(), None).astype("object")
        else:
            out[name] = column.astype("float64")
    return pd.DataFrame(out, index=frame.index)
