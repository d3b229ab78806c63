"""The MLflow pyfunc around a :class:`~leadml.modelling.scorer.LeadScorer`: what the registry holds,
``leadml-export`` copies and ``mlflow models serve`` answers requests with.

Logged as code (MLflow's models-from-code): the model folder holds ``model_code.py``, two lines
that build an empty :class:`LeadScorerModel`, and the scorer's state as data files
(:mod:`leadml.modelling.scorer_state`, the ``leadml_state`` artifact), which :meth:`load_context`
reads. Loading runs no pickle, so MLflow's ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` loads it.
A version registered before 0.2.0 is a pickled instance of the same class: it still loads where
pickle is allowed, with a :class:`~leadml.errors.PickledModelWarning`. What a request may hold and
what comes back is
``leadml.scoring.requests``; this module only adapts it to MLflow: the signature (outputs only, see
:func:`signature`), the request as a frame whichever JSON format carried it, the error that becomes
HTTP 400, and the integrity check of an exported folder when the model loads.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.utils import _infer_schema
from pandas.api.extensions import ExtensionDtype

from leadml.adapters.model_folder import exported_version, is_export, pickled_message, verify_folder
from leadml.errors import LeadmlError, PickledModelWarning
from leadml.modelling.scorer import LeadScorer
from leadml.modelling.scorer_state import StateError, read_scorer_state, write_scorer_state
from leadml.scoring.request_fields import RequestError, known_fields
from leadml.scoring.request_limits import guard_json_bodies
from leadml.scoring.request_plan import object_values, prepare_request_plan
from leadml.scoring.requests import MODEL_INFO_ARTIFACT, predict_request, write_model_info

logger = logging.getLogger(__name__)

NOT_OBJECTS = (
    "expected one object per lead: dataframe_records, dataframe_split, or inputs as a list of objects"
)


# the artifact that holds the scorer's state files (leadml.modelling.scorer_state)
STATE_ARTIFACT = "leadml_state"
# the code file MLflow logs as the model (models-from-code): it builds an empty LeadScorerModel
MODEL_CODE = Path(__file__).with_name("model_code.py")


class LeadScorerModel(mlflow.pyfunc.PythonModel):
    """Request rows in (lead fields and activities, or features); probability, tier, reasons out.

    Built empty by ``model_code.py`` and filled by :meth:`load_context` from the saved state; a
    version pickled by an earlier leadml arrives with its scorer already set.
    """

    def __init__(self, scorer: LeadScorer | None = None) -> None:
        self.scorer: LeadScorer = scorer  # type: ignore[assignment]  # None only until load_context

    def __getstate__(self) -> dict[str, Any]:
        return {"scorer": self.scorer}  # what a pickled version held: the scorer only

    def load_context(self, context: Any) -> None:
        """Refuse an exported folder whose files changed, read the scorer's state, then build the
        explainer and request path once."""
        artifacts = getattr(context, "artifacts", None) or {}
        try:
            guard_json_bodies()  # the server parses a body before predict: bound its bytes and nesting first
            folder = _model_folder(artifacts)
            if folder is not None:
                verify_folder(folder)
            if self.scorer is None:
                state = artifacts.get(STATE_ARTIFACT)
                if not state:
                    raise StateError("the model has no leadml_state artifact: not a leadml model")
                self.scorer = read_scorer_state(Path(state))
            else:
                warnings.warn(PickledModelWarning(pickled_message(_described(folder))), stacklevel=2)
        except LeadmlError as error:
            raise to_mlflow_error(error) from None
        if self.scorer.can_explain:  # the first request must not pay for the tree tables or the means
            self.scorer.prepare_explainer()
        prepare_request_plan(self.scorer)  # nor for compiling the request path

    # annotated as a frame because MLflow reads the hint: from a frame it infers no signature and
    # validates nothing. ``inputs`` requests arrive as lists or dicts all the same (request_frame).
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            frame = request_frame(model_input)
            self._log_unknown_fields(frame.columns)
            return Answer(predict_request(self.scorer, frame))
        except LeadmlError as error:
            raise to_mlflow_error(error) from None

    def _log_unknown_fields(self, names: Iterable[Any]) -> None:
        """Name, once per server, each request field the model does not know: it is ignored.

        MLflow did this (a warning on every request) while the signature listed the fields; a CRM
        that sends the lead's name or e-mail besides the fields the model reads is answered as before.
        """
        known = self.__dict__.get("_known_fields")
        if known is None:
            known = self._known_fields = frozenset(known_fields(self.scorer))
        logged: set[str] = self.__dict__.setdefault("_logged_fields", set())
        unknown = [str(name) for name in names if name not in known and str(name) not in logged]
        if unknown:
            logged.update(unknown)
            logger.warning(
                "request field(s) %s are not fields of this model and are ignored (named once)", unknown
            )


def model_artifacts(scorer: LeadScorer, folder: Path) -> dict[str, str]:
    """Write what the logged model reads as it loads into ``folder``; MLflow's artifacts mapping."""
    state = write_scorer_state(scorer, folder / STATE_ARTIFACT)
    return {MODEL_INFO_ARTIFACT: str(write_model_info(scorer, folder)), STATE_ARTIFACT: str(state)}


def _model_folder(artifacts: Mapping[str, str]) -> Path | None:
    """The model's folder, two levels above an artifact (``<folder>/artifacts/<file>``)."""
    info = artifacts.get(MODEL_INFO_ARTIFACT) or artifacts.get(STATE_ARTIFACT)
    return Path(info).resolve().parents[1] if info else None


def _described(folder: Path | None) -> str:
    if folder is not None and is_export(folder):
        return f"the exported model {folder} (version {exported_version(folder)})"
    return "this model"


class Answer(pd.DataFrame):
    """The pyfunc's answer: a DataFrame whose ``to_dict(orient="records")`` reads every row in one
    conversion, giving the same records as pandas.

    MLflow's scoring server writes the JSON answer from ``to_dict(orient="records")``, which pandas
    builds from one Series per column (``itertuples``): about 60 us a column on 2 cores, so the
    server's JSON answer of one lead (52 columns: reasons, sub-scores, every group's contribution)
    took 2.2 ms, half as long as the answer itself; 0.6 ms this way. Anything else, including every
    frame derived from this one, is plain pandas.
    """

    def to_dict(self, orient: str = "dict", *, into: Any = dict, index: bool = True) -> Any:  # type: ignore[override]
        if orient != "records" or into is not dict or not self.columns.is_unique:
            return super().to_dict(orient, into=into, index=index)  # type: ignore[call-overload]
        names = self.columns.tolist()
        rows = object_values(self).tolist()  # self.to_numpy(dtype=object), read block by block
        # the columns whose values pandas makes native (numbers, NA as None), and the same rules
        kinds = self.dtypes.tolist()
        boxed = [j for j, kind in enumerate(kinds) if kind.kind == "O" or isinstance(kind, ExtensionDtype)]
        for row in rows:
            for j in boxed:
                row[j] = _native(row[j])
        return [dict(zip(names, row, strict=True)) for row in rows]


def _native(value: Any) -> Any:
    """``value`` as ``DataFrame.to_dict`` gives an object or extension column's value."""
    if isinstance(value, np.datetime64):
        return pd.Timestamp(value)
    if isinstance(value, np.timedelta64):
        return pd.Timedelta(value)
    if isinstance(value, np.integer | np.floating | np.bool_):
        return value.item()
    return None if value is pd.NA else value


def request_frame(model_input: Any) -> pd.DataFrame:
    """The request as a frame of one row per lead, whichever of MLflow's JSON formats carried it.

    ``dataframe_records`` and ``dataframe_split`` (and CSV, Parquet) arrive as a frame. Without an input
    schema MLflow hands ``inputs`` (and ``instances``) over as parsed, every value turned into a NumPy
    array (a 0-d array for a scalar, an object array for ``activities``): the values are made plain
    again here. ``inputs`` may be a list of objects (one per lead), a single object (one lead), or
    columns (``{field: [one value per lead]}``; MLflow refuses columns whose nested ``activities``
    lists differ in length before leadml sees them).
    """
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, np.ndarray):
        model_input = model_input.tolist()
    if isinstance(model_input, Mapping):
        values = {name: _plain(value) for name, value in model_input.items()}
        if values and all(isinstance(value, list) for value in values.values()):
            if len({len(value) for value in values.values()}) > 1:
                raise RequestError("inputs as columns: every field needs one value per lead")
            return pd.DataFrame(values)
        return pd.DataFrame([values])
    if isinstance(model_input, list) and all(isinstance(row, Mapping) for row in model_input):
        return pd.DataFrame([{name: _plain(value) for name, value in row.items()} for row in model_input])
    raise RequestError(f"{NOT_OBJECTS}; got {type(model_input).__name__}")


def _plain(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def to_mlflow_error(error: LeadmlError) -> Exception:
    """MLflow's "invalid parameter value" error (HTTP 400 from the scoring server) with the message."""

    return MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE)


def signature(scorer: LeadScorer, example: pd.DataFrame) -> Any:
    """Outputs only (the columns of the predictions of ``example``): no input schema.

    MLflow enforces an input schema on every call of the pyfunc, column by column in Python, and
    builds a new frame of the columns it names. Listing the 108 optional fields of both request
    shapes (the synthetic model), that took a one-lead ``PyFuncModel.predict`` to 11.4 ms where
    leadml's own answer takes 6.1 ms, and to 22.9 ms against 4.8 ms in the features shape (p50 on
    2 busy cores, MLflow 3.17); behind ``mlflow models serve`` a lead took 3.7x the floor of a
    trivial pyfunc. It checked nothing: every field was typed "any" (a typed schema refuses an
    integer for a double and answers with all 108 columns), and leadml reads each value itself with a
    message naming the row and field (``leadml.scoring.requests``). The fields a request may hold
    are :func:`~leadml.scoring.request_fields.known_fields` (and ``artifacts/leadml_model.json``
    lists the features and lead fields); any other is ignored, as MLflow ignored it. The output
    schema stays: it costs nothing per request and gives ``spark_udf`` its result type. A model
    logged before keeps its input schema, and MLflow's check of it, until it is trained again.
    """

    outputs = _infer_schema(predict_request(scorer, example))
    return ModelSignature(outputs=outputs)
