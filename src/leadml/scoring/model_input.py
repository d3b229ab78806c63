"""What the model is given at scoring time: the check of today's features against the model, the
deal values of the leads scored, and the run date."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from leadml.data import schema as s
from leadml.data.calendar import date_setting
from leadml.data.features import data_end
from leadml.errors import SchemaMismatchError

logger = logging.getLogger(__name__)


def resolve_as_of(
    value: Any, tables: Mapping[str, pd.DataFrame], end: Callable[[], pd.Timestamp] | None = None
) -> pd.Timestamp:
    """The scoring date (midnight UTC): ``today``, ``latest`` (the day after the data's last
    timestamp, for replayed or synthetic data: of the CRM ``tables``, or ``end()``) or a date."""
    text = str(value or "today").strip().lower()
    if text == "today":
        return pd.Timestamp.now(tz="UTC").normalize()
    if text == "latest":
        last = end() if end is not None else data_end(tables)
        return last.normalize() + pd.Timedelta(days=1)
    return date_setting(value, "score.as_of", "today, latest or YYYY-MM-DD")


def check_model_input(features: pd.DataFrame, scorer: Any) -> None:
    """Every model feature present with the kind the model was trained on; else name them."""
    missing = [name for name in scorer.feature_names if name not in features.columns]
    categorical = set(getattr(scorer.model, "categories", {}) or {})
    mistyped = []
    for name in scorer.feature_names:
        if name in missing:
            continue
        is_numeric = pd.api.types.is_numeric_dtype(features[name].dtype) and not isinstance(
            features[name].dtype, pd.CategoricalDtype
        )
        if name in categorical and is_numeric and features[name].notna().any():
            mistyped.append(f"{name} (numbers where the model expects categories)")
        elif name not in categorical and not is_numeric:
            mistyped.append(f"{name} ({features[name].dtype} where the model expects numbers)")
    emptied = _emptied_columns(features, scorer)
    if missing or mistyped or emptied:
        parts = []
        if emptied:
            parts.append(f"column(s) with every value missing today, unlike in training: {emptied}")
        if missing:
            parts.append(f"missing column(s) {missing}")
        if mistyped:
            parts.append(f"mistyped column(s) {mistyped}")
        raise SchemaMismatchError(f"today's features do not match the model: {'; '.join(parts)}")


def _emptied_columns(features: pd.DataFrame, scorer: Any, max_training_missing: float = 0.5) -> list[str]:
    """Features null in every row today although mostly filled in training: a column gone from
    the source reads as missing values, which would otherwise be scored silently."""
    profile = (getattr(scorer, "reference", None) or {}).get("features", {})
    emptied = []
    for name, ref in profile.items():
        if name not in features.columns or features[name].notna().any():
            continue
        shares = ref["shares"]
        missing = shares.get("__missing__", 0.0) if ref["kind"] == "categorical" else shares[-1]
        if missing < max_training_missing:
            emptied.append(f"{name} (missing in {missing:.0%} of training rows)")
    return emptied


def deal_values(leads: pd.DataFrame, lead_ids: pd.Series) -> pd.Series | None:
    if s.ESTIMATED_DEAL_VALUE not in leads.columns:
        return None
    by_lead = leads.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[s.ESTIMATED_DEAL_VALUE]
    return lead_ids.map(by_lead)
