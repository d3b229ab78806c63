"""The pyfunc as MLflow serves it: no input schema, every JSON format of a request answered alike.

A small scorer (tests/unit/test_request_plan.py) is saved as the training stage logs it and loaded
back; requests go through MLflow's own scoring-server code in-process (``invocations``: JSON parsing,
``PyFuncModel.predict``, the JSON answer), without HTTP.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.pyfunc import scoring_server
from test_request_plan import END, crm_scorer, crm_tables, feature_rows

from leadml.adapters import tracking
from leadml.data import schema as s
from leadml.scoring.pyfunc import MODEL_CODE, Answer, model_artifacts, signature
from leadml.scoring.request_fields import ACTIVITIES, known_fields
from leadml.scoring.requests import feature_example, predict_request, requests_from_tables

AS_OF = END.isoformat()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, list[dict], list[dict]]:
    """The scorer saved as the training stage logs it, loaded back; three leads with 0, 1 and several
    activities (their lists differ in length), and two rows of precomputed features."""
    rng = np.random.default_rng(21)
    tables = crm_tables(rng)
    scorer = crm_scorer(tables, rng)
    features = feature_rows(scorer, tables, np.random.default_rng(3))
    example = feature_example(scorer, pd.DataFrame(features[:5]))
    work = tmp_path_factory.mktemp("pyfunc")
    folder = tracking.save_model(
        MODEL_CODE,
        work / "model",
        example,
        signature(scorer, example),
        model_artifacts(scorer, work / "files"),
    )
    leads = tables[s.LEADS][tables[s.LEADS][s.CREATED_AT] < END][s.LEAD_ID]
    counts = tables[s.ACTIVITIES][s.LEAD_ID].value_counts()
    requests = requests_from_tables(scorer, tables, list(leads[leads.map(counts) > 3][:3]), AS_OF)
    requests[0][ACTIVITIES], requests[1][ACTIVITIES] = [], requests[1][ACTIVITIES][:1]
    return mlflow.pyfunc.load_model(str(folder)), folder, requests, features[:2]


def _invoke(model: Any, body: Any) -> str:
    """The scoring server's answer to ``body`` (JSON), as the text it would send."""
    response = scoring_server.invocations(
        json.dumps(body), "application/json", model, model.metadata.get_input_schema()
    )
    assert response.status == 200, response.response
    return response.response


def _expected(model: Any, rows: list[dict]) -> str:
    answer = predict_request(model.unwrap_python_model().scorer, pd.DataFrame(rows))
    text = io.StringIO()
    scoring_server.predictions_to_json(answer, text)
    return text.getvalue()


def test_the_model_has_an_answer_schema_and_no_input_schema(saved) -> None:
    """MLflow checked an input schema on every request, column by column (longer than the answer)."""
    model, folder, _, _ = saved
    logged = Model.load(str(folder))
    assert logged.get_input_schema() is None and logged.saved_input_example_info is not None
    example = pd.read_json(folder / "input_example.json", orient="split")
    answer = model.predict(example)
    assert logged.get_output_schema().input_names() == list(answer.columns)
    assert answer["probability"].between(0, 1).all()


@pytest.mark.parametrize("shape", ["lead", "features"])
def test_every_json_format_is_answered_as_leadml_answers_the_rows(saved, shape: str) -> None:
    model, _, leads, features = saved
    rows = leads if shape == "lead" else features
    expected = _expected(model, rows)
    columns = list(dict.fromkeys(name for row in rows for name in row))
    assert _invoke(model, {"dataframe_records": rows}) == expected
    split = {"columns": columns, "data": [[row.get(name) for name in columns] for row in rows]}
    assert _invoke(model, {"dataframe_split": split}) == expected
    # without a schema MLflow makes every value of ``inputs`` a NumPy array; leadml makes them plain
    assert _invoke(model, {"inputs": rows}) == expected
    for row in rows:  # one lead as one object, and as columns of one value each
        assert _invoke(model, {"inputs": row}) == _expected(model, [row])
        assert _invoke(model, {"inputs": {name: [value] for name, value in row.items()}}) == _expected(
            model, [row]
        )


def test_fields_the_model_does_not_know_are_ignored_and_named_once(saved, caplog) -> None:
    model, _, leads, _ = saved
    extra = [{**lead, "email": "jane@example.com", "first_name": "Jane"} for lead in leads]
    with caplog.at_level(logging.WARNING, logger="leadml.scoring.pyfunc"):
        assert _invoke(model, {"dataframe_records": extra}) == _expected(model, leads)
        _invoke(model, {"dataframe_records": extra})
    named = [r.getMessage() for r in caplog.records if r.name == "leadml.scoring.pyfunc"]
    assert len(named) == 1 and "'email', 'first_name'" in named[0] and "ignored" in named[0]
    assert not {"email", "first_name"} & set(known_fields(model.unwrap_python_model().scorer))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dataframe_records": [{"no_such_field": 1}]}, "no field of the request is known to the model"),
        ({"dataframe_records": [{}]}, "no field of the request is known to the model"),
        ({"inputs": [1, 2]}, "expected one object per lead"),
        ({"inputs": {s.CREATED_AT: [AS_OF, AS_OF], s.LEAD_ID: ["a"]}}, "one value per lead"),
        ({"inputs": [{s.CREATED_AT: "yesterday"}]}, "row 0, field 'created_at': 'yesterday' is not"),
    ],
)
def test_a_request_leadml_cannot_read_gets_its_400(saved, body: dict, message: str) -> None:
    model, _, _, _ = saved
    with pytest.raises(MlflowException) as error:
        _invoke(model, body)
    assert error.value.get_http_status_code() == 400 and message in error.value.message


def test_the_answers_records_are_pandas_own() -> None:
    """``Answer.to_dict(orient="records")`` (what the scoring server writes) gives pandas' records,
    value for value and type for type, whatever the columns hold."""
    frame = pd.DataFrame(
        {
            "float": [0.25, np.nan, -1e300],
            "int": np.array([1, 2, 3], dtype="int64"),
            "bool": [True, False, True],
            "text": pd.Series(["a", None, "c"], dtype="str"),
            "string": pd.Series(["a", pd.NA, "c"], dtype="string"),
            "nullable": pd.Series([1, pd.NA, 3], dtype="Int64"),
            "objects": pd.Series([np.int64(7), pd.NA, {"k": [1]}], dtype=object),
            "more objects": pd.Series([np.float32(0.5), np.datetime64("2025-01-02"), None], dtype=object),
            "when": pd.to_datetime(["2025-01-01", None, "2025-03-01"], utc=True),
            "naive": pd.to_datetime(["2025-01-01", "2025-02-01", None]),
            "kind": pd.Categorical(["x", "y", None]),
            "span": pd.to_timedelta([1, 2, None], unit="D"),
        }
    )
    expected, got = frame.to_dict(orient="records"), Answer(frame).to_dict(orient="records")
    assert len(got) == len(expected) == 3
    for mine, theirs in zip(got, expected, strict=True):
        assert list(mine) == list(theirs)
        for name in theirs:
            a, b = mine[name], theirs[name]
            assert type(a) is type(b), (name, a, b)
            assert a == b or (a is b) or (pd.isna(a) and pd.isna(b)), (name, a, b)
    # anything but records is pandas' own, and a derived frame is a plain one
    assert Answer(frame).to_dict(orient="list").keys() == frame.to_dict(orient="list").keys()
    assert type(Answer(frame).head(1)) is pd.DataFrame
