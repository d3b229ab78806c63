"""The pyfunc every trained model is logged as, and what it does with one request.

A request is a frame of rows (MLflow's ``dataframe_records``), each row one lead in one of
two shapes:

* **lead fields and recent activities** (CRM-shaped models): ``created_at``, the lead's and
  its account's fields and ``activities`` (a list of ``{timestamp, activity_type,
  page_category}``). Features are built as of ``as_of`` (default: now) by the same
  ``leadml.data.features`` code as training and the nightly job, from the events strictly before it.
* **precomputed features**: the model's feature columns, as ``leadml-features`` writes them.

Each row comes back with the calibrated probability, its tier (the thresholds stored in the
model), the fit and engagement sub-scores and the top reasons for and against, in the same
words as the nightly job. A request the model cannot score raises :class:`RequestError`,
which the pyfunc turns into MLflow's "invalid parameter" error: HTTP 400 with the message.

Two implementations answer: the compiled path (:mod:`leadml.scoring.request_plan`: NumPy arrays
and rules compiled once per loaded model, what the endpoint runs) and, below, the reference on
pandas frames (the nightly job's functions on the request's rows). They give the same answers
(tests/unit/test_request_plan.py); what the compiled path does not cover falls back here. The
field names and the readers of single values both use are ``leadml.scoring.request_fields``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.data.features import build_features
from leadml.modelling.scorer import LeadScorer, as_model_input
from leadml.scoring.request_fields import (
    ACCOUNT_FIELDS,
    ACTIVITIES,
    ACTIVITY_FIELDS,
    EMAIL_DOMAIN,
    NOT_A_NUMBER,
    REQUEST_AS_OF,
    WARNINGS,
    ContractChecks,
    ContractRules,
    RequestError,
    Tiers,
    absent_features_warning,
    check_activity_shape,
    checked_activities,
    feature_settings_of,
    is_lead_request,
    is_missing,
    lead_fields,
    lead_numeric_fields,
    lead_warnings,
    number,
    numeric_features,
    previous_answers,
    refused_activity,
    shown,
    text_of,
    timestamp,
    training_levels,
    training_spelling,
    unseen_level_warning,
)
from leadml.scoring.request_limits import check_request_shape
from leadml.scoring.request_plan import compiled_answer
from leadml.scoring.scores import movement_columns, movement_words, score_leads

logger = logging.getLogger(__name__)

# written beside the pickled model; load_context finds the model folder through it
MODEL_INFO_ARTIFACT = "leadml_model"
MODEL_INFO_FILE = "leadml_model.json"


# --------------------------------------------------------------------------- requests
def request_features(
    scorer: LeadScorer, frame: pd.DataFrame, now: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, list[list[str]]]:
    """The model's feature frame of every request row, and each row's warnings.

    The frame keeps the request's row order; ``lead_id`` and ``as_of`` are echoed.
    """
    if len(frame.columns) == 0:  # empty objects ({}), or fields an older model's signature dropped
        raise RequestError(_unknown_fields_message(scorer))
    if len(frame) == 0:
        raise RequestError("the request holds no rows: send one object per lead")
    frame = frame.reset_index(drop=True)
    if is_lead_request(frame):
        return _from_lead_fields(scorer, frame, now or pd.Timestamp.now(tz="UTC"))
    return _from_features(scorer, frame)


def _from_features(scorer: LeadScorer, frame: pd.DataFrame) -> tuple[pd.DataFrame, list[list[str]]]:
    names = scorer.feature_names
    absent = [name for name in names if name not in frame.columns]
    if len(absent) == len(names):
        raise RequestError(_unknown_fields_message(scorer))
    numeric = set(numeric_features(scorer))
    empty = pd.Series([None] * len(frame), dtype=object)
    columns = {
        s.LEAD_ID: _lead_ids(frame, getattr(scorer, "request_id", None)),
        REQUEST_AS_OF: frame[REQUEST_AS_OF] if REQUEST_AS_OF in frame.columns else empty,
    }
    levels = training_levels(scorer)
    for name in names:
        given = frame[name] if name in frame.columns else empty
        if name in numeric:
            columns[name] = _numbers(given, name)
        else:
            synonyms = (getattr(scorer, "request_synonyms", None) or {}).get(name, {})
            columns[name] = _training_spelling(_texts(given, name), levels.get(name), synonyms)
    features = pd.DataFrame(columns)
    # a null feature is a value (no such event yet); a feature left out of the request is not
    warning = [absent_features_warning(absent, len(names))] if absent else []
    return features, [list(warning) for _ in range(len(frame))]


def _unknown_fields_message(scorer: LeadScorer) -> str:
    names, fields = scorer.feature_names, lead_fields(scorer)
    shape = f"lead fields ({', '.join(fields[:4])}, ...) with {ACTIVITIES}, or " if fields else ""
    return (
        f"no field of the request is known to the model: send {shape}the model's features "
        f"({', '.join(names[:4])}, ... {len(names)} in all; listed in artifacts/{MODEL_INFO_FILE})"
    )


def _numbers(values: pd.Series, field: str) -> pd.Series:
    """``values`` as floats; text that reads as a number is taken, anything else is refused."""
    parsed = [number(value) for value in values]
    bad = [row for row, value in enumerate(parsed) if value is NOT_A_NUMBER]
    if bad:
        raise RequestError(f"row {bad[0]}, field {field!r}: {shown(values.iloc[bad[0]])} is not a number")
    return pd.Series(parsed, index=values.index, dtype="float64")


def _training_spelling(
    values: pd.Series, levels: set[Any] | None, synonyms: Mapping[str, str] | None = None
) -> pd.Series:
    """Each value as training spelt it (:func:`~leadml.scoring.request_fields.training_spelling`)."""
    if not levels:
        return values
    return values.map(lambda value: training_spelling(value, levels, synonyms or {}))


def _lead_ids(frame: pd.DataFrame, own_id: str | None = None) -> pd.Series:
    """The request's ``lead_id``, else its value of the flat table's id column (``own_id``)."""
    column = own_id if s.LEAD_ID not in frame.columns and own_id and own_id in frame.columns else s.LEAD_ID
    if column in frame.columns:
        return frame[column].astype(object).where(frame[column].notna(), None)
    return pd.Series([None] * len(frame), dtype=object)


def _from_lead_fields(
    scorer: LeadScorer, frame: pd.DataFrame, now: pd.Timestamp
) -> tuple[pd.DataFrame, list[list[str]]]:
    settings = feature_settings_of(scorer)
    if settings is None:
        raise RequestError(
            f"this model takes precomputed features only (it was trained on a flat table, not CRM "
            f"leads and activities): drop {s.CREATED_AT!r} and {ACTIVITIES!r} and send its features"
        )
    n = len(frame)
    keys = [f"request-{row}" for row in range(n)]
    created = _timestamps(frame, s.CREATED_AT, required=True)
    as_of = _timestamps(frame, REQUEST_AS_OF, required=False).fillna(now.floor("us"))
    late = np.flatnonzero((created > as_of).to_numpy())
    if len(late):
        row = int(late[0])
        raise RequestError(
            f"row {row}: {s.CREATED_AT} {created.iloc[row].isoformat()} is after "
            f"{REQUEST_AS_OF} {as_of.iloc[row].isoformat()}: the lead did not exist yet"
        )
    leads = pd.DataFrame({s.LEAD_ID: keys, s.ACCOUNT_ID: keys, s.CREATED_AT: created.to_numpy()})
    numeric = set(lead_numeric_fields(scorer))
    rules = ContractRules.of(scorer)
    checks = ContractChecks(rules)
    for field in lead_fields(scorer):
        if field in (s.CREATED_AT, *ACCOUNT_FIELDS):
            continue
        values = frame[field] if field in frame.columns else pd.Series([None] * n)
        values = (
            _read_number(checks, values, field) if field in numeric else _read_text(checks, values, field)
        )
        if field == EMAIL_DOMAIN:  # an address sent by mistake loses its local part here
            field, values = s.EMAIL, values.map(lambda v: v if v is None else "x@" + v.rpartition("@")[2])
        leads[field] = values
    accounts = pd.DataFrame({s.ACCOUNT_ID: keys})
    for field, column in ACCOUNT_FIELDS.items():
        values = frame[field] if field in frame.columns else pd.Series([None] * n)
        accounts[column] = (
            _read_number(checks, values, field) if field in numeric else _read_text(checks, values, field)
        )
    # an account the contracts refuse is not known to the nightly job: its lead has no firmographics
    unknown_accounts = sorted(checks.account_warnings)
    accounts.loc[unknown_accounts, list(ACCOUNT_FIELDS.values())] = None
    activities, ignored, refused = _activities(frame, keys, as_of, rules)

    parts = []
    for moment in as_of.unique():
        rows = np.flatnonzero((as_of == moment).to_numpy())
        built = build_features(
            leads.iloc[rows], accounts.iloc[rows], activities, pd.Timestamp(moment), settings
        )
        built.index = rows
        parts.append(built)
    built = pd.concat(parts).sort_index()
    features = as_model_input(_with_missing(built, scorer.feature_names), scorer.feature_names)
    features.insert(0, s.LEAD_ID, _lead_ids(frame).to_numpy())
    features.insert(1, REQUEST_AS_OF, [moment.isoformat() for moment in as_of])
    warnings = [
        _lead_warnings(scorer, frame, row, (ignored[row], refused[row]), checks.marked_missing)
        + checks.account_warnings.get(row, [])
        for row in range(n)
    ]
    return features, warnings


def _read_number(checks: ContractChecks, values: pd.Series, field: str) -> pd.Series:
    """A number field as the data contracts read it where they check it, else as a number."""
    if field not in checks.rules.fields:
        return _numbers(values, field)
    return pd.Series(checks.numbers(values.tolist(), field), index=values.index, dtype="float64")


def _read_text(checks: ContractChecks, values: pd.Series, field: str) -> pd.Series:
    """A text field as the data contracts read it where they declare it (trimmed, missing markers,
    a category's spelling and synonyms), else as text."""
    texts = _texts(values, field)
    if field not in checks.rules.texts:
        return texts
    return pd.Series(checks.texts(texts.tolist(), field), index=values.index, dtype=object)


def _with_missing(built: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    for name in names:
        if name not in built.columns:  # a feature of a column this request shape cannot carry
            built[name] = np.nan
    return built


def _texts(values: pd.Series, field: str) -> pd.Series:
    bad = values.map(lambda value: isinstance(value, list | dict))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        kind = type(values.iloc[row]).__name__
        raise RequestError(f"row {row}, field {field!r}: expected text, got {kind}")
    # object dtype, missing as None: pandas 3 would infer its string dtype and make a missing value
    # NaN, which the e-mail domain's mapping below cannot take
    present = values.notna().to_numpy()
    texts = [text_of(value) if given else None for value, given in zip(values.tolist(), present, strict=True)]
    return pd.Series(texts, index=values.index, dtype=object)


def _timestamps(frame: pd.DataFrame, field: str, *, required: bool) -> pd.Series:
    if field not in frame.columns:
        if required:
            raise RequestError(f"field {field!r} is required with lead fields (an ISO 8601 date-time)")
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    values = frame[field]
    parsed = pd.Series(
        [timestamp(value, f"row {row}, field {field!r}") for row, value in enumerate(values)],
        index=frame.index,
        dtype="datetime64[ns, UTC]",
    )
    if required and parsed.isna().any():
        row = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise RequestError(f"row {row}: field {field!r} is required with lead fields (an ISO 8601 date-time)")
    return parsed


def _activities(
    frame: pd.DataFrame, keys: Sequence[str], as_of: pd.Series, rules: ContractRules
) -> tuple[pd.DataFrame, list[int], list[list[str]]]:
    """Every row's activities as one events table, how many per row are not before its as_of, and
    why the activities the nightly job would quarantine were ignored (per row)."""
    given: list[tuple[int, int, Mapping[str, Any]]] = []  # row, position in its list, the activity
    column = frame[ACTIVITIES] if ACTIVITIES in frame.columns else pd.Series([None] * len(keys))
    for row, events in enumerate(column):
        if events is None or (isinstance(events, float) and np.isnan(events)):
            continue
        if isinstance(events, np.ndarray):
            events = events.tolist()
        if not isinstance(events, list):
            raise RequestError(
                f"row {row}, field {ACTIVITIES!r}: expected a list of "
                f"{{{', '.join(ACTIVITY_FIELDS)}}} objects, got {type(events).__name__}"
            )
        for position, event in enumerate(events):
            check_activity_shape(event, f"row {row}, {ACTIVITIES}[{position}]")
            given.append((row, position, event))
    checked = checked_activities([event for _, _, event in given], rules)
    rows: list[tuple[str, int, str, Any]] = []
    ignored = [0] * len(keys)
    refused: list[list[str]] = [[] for _ in keys]
    for i, (row, position, _) in enumerate(given):
        if i in checked.refused:
            refused[row].append(refused_activity(position, checked.refused[i]))
            continue
        microseconds = int(checked.microseconds[i])
        if microseconds * 1000 >= as_of.iloc[row].value:  # never counted (the compiled path's rule)
            ignored[row] += 1
            continue
        page = int(checked.pages[i])
        rows.append(
            (
                keys[row],
                microseconds,
                s.ACTIVITY_TYPES[checked.types[i]],
                s.PAGE_CATEGORIES[page] if page >= 0 else None,
            )
        )
    events = pd.DataFrame(rows, columns=[s.LEAD_ID, s.TIMESTAMP, s.ACTIVITY_TYPE, s.PAGE_CATEGORY])
    events[s.TIMESTAMP] = pd.to_datetime(events[s.TIMESTAMP].astype("int64"), unit="us", utc=True).dt.as_unit(
        "ns"
    )
    return events, ignored, refused


def _lead_warnings(
    scorer: LeadScorer,
    frame: pd.DataFrame,
    row: int,
    activities: tuple[int, Sequence[str]],
    marked: set[tuple[int, str]],
) -> list[str]:
    """The row's warnings; ``activities``: how many it sent too late, why others were refused."""
    absent = []
    for field in lead_fields(scorer)[1:]:  # created_at is required, so given
        if field not in frame.columns or is_missing(frame.at[row, field]) or (row, field) in marked:
            absent.append(field)
    return lead_warnings(absent, *activities)


# --------------------------------------------------------------------------- predictions
def predict_request(
    scorer: LeadScorer, frame: pd.DataFrame, now: pd.Timestamp | None = None, *, compiled: bool = True
) -> pd.DataFrame:
    """Probability, tier, sub-scores and reasons of every request row (see the module docstring).

    Answered by the compiled path (:mod:`leadml.scoring.request_plan`) where it covers the model
    and the request, else by :func:`reference_answer`; ``compiled=False`` takes the reference.
    """
    check_request_shape(frame)
    if compiled:
        answer = compiled_answer(scorer, frame, now)
        if answer is not None:
            return answer
    return reference_answer(scorer, frame, now)


def reference_answer(
    scorer: LeadScorer, frame: pd.DataFrame, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """:func:`predict_request` on pandas frames: the nightly job's code on the request's rows, and
    what the compiled path is tested against (same numbers to 1e-12, same words)."""
    features, warnings = request_features(scorer, frame, now)
    scored = score_leads(scorer, features, Tiers.of(scorer).settings(), explain=scorer.can_explain)
    unseen = _unseen_levels(scorer, features)
    out = scored.drop(columns=["percentile"])
    as_of = features[REQUEST_AS_OF].astype(object)
    out.insert(1, REQUEST_AS_OF, as_of.where(as_of.notna(), None))
    out["margin_change"], out["movement"] = movement_columns(
        out, previous_answers(frame, out[s.LEAD_ID]), movement_words(scorer)
    )
    out[WARNINGS] = ["; ".join(w + unseen[row]) or None for row, w in enumerate(warnings)]
    return out


def _unseen_levels(scorer: LeadScorer, features: pd.DataFrame) -> list[list[str]]:
    categories = getattr(scorer.model, "categories", None) or {}
    found: list[list[str]] = [[] for _ in range(len(features))]
    for name, levels in categories.items():
        if name not in features.columns:
            continue
        known = set(levels)
        for row, value in enumerate(features[name]):
            if value is not None and not is_missing(value) and value not in known:
                found[row].append(unseen_level_warning(name, value))
    return found


# --------------------------------------------------------------------------- examples
def requests_from_tables(
    scorer: LeadScorer, tables: Mapping[str, pd.DataFrame], lead_ids: Sequence[str], as_of: str
) -> list[dict[str, Any]]:
    """What a CRM integration posts for each lead: its fields, its account's and its activities.

    Built from leadml's validated CRM tables (``data/interim``), so a test or benchmark can
    compare the served answer with the nightly job's for the same leads.
    """
    leads = tables[s.LEADS].drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID).loc[list(lead_ids)]
    accounts = tables[s.ACCOUNTS].drop_duplicates(s.ACCOUNT_ID).set_index(s.ACCOUNT_ID)
    accounts = accounts.reindex(leads[s.ACCOUNT_ID].to_numpy())
    activities = tables[s.ACTIVITIES]
    events = activities[activities[s.LEAD_ID].isin(set(lead_ids))].groupby(s.LEAD_ID, sort=False)
    by_lead = {lead: frame for lead, frame in events}
    requests = []
    for position, lead_id in enumerate(lead_ids):
        lead, account = leads.iloc[position], accounts.iloc[position]
        request: dict[str, Any] = {s.LEAD_ID: lead_id, REQUEST_AS_OF: as_of}
        for field in lead_fields(scorer):
            if field == EMAIL_DOMAIN:
                value = lead.get(s.EMAIL)
                value = None if is_missing(value) else str(value).rpartition("@")[2]
            elif field in ACCOUNT_FIELDS:
                value = account.get(ACCOUNT_FIELDS[field])
            else:
                value = lead.get(field)
            request[field] = _plain(value)
        mine = by_lead.get(lead_id, activities.iloc[:0])
        request[ACTIVITIES] = [
            {s.TIMESTAMP: stamp.isoformat(), s.ACTIVITY_TYPE: kind, s.PAGE_CATEGORY: _plain(page)}
            for stamp, kind, page in zip(
                mine[s.TIMESTAMP], mine[s.ACTIVITY_TYPE], mine[s.PAGE_CATEGORY], strict=True
            )
        ]
        requests.append(request)
    return requests


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: None for missing, Python numbers, ISO text for timestamps."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if isinstance(value, np.generic) else value


def feature_example(scorer: LeadScorer, rows: pd.DataFrame) -> pd.DataFrame:
    """Request rows in the features shape (no personal data: features never hold any)."""
    example = as_model_input(rows, scorer.feature_names)
    return example.reset_index(drop=True)


def flat_example(scorer: LeadScorer) -> dict[str, Any]:
    """One made-up row of a flat table in the features shape: its id column and each feature's
    most common training value (features never hold personal data)."""
    profiles = (getattr(scorer, "reference", None) or {}).get("features") or {}
    row: dict[str, Any] = {getattr(scorer, "request_id", None) or s.LEAD_ID: "example-1"}
    for name in scorer.feature_names:
        value = _most_common(profiles.get(name) or {})
        if value is not None:
            row[name] = value
    return row


def lead_example(scorer: LeadScorer, as_of: pd.Timestamp) -> dict[str, Any] | None:
    """One made-up lead in the lead shape, from the training window's most common values.

    None for a model that takes features only. No personal data: no name, e-mail or phone.
    """
    fields = lead_fields(scorer)
    if not fields:
        return None
    profiles = (getattr(scorer, "reference", None) or {}).get("features") or {}
    common = {name: _most_common(profile) for name, profile in profiles.items()}
    lead: dict[str, Any] = {s.LEAD_ID: "example-1", REQUEST_AS_OF: as_of.isoformat()}
    lead[s.CREATED_AT] = (as_of - pd.Timedelta(days=21)).isoformat()
    lead[s.JOB_TITLE] = "Head of Operations"
    lead[EMAIL_DOMAIN] = "example.com"
    for field in fields:
        if field in (s.CREATED_AT, s.JOB_TITLE, EMAIL_DOMAIN) or field in lead:
            continue
        value = common.get(field)
        if field == s.FOUNDED_YEAR:
            value = 2008
        if value is not None:
            lead[field] = value
    lead[ACTIVITIES] = [
        {
            s.TIMESTAMP: (as_of - pd.Timedelta(days=days)).isoformat(),
            s.ACTIVITY_TYPE: kind,
            s.PAGE_CATEGORY: page,
        }
        for days, kind, page in (
            (20, "email_open", None),
            (12, "page_view", "product"),
            (5, "page_view", "pricing"),
            (2, "content_download", None),
        )
    ]
    return lead


def _most_common(profile: Mapping[str, Any]) -> Any:
    if profile.get("kind") == "categorical":
        shares = {k: v for k, v in profile["shares"].items() if k not in ("__missing__", "__unseen__")}
        return max(shares, key=shares.get) if shares else None
    edges = profile.get("edges") or []
    return float(edges[len(edges) // 2]) if edges else None


def model_info(scorer: LeadScorer) -> dict[str, Any]:
    """What travels beside the pickle as JSON: readable without unpickling."""
    tiers = Tiers.of(scorer)
    return {
        "leadml_version": version("leadml"),
        "features": list(scorer.feature_names),
        "tiers": {"thresholds": dict(tiers.thresholds), "floor_tier": tiers.floor_tier},
        "lead_fields": lead_fields(scorer),
        "feature_settings": getattr(scorer, "feature_settings", None),
    }


def write_model_info(scorer: LeadScorer, folder: Path) -> Path:
    path = folder / MODEL_INFO_FILE
    path.write_text(json.dumps(model_info(scorer), indent=2, default=str))
    return path
