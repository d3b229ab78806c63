"""The MLflow pyfunc around a :class:`~leadml.modelling.scorer.LeadScorer`: what the registry holds,
``leadml-export`` copies and ``mlflow models serve`` answers requests with.

A module-level class, so the pickle names ``leadml.scoring.pyfunc.LeadScorerModel`` and loads
wherever leadml is installed. What a request may hold and what comes back is
``leadml.scoring.requests``; this module only adapts it to MLflow: the signature, the error that
becomes HTTP 400, and the integrity check of an exported folder when the model loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, Schema
from mlflow.types.utils import _infer_schema

from leadml.adapters.model_folder import verify_folder
from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling.scorer import LeadScorer
from leadml.scoring.request_fields import ACTIVITIES, PREVIOUS, REQUEST_AS_OF, lead_fields
from leadml.scoring.request_plan import prepare_request_plan
from leadml.scoring.requests import MODEL_INFO_ARTIFACT, predict_request

logger = logging.getLogger(__name__)


class LeadScorerModel(mlflow.pyfunc.PythonModel):
    """Request rows in (lead fields and activities, or features); probability, tier, reasons out."""

    def __init__(self, scorer: LeadScorer) -> None:
        self.scorer = scorer

    def load_context(self, context: Any) -> None:
        """Refuse an exported folder whose files changed, then build the explainer and request path once."""
        info = (getattr(context, "artifacts", None) or {}).get(MODEL_INFO_ARTIFACT)
        if info:
            try:
                verify_folder(Path(info).resolve().parents[1])
            except LeadmlError as error:
                raise to_mlflow_error(error) from None
        if self.scorer.can_explain:  # the first request must not pay for the tree tables or the means
            self.scorer.prepare_explainer()
        prepare_request_plan(self.scorer)  # nor for compiling the request path

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            return predict_request(self.scorer, pd.DataFrame(model_input))
        except LeadmlError as error:
            raise to_mlflow_error(error) from None


def to_mlflow_error(error: LeadmlError) -> Exception:
    """MLflow's "invalid parameter value" error (HTTP 400 from the scoring server) with the message."""

    return MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE)


def input_schema(scorer: LeadScorer) -> Any:
    """Every request field by name, all optional: the features, the lead fields, ``activities``.

    Typed "any": leadml checks each value itself (``leadml.scoring.requests``) and names the row and
    field, where MLflow's own enforcement refuses an integer for a double column and answers
    with the whole schema of 100-odd columns.
    """

    own_id = [scorer.request_id] if getattr(scorer, "request_id", None) else []
    names = [s.LEAD_ID, *own_id, REQUEST_AS_OF, *scorer.feature_names, *lead_fields(scorer)]
    if lead_fields(scorer):
        names.append(ACTIVITIES)
    if PREVIOUS not in scorer.feature_names:
        names.append(PREVIOUS)
    return Schema([ColSpec(AnyType(), name, required=False) for name in dict.fromkeys(names)])


def signature(scorer: LeadScorer, example: pd.DataFrame) -> Any:
    """Inputs as :func:`input_schema`, outputs as the predictions of ``example``."""

    outputs = _infer_schema(predict_request(scorer, example))
    return ModelSignature(inputs=input_schema(scorer), outputs=outputs)
