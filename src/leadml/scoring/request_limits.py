"""Bounds on what one request to the served model may hold: its bytes, its nesting, its rows, and the
activities of each lead.

MLflow's scoring server reads the whole body and parses its JSON (``json.loads``) before the model
sees anything, so a body nested 100,000 deep ended in a RecursionError: HTTP 500, and a traceback in
the server's log. ``mlflow models serve`` runs MLflow's own app (``uvicorn
mlflow.pyfunc.scoring_server.app:app``) and can be pointed at no other, and MLflow has no setting
that bounds a body; the only code of leadml's that runs in the server before the parsing is the
model's loading. So :func:`guard_json_bodies`, called when the model loads, wraps the scoring
server's JSON decoding (``scoring_server._decode_json_input``, which it looks up by name on every
request) with :func:`check_body`: a body over the byte limit is answered 413, one nested deeper
than the depth limit 400, each with the limit and the variable that sets it. CSV and Parquet bodies
are parsed by MLflow without that step and stay unbounded in bytes; their rows are bounded below.

The rows of a request and the activities of each lead are checked on the parsed request
(:func:`check_request_shape`), whichever format carried it: 400 naming the limit.

Each limit is an environment variable of the server (``LEADML_MAX_REQUEST_BYTES`` and so on),
read on every request, so a deployment sets it beside ``mlflow models serve`` without training again.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from leadml.errors import LeadmlError
from leadml.scoring.request_fields import ACTIVITIES, RequestError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limit:
    """One bound: the environment variable that sets it, its default and what it counts."""

    variable: str
    default: int
    counts: str

    def value(self) -> int:
        """The bound in force: the variable's value (a positive whole number), else the default."""
        given = os.environ.get(self.variable, "").strip()
        if not given:
            return self.default
        try:
            value = int(given.replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise LeadmlError(
                f"{self.variable} must be a positive whole number of {self.counts}, got {given!r}"
            )
        return value


# a lead request is at most 5 deep ({"dataframe_records": [{"activities": [{...}]}]} is 4, a
# previous answer's object 4 too); 32 leaves room for any JSON format MLflow reads
MAX_BYTES = Limit("LEADML_MAX_REQUEST_BYTES", 10_000_000, "bytes")
MAX_DEPTH = Limit("LEADML_MAX_REQUEST_DEPTH", 32, "levels of nesting")
MAX_ROWS = Limit("LEADML_MAX_REQUEST_ROWS", 1_000, "leads per request")
MAX_ACTIVITIES = Limit("LEADML_MAX_ACTIVITIES", 10_000, "activities per lead")
LIMITS = (MAX_BYTES, MAX_DEPTH, MAX_ROWS, MAX_ACTIVITIES)

REQUEST_TOO_LARGE = 413


class RequestTooLarge(MlflowException):
    """A body over the byte limit: MLflow's server answers with this error's HTTP status, 413
    (MLflow's own error codes name no 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    def get_http_status_code(self) -> int:
        return REQUEST_TOO_LARGE


def check_limits() -> None:
    """Refuse a limit set to something other than a positive whole number (when the model loads)."""
    for limit in LIMITS:
        limit.value()


# --------------------------------------------------------------------------- the raw body
# a JSON string (its escapes included): what brackets inside it say is no nesting
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_OPENING = np.frombuffer(b"[{", dtype=np.uint8)


def nesting_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON body nest (0: a scalar), without parsing it:
    brackets outside strings, counted in C (a regular expression, ``bytes.translate`` and NumPy),
    so a body of megabytes costs milliseconds and no recursion. A body that is not JSON may read
    deeper than it is; JSON's own parser then refuses it anyway."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if not len(brackets):
        return 0
    steps = np.where(np.isin(brackets, _OPENING), 1, -1)
    return int(np.cumsum(steps).max())


def check_body(body: bytes | str) -> None:
    """Refuse a JSON body over the byte limit (413) or nested deeper than the depth limit (400)."""
    data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    most = MAX_BYTES.value()
    if len(data) > most:
        raise RequestTooLarge(
            f"request too large: {len(data):,} bytes, more than {most:,} ({MAX_BYTES.variable}); "
            "send fewer leads per request"
        )
    deepest = MAX_DEPTH.value()
    depth = nesting_depth(data)
    if depth > deepest:
        raise MlflowException(
            f"request nested {depth:,} levels deep, more than {deepest} ({MAX_DEPTH.variable}): a request "
            "holds a list of lead objects, each with a list of activity objects",
            error_code=INVALID_PARAMETER_VALUE,
        )


def guard_json_bodies() -> None:
    """Make MLflow's scoring server check every JSON body with :func:`check_body` before parsing it.

    Idempotent; a no-op (logged) should an MLflow release no longer decode bodies by that name.
    """
    check_limits()
    from mlflow.pyfunc import scoring_server  # the server's module: imported by the server anyway

    decode = getattr(scoring_server, "_decode_json_input", None)
    if decode is None:
        logger.warning("MLflow's scoring server has no _decode_json_input: request bodies are not bounded")
        return
    if getattr(decode, "checks_body", False):
        return
    scoring_server._decode_json_input = _guarded(decode)


def _guarded(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def decode_checked(json_input: Any) -> Any:
        if isinstance(json_input, bytes | str):
            check_body(json_input)
        return decode(json_input)

    decode_checked.checks_body = True  # type: ignore[attr-defined]
    return decode_checked


# --------------------------------------------------------------------------- the parsed request
def check_request_shape(frame: pd.DataFrame) -> None:
    """Refuse more rows than the row limit, or a lead with more activities than the activity limit."""
    most = MAX_ROWS.value()
    if len(frame) > most:
        raise RequestError(
            f"the request holds {len(frame):,} rows, more than {most:,} ({MAX_ROWS.variable}): "
            "send fewer leads per request, or score them with leadml-score"
        )
    if ACTIVITIES not in frame.columns:
        return
    most = MAX_ACTIVITIES.value()
    for row, events in enumerate(frame[ACTIVITIES].tolist()):
        if isinstance(events, list | np.ndarray) and len(events) > most:
            raise RequestError(
                f"row {row}, field {ACTIVITIES!r}: {len(events):,} activities, more than {most:,} "
                f"({MAX_ACTIVITIES.variable})"
            )
