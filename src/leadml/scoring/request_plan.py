"""The compiled request path: one lead (or a small batch) scored on NumPy arrays, not pandas frames.

What does not depend on the request is worked out once per loaded model (:class:`RequestPlan`,
cached on the scorer): the request fields and which of them are numbers, each categorical
feature's booster codes, the column order, the feature-building rules (the seniority patterns
compiled, the free e-mail domains), the explanation's groups, families and words, the tiers and
the tree explainer. A request then costs the reading of its values, its rows' features (the
nightly job's own array code, :func:`leadml.data.features.activity_columns`), one pass of the fast
TreeSHAP and the sentences of its reasons: a few hundred microseconds, where the pandas path
spent tens of milliseconds building and converting frames of one row. The request's frame is read
and the answer's frame built block by block (:func:`object_values`, :func:`answer_frame`): pandas'
column-by-column conversions of one row took as long as the features.

The answers are the pandas path's (:func:`leadml.scoring.requests.reference_answer`): the same
numbers to 1e-12 and the same words, which tests/unit/test_request_plan.py checks on random
leads. What the compiled path does not cover is answered by the pandas path instead:

* models other than LightGBM (logistic regression, a points sheet), a booster the fast
  explainer refuses, category levels that are not text, or a feature read as a number by the
  model but built as text (or the reverse);
* any request the pandas path refuses (it words the error), and values JSON does not send:
  pandas' NA or NaT, date-times or other objects where text or numbers are expected, text that
  cannot be encoded as UTF-8, repeated column names;
* a ``now`` that is not a UTC timestamp.

A scorer whose attributes are replaced after the first request (its model, calibrator,
metadata, settings, profile or tiers) is compiled again; attributes changed in place are not seen.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.internals import create_dataframe_from_blocks

from leadml.data import schema as s
from leadml.data.contracts import EARLIEST_TIMESTAMP, NOT_PLAIN, keeps_number
from leadml.data.features import (
    SECONDS_PER_DAY,
    FeatureSettings,
    activity_columns,
    corporate_email_flags,
    event_log,
    revenue_per_employee,
    seniority_levels,
)
from leadml.errors import LeadmlError
from leadml.modelling.calibration import Calibrator
from leadml.modelling.evaluate import assign_tiers
from leadml.modelling.models import LightGBMModel
from leadml.modelling.reasons import sentence_of
from leadml.modelling.scorer import MARGIN, PROBABILITY, LeadScorer
from leadml.modelling.treeshap import FastTreeExplainer
from leadml.scoring.request_fields import (
    ACCOUNT_FIELDS,
    ACTIVITIES,
    ACTIVITY_FIELDS,
    EMAIL_DOMAIN,
    NOT_A_NUMBER,
    PREVIOUS,
    REQUEST_AS_OF,
    WARNINGS,
    ContractChecks,
    ContractRules,
    FieldRule,
    RequestError,
    Tiers,
    absent_features_warning,
    checked_activity_values,
    feature_settings_of,
    is_missing,
    lead_fields,
    lead_numeric_fields,
    lead_warnings,
    number,
    numeric_features,
    previous_answers,
    refused_activity,
    text_of,
    timestamp,
    training_levels,
    training_spelling,
    unseen_level_warning,
)
from leadml.scoring.scores import ExplanationPlan, explanation_arrays, movement_columns, movement_words

logger = logging.getLogger(__name__)

# the scorer's attributes a plan is compiled from: one replaced means compiling again
SOURCES = (
    "model",
    "calibrator",
    "feature_names",
    "metadata",
    "feature_settings",
    "reference",
    "tiers",
    "request_id",
    "request_synonyms",
    "data_contract",
    "segments",
)
TYPE_CODES = {kind: code for code, kind in enumerate(s.ACTIVITY_TYPES)}
PAGE_CODES = {page: code for code, page in enumerate(s.PAGE_CATEGORIES)}
EVENT_FIELDS = frozenset(ACTIVITY_FIELDS)
NANOSECONDS = 1_000_000_000
OBJECT, FLOAT = np.dtype(object), np.dtype(np.float64)
# the shape nearly every activity's time has: read by the standard library (see quick_microseconds);
# an offset's minutes below 60, as pandas reads it (the standard library takes +00:60 as +01:00)
COMMON_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{3}|\.\d{6}|\.\d{9})?(?:Z|[+-]\d{2}:[0-5]\d)?"
)
EPOCH, MICROSECOND = datetime(1970, 1, 1, tzinfo=UTC), timedelta(microseconds=1)
MICROSECONDS = 1_000_000
EARLIEST_MICROSECONDS = EARLIEST_TIMESTAMP.value // 1000  # Timestamp.value: nanoseconds, whatever the unit
TEXT = pd.StringDtype(na_value=np.nan)  # what pandas 3 infers for a column of text: ``str``


class NotCovered(Exception):
    """A model or request the compiled path leaves to the pandas path; the message says why."""


@dataclass(frozen=True)
class RequestPlan:
    """Everything a request needs that does not depend on it, for one loaded model."""

    names: list[str]  # the model's features, in its column order
    settings: FeatureSettings | None  # None: a flat table's model, which takes features only
    lead_fields: list[str]
    numeric_fields: frozenset[str]  # lead-shape fields read as numbers
    free_domains: frozenset[str]
    codes: dict[str, dict[str, float]]  # categorical feature -> level -> the booster's code
    unseen_order: list[tuple[int, str]]  # categorical features as the unseen-level warnings list them
    numeric_features: frozenset[str]  # features-shape columns read as numbers
    spelling: dict[str, tuple[set[Any], Mapping[str, str]]]  # training levels and synonyms per column
    request_id: str | None
    rules: ContractRules  # the data contracts' checks of the fields, as the nightly job's
    type_codes: dict[str, int]  # activity types spelt as the contract keeps them -> their code
    page_codes: dict[str, int]  # page categories spelt as the contract keeps them -> their code
    explainer: FastTreeExplainer
    margin_scale: float
    calibrator: Calibrator
    tiers: Tiers
    explanation: ExplanationPlan
    words: dict[str, str]

    @classmethod
    def compile(cls, scorer: LeadScorer) -> RequestPlan:
        """The plan of ``scorer``; :class:`NotCovered` for a model the compiled path does not cover."""
        model, names = scorer.model, list(scorer.feature_names)
        if getattr(scorer, "segments", None) is not None:  # rows routed by segment: the pandas path routes
            raise NotCovered("segment models")
        if not isinstance(model, LightGBMModel) or list(model.feature_names) != names:
            raise NotCovered(f"a {type(model).__name__} model")
        categories = model.categories or {}
        if any(not isinstance(level, str) for levels in categories.values() for level in levels):
            raise NotCovered("category levels that are not text")
        numeric = frozenset(numeric_features(scorer))
        if any(name not in categories and name not in numeric for name in names):
            raise NotCovered("a categorical feature without the booster's levels")
        try:
            explainer = scorer.tree_explainer()
        except LeadmlError as error:
            raise NotCovered(str(error)) from None
        settings = feature_settings_of(scorer)
        levels, synonyms = training_levels(scorer), getattr(scorer, "request_synonyms", None) or {}
        rules = ContractRules.of(scorer)
        return cls(
            names=names,
            settings=settings,
            lead_fields=lead_fields(scorer),
            numeric_fields=frozenset(lead_numeric_fields(scorer)),
            free_domains=frozenset(settings.free_email_domains if settings else ()),
            codes={
                name: {level: float(code) for code, level in enumerate(categories[name])}
                for name in categories
            },
            unseen_order=[(names.index(name), name) for name in categories],
            numeric_features=numeric,
            spelling={name: (levels[name], synonyms.get(name, {})) for name in names if levels.get(name)},
            request_id=getattr(scorer, "request_id", None),
            rules=rules,
            type_codes=_kept_spellings(rules.activities[s.ACTIVITY_TYPE], TYPE_CODES),
            page_codes=_kept_spellings(rules.activities[s.PAGE_CATEGORY], PAGE_CODES),
            explainer=explainer,
            margin_scale=model.margin_scale,
            calibrator=scorer.calibrator,
            tiers=Tiers.of(scorer),
            explanation=ExplanationPlan.of(scorer),
            words=movement_words(scorer),
        )

    def answer(self, frame: pd.DataFrame, now: pd.Timestamp | None = None) -> pd.DataFrame:
        """:func:`~leadml.scoring.requests.predict_request`'s answer; :class:`NotCovered` (or the
        reference's own :class:`RequestError`) where the pandas path has to answer."""
        rows = Rows.of(frame)
        read = lead_shape(self, rows, _utc_now(now)) if rows.is_lead_request() else features_shape(self, rows)
        inputs = model_input(self, read.columns, rows.n)
        out = answer_frame(self._columns(read, inputs), rows.n)
        if PREVIOUS in rows:  # why each lead moved since the answer it was given before
            before = previous_answers(frame, out[s.LEAD_ID])
            out["margin_change"], out["movement"] = movement_columns(out, before, self.words)
        return out

    def _columns(self, read: Read, inputs: ModelInput) -> dict[str, Any]:
        """The answer's columns, in the pandas path's order and with what its dtypes come from
        (``as_of`` echoed as given: objects, never inferred; see :func:`answer_frame`)."""
        contributions = self.explainer.shap_values(inputs.matrix) * self.margin_scale
        # summed as the pandas path sums its column-major frame: the same margin to the last bit
        margin = np.asfortranarray(contributions).sum(axis=1)
        probability = self.calibrator.predict_proba(margin)
        explained = explanation_arrays(
            np.asfortranarray(contributions[:, :-1]),
            contributions[:, -1],
            self.explanation,
            inputs.missing,
            inputs.describer(self.names, self.explanation.metadata),
        )
        n = len(margin)
        return {
            s.LEAD_ID: _objects(read.lead_ids),
            REQUEST_AS_OF: _objects(read.as_of),
            PROBABILITY: probability,
            MARGIN: margin,
            "tier": assign_tiers(probability, dict(self.tiers.thresholds), self.tiers.floor_tier),
            **explained,
            "margin_change": np.full(n, np.nan),
            "movement": np.full(n, None, dtype=object),
            WARNINGS: ["; ".join(w + inputs.unseen[row]) or None for row, w in enumerate(read.warnings)],
        }


def _kept_spellings(rule: FieldRule, codes: Mapping[str, int]) -> dict[str, int]:
    """The values the contract keeps as they are spelt (a data config's synonym may map one to
    another), with their codes: the common case of an activity, read by one lookup."""
    return {value: code for value, code in codes.items() if rule.quick_text(value) == value}


def request_plan(scorer: LeadScorer) -> RequestPlan | None:
    """The scorer's compiled plan (None: the compiled path does not cover its model), compiled on
    first use and kept on the scorer (``LeadScorer._request_plan``, never pickled)."""
    sources = tuple(getattr(scorer, name, None) for name in SOURCES)
    cached = getattr(scorer, "_request_plan", None)
    if isinstance(cached, CompiledPlan) and all(a is b for a, b in zip(cached.sources, sources, strict=True)):
        return cached.plan
    try:
        plan: RequestPlan | None = RequestPlan.compile(scorer)
    except NotCovered as reason:
        logger.info("requests to this model are answered by the pandas path: %s", reason)
        plan = None
    scorer._request_plan = CompiledPlan(sources, plan)
    return plan


def prepare_request_plan(scorer: LeadScorer) -> None:
    """Compile the request path now (when the model loads) rather than on the first request."""
    request_plan(scorer)


@dataclass(frozen=True)
class CompiledPlan:
    sources: tuple[Any, ...]  # the scorer's attributes the plan was compiled from
    plan: RequestPlan | None


def compiled_answer(
    scorer: LeadScorer, frame: pd.DataFrame, now: pd.Timestamp | None = None
) -> pd.DataFrame | None:
    """The compiled path's answer to ``frame``, or None where the pandas path answers (module docstring)."""
    plan = request_plan(scorer)
    if plan is None:
        return None
    try:
        return plan.answer(frame, now)
    except (NotCovered, RequestError) as reason:
        logger.debug("request answered by the pandas path: %s", reason)
        return None


# --------------------------------------------------------------------------- reading a request
@dataclass(frozen=True)
class Rows:
    """The request's values as plain Python objects, read from the frame in one conversion."""

    n: int
    positions: dict[Any, int]
    values: np.ndarray  # rows x columns, objects

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Rows:
        if len(frame) == 0 or len(frame.columns) == 0:
            raise NotCovered("an empty request")
        names = frame.columns.tolist()  # one conversion: iterating an Index of text reads name by name
        positions = {name: j for j, name in enumerate(names)}
        # names that are all text are repeated where the dict has fewer; pandas' check for any other
        if len(positions) < len(names) or (
            not all(type(name) is str for name in names) and not frame.columns.is_unique
        ):
            raise NotCovered("repeated column names")
        return cls(len(frame), positions, object_values(frame))

    def __contains__(self, name: str) -> bool:
        return name in self.positions

    def is_lead_request(self) -> bool:
        """:func:`~leadml.scoring.request_fields.is_lead_request` of the frame, on its values read:
        ``created_at`` or ``activities`` given (not missing as ``Series.notna`` sees it) in some row."""
        for name in (s.CREATED_AT, ACTIVITIES):
            j = self.positions.get(name)
            if j is not None and not pd.isna(self.values[:, j]).all():
                return True
        return False

    def column(self, name: str) -> list[Any]:
        """The field's values, row by row (None for each row when the request has no such field)."""
        j = self.positions.get(name)
        return [None] * self.n if j is None else self.values[:, j].tolist()


def object_values(frame: pd.DataFrame) -> np.ndarray:
    """``frame.to_numpy(dtype=object)``: the same values, read block by block at a fraction of the cost.

    pandas turns each Arrow text column (pandas 3's ``str``, one block each) into objects through
    several layers, about 20 us a column; a lead's request has a dozen of them, so a one-row frame
    took 0.3 ms. Here Arrow lists a text column's values itself (a missing value as the column's own
    missing value, NaN for ``str``) and every other block is converted as pandas converts it.
    Blocks are pandas internals: should a pandas release move them, pandas' own conversion answers.
    """
    try:
        return _object_values_by_block(frame)
    except AttributeError:
        return frame.to_numpy(dtype=object)


def _object_values_by_block(frame: pd.DataFrame) -> np.ndarray:
    blocks = frame._mgr.blocks
    if len(blocks) < 2:  # pandas' own single-block path is as quick
        return frame.to_numpy(dtype=object)
    out = np.empty((frame.shape[1], frame.shape[0]), dtype=object)  # columns x rows, as pandas
    for block in blocks:
        values = block.values
        dtype = values.dtype
        if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
            missing = dtype.na_value
            texts = pa.array(values).to_pylist()  # the Arrow array itself (__arrow_array__): no copy
            out[block.mgr_locs.indexer] = [[missing if text is None else text for text in texts]]
        else:
            out[block.mgr_locs.indexer] = block.get_values(OBJECT)
    return out.T


def answer_frame(columns: Mapping[str, Any], n: int) -> pd.DataFrame:
    """``pd.DataFrame(columns)`` of an answer's ``n`` rows, ``as_of`` kept as objects: the same frame
    (columns, values and dtypes), built from its blocks.

    The columns are float64 arrays, kept as they are, and columns of objects, whose dtype pandas
    infers: ``str`` where every value is text or None (and one is text; None becomes NaN), objects
    where all are None. ``pd.DataFrame`` checks and infers each of the 52 columns of an answer on its
    own (sanitize_array, then the blocks formed and the 41 float columns stacked): 0.8 ms for one
    lead on 2 cores, 1.4 ms inside the scoring server. Here the floats are stacked once, the text of
    every text column is converted by one call and sliced per column, and the frame is made from the
    blocks (``pandas.api.internals.create_dataframe_from_blocks``): 0.2 ms. Anything else (an object
    column holding numbers, such as a lead id sent as a number, or a float column of another
    shape) takes ``pd.DataFrame``.
    """
    floats, float_at, objects, object_at, texts, text_at = [], [], [], [], [], []
    for j, (name, values) in enumerate(columns.items()):
        if type(values) is np.ndarray and (values.dtype is FLOAT or values.dtype == FLOAT):
            if values.ndim != 1 or len(values) != n:
                return _inferred_frame(columns)
            floats.append(values)
            float_at.append(j)
        elif name == REQUEST_AS_OF:  # echoed as given: never inferred
            objects.append(values)
            object_at.append(j)
        else:
            kind = _text_kind(values)
            if kind is None or len(values) != n:
                return _inferred_frame(columns)
            (texts if kind else objects).append(values)
            (text_at if kind else object_at).append(j)
    blocks: list[tuple[Any, np.ndarray]] = []
    if floats:
        blocks.append((np.concatenate(floats).reshape(len(floats), n), np.array(float_at, dtype=np.intp)))
    if objects:
        block = np.empty((len(objects), n), dtype=object)
        for i, values in enumerate(objects):
            block[i, :] = values
        blocks.append((block, np.array(object_at, dtype=np.intp)))
    if texts:
        flat = np.empty(len(texts) * n, dtype=object)
        for i, values in enumerate(texts):
            flat[i * n : (i + 1) * n] = values
        converted = pd.array(flat, dtype=TEXT)  # one conversion, sliced per column (no copy)
        blocks += [
            (converted[i * n : (i + 1) * n], np.array([j], dtype=np.intp)) for i, j in enumerate(text_at)
        ]
    labels = _column_index(tuple(columns)).view()  # a view per frame: a name set on it stays there
    return create_dataframe_from_blocks(blocks, index=pd.RangeIndex(n), columns=labels)


def _inferred_frame(columns: Mapping[str, Any]) -> pd.DataFrame:
    """``pd.DataFrame`` of the columns, inferring each dtype but ``as_of``'s."""
    framed = dict(columns)
    if REQUEST_AS_OF in framed:
        framed[REQUEST_AS_OF] = pd.Series(framed[REQUEST_AS_OF], dtype=object)
    return pd.DataFrame(framed)


def _text_kind(values: Sequence[Any]) -> bool | None:
    """True: text or None, some text (pandas infers ``str``); False: all None (objects); None: else."""
    text = False
    for value in values:
        if isinstance(value, str):
            text = True
        elif value is not None:
            return None
    return text


@lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """The answer's column labels, as ``pd.DataFrame`` labels them: built once per set of names."""
    return pd.Index(list(names))


@dataclass(frozen=True)
class Read:
    """A request read: its features by name (float arrays, or lists of text), what it echoes, its warnings."""

    columns: dict[str, np.ndarray | list[str | None]]
    lead_ids: list[Any]
    as_of: list[Any]
    warnings: list[list[str]]


def _utc_now(now: pd.Timestamp | None) -> pd.Timestamp:
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    if not isinstance(now, pd.Timestamp) or str(now.tz) != "UTC":
        raise NotCovered("now is not a UTC timestamp")
    return now


def _numbers(values: Sequence[Any]) -> np.ndarray:
    # a finite float (what JSON numbers mostly are) is its own number; the rest is number()'s to read
    parsed = [value if type(value) is float and value - value == 0.0 else number(value) for value in values]
    if any(value is NOT_A_NUMBER for value in parsed):
        raise NotCovered("a value that is not a number")
    return np.array(parsed, dtype=np.float64)


def _texts(values: Sequence[Any]) -> list[str | None]:
    return [_text(value) for value in values]


def _text(value: Any) -> str | None:
    """A text field's value as the pandas path reads it: missing as None, numbers as their text."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")  # pandas' Arrow strings refuse lone surrogates
            except UnicodeEncodeError:
                raise NotCovered("text that is not UTF-8") from None
        return value
    if isinstance(value, int | float):
        return text_of(value)
    raise NotCovered(f"a {type(value).__name__} where text is expected")


def _echo(value: Any) -> Any:
    """An echoed value (lead id, as_of of the features shape): missing as None, scalars as given."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str | int | float):
        return value
    raise NotCovered(f"a {type(value).__name__} echoed")


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _stamps(rows: Rows, field: str, *, required: bool) -> list[pd.Timestamp]:
    """The field's date-times in UTC, nanoseconds as the pandas path holds them (NaT: missing)."""
    if required and field not in rows:
        raise NotCovered(f"no {field}")
    stamps = []
    for row, value in enumerate(rows.column(field)):
        stamp = timestamp(value, f"row {row}, field {field!r}")
        if stamp is pd.NaT and required:
            raise NotCovered(f"no {field}")
        stamps.append(stamp if stamp is pd.NaT else stamp.as_unit("ns"))
    return stamps


# --------------------------------------------------------------------------- the features shape
def features_shape(plan: RequestPlan, rows: Rows) -> Read:
    """The model's features as sent: numbers read, category values spelt as training spelt them."""
    absent = [name for name in plan.names if name not in rows]
    if len(absent) == len(plan.names):
        raise NotCovered("no feature of the model")
    columns: dict[str, np.ndarray | list[str | None]] = {}
    for name in plan.names:
        given = rows.column(name)
        if name in plan.numeric_features:
            columns[name] = _numbers(given)
        elif name in plan.spelling:
            levels, synonyms = plan.spelling[name]
            columns[name] = [training_spelling(value, levels, synonyms) for value in _texts(given)]
        else:
            columns[name] = _texts(given)
    own_id = plan.request_id
    id_column = own_id if s.LEAD_ID not in rows and own_id and own_id in rows else s.LEAD_ID
    # a null feature is a value (no such event yet); a feature left out of the request is not
    warning = [absent_features_warning(absent, len(plan.names))] if absent else []
    return Read(
        columns=columns,
        lead_ids=[_echo(value) for value in rows.column(id_column)],
        as_of=[_echo(value) for value in rows.column(REQUEST_AS_OF)],
        warnings=[list(warning) for _ in range(rows.n)],
    )


# --------------------------------------------------------------------------- the lead shape
@dataclass(frozen=True)
class Leads:
    """The lead-shape rows read: dates, lead and account fields (as the CRM tables name them), events."""

    created: list[pd.Timestamp]
    as_of: list[pd.Timestamp]
    leads: dict[str, np.ndarray | list[str | None]]
    accounts: dict[str, np.ndarray | list[str | None]]
    activities: Activities
    checks: ContractChecks  # what the data contracts refused (on accounts) or read as missing


def lead_shape(plan: RequestPlan, rows: Rows, now: pd.Timestamp) -> Read:
    """The features of lead fields and activities, built as of each row's ``as_of`` (default: now)."""
    if plan.settings is None:
        raise NotCovered("lead fields sent to a model that takes features only")
    read = read_leads(plan, rows, now.floor("us"))
    columns = lead_columns(plan.settings, plan.free_domains, read)
    warnings = []
    for row in range(rows.n):
        marked = read.checks.marked_missing
        absent = [
            f
            for f in plan.lead_fields[1:]
            if f not in rows or is_missing(rows.values[row, rows.positions[f]]) or (row, f) in marked
        ]
        activities = read.activities.late[row], read.activities.refused[row]
        warnings.append(lead_warnings(absent, *activities) + read.checks.account_warnings.get(row, []))
    return Read(
        columns=columns,
        lead_ids=[_echo(value) for value in rows.column(s.LEAD_ID)],
        as_of=[moment.isoformat() for moment in read.as_of],
        warnings=warnings,
    )


def read_leads(plan: RequestPlan, rows: Rows, default_as_of: pd.Timestamp) -> Leads:
    created = _stamps(rows, s.CREATED_AT, required=True)
    given = _stamps(rows, REQUEST_AS_OF, required=False)
    as_of = [default_as_of.as_unit("ns") if stamp is pd.NaT else stamp for stamp in given]
    if any(made > moment for made, moment in zip(created, as_of, strict=True)):
        raise NotCovered("a lead created after its as_of")
    leads: dict[str, np.ndarray | list[str | None]] = {}
    checks = ContractChecks(plan.rules)
    for field in plan.lead_fields:
        if field in (s.CREATED_AT, *ACCOUNT_FIELDS):
            continue
        values = _field(plan, rows, field, checks)
        if field == EMAIL_DOMAIN:  # an address sent by mistake loses its local part here
            if not isinstance(values, list):
                raise NotCovered("an e-mail domain read as a number")
            field, values = s.EMAIL, [v if v is None else "x@" + v.rpartition("@")[2] for v in values]
        leads[field] = values
    accounts = {column: _field(plan, rows, field, checks) for field, column in ACCOUNT_FIELDS.items()}
    accounts = _unknown_accounts(accounts, sorted(checks.account_warnings))
    return Leads(created, as_of, leads, accounts, read_activities(plan, rows, as_of), checks)


def _field(
    plan: RequestPlan, rows: Rows, field: str, checks: ContractChecks
) -> np.ndarray | list[str | None]:
    given = rows.column(field)
    if field not in plan.numeric_fields:
        texts = _texts(given)
        return checks.texts(texts, field, quick=True) if field in plan.rules.texts else texts
    rule = plan.rules.fields.get(field)
    if rule is None:
        return _numbers(given)
    # a plain number the contracts keep is read here; text ("NA", " 42 ") and a value they refuse
    # by the nightly job's own parser, as the pandas path reads them
    if not any(isinstance(value, str | bool) for value in given):
        parsed = [
            value if type(value) is float and value - value == 0.0 else number(value) for value in given
        ]
        if all(type(value) is float and keeps_number(rule.spec, value) for value in parsed):
            return np.array(parsed, dtype=np.float64)
    return checks.numbers(given, field)


def _unknown_accounts(
    accounts: dict[str, np.ndarray | list[str | None]], rows: Sequence[int]
) -> dict[str, np.ndarray | list[str | None]]:
    """``accounts`` with the fields of ``rows`` missing: accounts the contracts refuse (the pandas
    path's rule)."""
    if not rows:
        return accounts
    unknown = {}
    for column, values in accounts.items():
        values = values.copy() if isinstance(values, np.ndarray) else list(values)
        for row in rows:
            values[row] = np.nan if isinstance(values, np.ndarray) else None
        unknown[column] = values
    return unknown


@dataclass(frozen=True)
class Activities:
    """The rows' activities read: per row its kept events (seconds since 1970 UTC, type code, page
    code or -1), how many of them are not before its as_of, and why others were ignored (refused
    by the activities contract, as the nightly job quarantines them)."""

    events: list[list[tuple[int, int, int]]]
    late: list[int]
    refused: list[list[str]]


def read_activities(plan: RequestPlan, rows: Rows, as_of: Sequence[pd.Timestamp]) -> Activities:
    """Every row's activities: each value read in Python where it is plain (a time of the common
    ISO shape, a type and page as the contract spells them, or their plain spellings), the others
    by the contract's parser, as the pandas path reads them all."""
    given = [(row, position, event) for row, listed in enumerate(rows.column(ACTIVITIES))
             for position, event in enumerate(_event_list(listed))]  # fmt: skip
    events = [event for _, _, event in given]
    types, pages = plan.rules.activities[s.ACTIVITY_TYPE], plan.rules.activities[s.PAGE_CATEGORY]
    read = {
        s.TIMESTAMP: [quick_microseconds(event.get(s.TIMESTAMP)) for event in events],
        s.ACTIVITY_TYPE: [
            _quick_code(plan.type_codes, types, event.get(s.ACTIVITY_TYPE), None) for event in events
        ],
        s.PAGE_CATEGORY: [
            _quick_code(plan.page_codes, pages, event.get(s.PAGE_CATEGORY), -1) for event in events
        ],
    }
    refused: dict[int, str] = {}
    for name in ACTIVITY_FIELDS:  # the pandas path's order: the reason of the first field refused
        for position, reason in _parsed_values(plan.rules, events, name, read[name]).items():
            refused.setdefault(position, reason)
    out = Activities([[] for _ in range(rows.n)], [0] * rows.n, [[] for _ in range(rows.n)])
    for i, (row, position, _) in enumerate(given):
        if i in refused:
            out.refused[row].append(refused_activity(position, refused[i]))
            continue
        microseconds = read[s.TIMESTAMP][i]
        if microseconds * 1000 >= as_of[row].value:  # never counted: kept out of the features' time keys
            out.late[row] += 1
        else:
            out.events[row].append(
                (microseconds // MICROSECONDS, read[s.ACTIVITY_TYPE][i], read[s.PAGE_CATEGORY][i])
            )
    return out


def _event_list(given: Any) -> list[Any]:
    if given is None or (isinstance(given, float) and given != given):
        return []
    if isinstance(given, np.ndarray):
        given = given.tolist()
    if not isinstance(given, list):
        raise NotCovered("activities that are not a list")
    for event in given:
        if not isinstance(event, Mapping) or not event.keys() <= EVENT_FIELDS:
            raise NotCovered("an activity that is not an object of known fields")
        if any(isinstance(value, list | dict | np.ndarray) for value in event.values()):
            raise NotCovered("an activity value that is a list or an object")
    return given


def _parsed_values(
    rules: ContractRules, events: Sequence[Mapping[str, Any]], name: str, read: list[Any]
) -> dict[int, str]:
    """The values of field ``name`` not read in Python (None in ``read``) read by the contract's
    parser, in place; why it refuses some, by activity."""
    undecided = [i for i, value in enumerate(read) if value is None]
    if not undecided:
        return {}
    values, reasons = checked_activity_values([events[i].get(name) for i in undecided], name, rules)
    for j, i in enumerate(undecided):
        read[i] = int(values[j])
    return {undecided[j]: reason for j, reason in reasons.items()}


def _quick_code(codes: Mapping[str, int], rule: FieldRule, value: Any, missing: int | None) -> int | None:
    """The code of an activity's type or page spelt as the contract keeps it or plainly otherwise
    ("Page View"); ``missing`` for no value or a missing marker (a page: -1, none; a type: None, as
    the parser refuses it); None: the parser reads it."""
    if value is None:
        return missing
    if type(value) is not str:
        return None
    code = codes.get(value)
    if code is not None:
        return code
    token = rule.quick_text(value)
    if token is None:
        return missing
    return None if token is NOT_PLAIN else codes.get(token)


def quick_microseconds(value: Any) -> int | None:
    """An activity's time in microseconds since 1970 UTC, as the activities contract reads it, for
    text of the common shape (``2025-05-01T10:00:00``, with milliseconds or microseconds, ``Z`` or an
    offset; nanoseconds cut to microseconds, as the parser keeps them) from 1900 on; None: the
    parser reads it (any other shape or value).

    The parser (``leadml.data.parsing``) costs a pandas series; ``datetime.fromisoformat`` reads
    the same instant (a naive time is UTC, as there) in about a microsecond.
    """
    if type(value) is not str or not COMMON_ISO.fullmatch(value):
        return None
    if value[19:20] == "." and value[20:29].isdigit():  # nanoseconds: the parser keeps microseconds
        value = value[:26] + value[29:]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:  # no such date or time (30 February, hour 24, offset +24:00): the parser's word
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    microseconds = (moment - EPOCH) // MICROSECOND
    return microseconds if microseconds >= EARLIEST_MICROSECONDS else None


def lead_columns(
    settings: FeatureSettings, free_domains: frozenset[str], read: Leads
) -> dict[str, np.ndarray | list[str | None]]:
    """Every feature of the rows, as ``lead_profile`` and ``features_as_of`` build them."""
    columns = profile_columns(settings, free_domains, read)
    n = len(read.as_of)
    timed: dict[str, np.ndarray] = {}
    for moment, group in _by_moment(read.as_of).items():
        for name, values in moment_columns(settings, read, columns, moment, group).items():
            timed.setdefault(name, np.empty(n))[group] = values
    columns.pop(s.FOUNDED_YEAR)
    derived = ("lead_age_days", "company_age_years", "revenue_per_employee")
    if any(name in columns and name not in derived for name in timed):
        raise NotCovered("a column of the same name as an activity feature")
    columns.update(timed)
    for name in settings.exclude:
        columns.pop(name, None)
    return columns


def profile_columns(
    settings: FeatureSettings, free_domains: frozenset[str], read: Leads
) -> dict[str, np.ndarray | list[str | None]]:
    """``lead_profile``'s columns, in its order (a later column of the same name replaces one before)."""
    n, leads, accounts = len(read.as_of), read.leads, read.accounts
    columns: dict[str, np.ndarray | list[str | None]] = {}
    for column in (*settings.lead_categorical, *settings.extra_categorical):
        columns[column] = _text_column(leads[column]) if column in leads else [None] * n
    columns["seniority"] = (
        seniority_levels(_text_column(leads[s.JOB_TITLE])) if s.JOB_TITLE in leads else ["unknown"] * n
    )
    columns["corporate_email"] = (
        corporate_email_flags(_text_column(leads[s.EMAIL]), free_domains)
        if s.EMAIL in leads
        else np.full(n, np.nan)
    )
    columns[s.INDUSTRY] = _text_column(accounts[s.INDUSTRY])
    columns["company_country"] = _text_column(accounts[s.COUNTRY])
    for column in (s.EMPLOYEES, s.ANNUAL_REVENUE, s.FOUNDED_YEAR):
        columns[column] = _number_column(accounts[column])
    for column in (*settings.lead_numeric, *settings.extra_numeric):
        columns[column] = _number_column(leads[column]) if column in leads else np.full(n, np.nan)
    return columns


def _text_column(values: np.ndarray | list[str | None]) -> list[str | None]:
    if not isinstance(values, list):
        raise NotCovered("a category read as a number")
    return values


def _number_column(values: np.ndarray | list[str | None]) -> np.ndarray:
    if isinstance(values, list):
        raise NotCovered("a number read as text")
    return values


def _by_moment(as_of: Sequence[pd.Timestamp]) -> dict[pd.Timestamp, np.ndarray]:
    groups: dict[pd.Timestamp, list[int]] = {}
    for row, moment in enumerate(as_of):
        groups.setdefault(moment, []).append(row)
    return {moment: np.array(rows, dtype=np.int64) for moment, rows in groups.items()}


def moment_columns(
    settings: FeatureSettings,
    read: Leads,
    profile: Mapping[str, np.ndarray | list[str | None]],
    moment: pd.Timestamp,
    group: np.ndarray,
) -> dict[str, np.ndarray]:
    """The features that depend on ``as_of`` of the rows ``group`` sharing it: ages and activity."""
    t = moment.value // NANOSECONDS  # floored, as leadml.data.features.to_seconds
    created_s = np.array([read.created[row].value // NANOSECONDS for row in group], dtype=np.int64)
    employees, revenue = _number_column(profile[s.EMPLOYEES]), _number_column(profile[s.ANNUAL_REVENUE])
    columns = {
        "lead_age_days": (t - created_s) / SECONDS_PER_DAY,
        "company_age_years": moment.year - _number_column(profile[s.FOUNDED_YEAR])[group],
        "revenue_per_employee": revenue_per_employee(employees[group], revenue[group]),
    }
    mine = [(position, *event) for position, row in enumerate(group) for event in read.activities.events[row]]
    found = np.array(mine, dtype=np.int64).reshape(-1, 4)
    events = event_log(pd.RangeIndex(len(group)), found[:, 0], found[:, 1], found[:, 2], found[:, 3])
    columns.update(activity_columns(events, np.arange(len(group), dtype=np.int64), t, settings))
    return columns


# --------------------------------------------------------------------------- the model's input
@dataclass(frozen=True)
class ModelInput:
    """The rows in the booster's float layout, with what the reasons and warnings read."""

    matrix: np.ndarray  # rows x features: numbers as they are, categories as codes (NaN: unseen, missing)
    texts: dict[int, list[str | None]]  # the values of the categorical features, by feature position
    missing: np.ndarray  # rows x features: the value is missing
    unseen: list[list[str]]  # per row: the category values training never saw

    def value(self, row: int, feature: int) -> Any:
        texts = self.texts.get(feature)
        return float(self.matrix[row, feature]) if texts is None else texts[row]

    def describer(
        self, names: Sequence[str], metadata: Mapping[str, Any]
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``describe`` of :func:`~leadml.scoring.scores.explanation_arrays` over these rows."""

        def describe(features: np.ndarray, useful: np.ndarray) -> np.ndarray:
            sentences = np.full(len(features), None, dtype=object)
            for row in np.flatnonzero(useful):
                feature = int(features[row])
                sentences[row] = sentence_of(metadata, names[feature], self.value(int(row), feature))
            return sentences

        return describe


def model_input(
    plan: RequestPlan, columns: Mapping[str, np.ndarray | list[str | None]], n: int
) -> ModelInput:
    """The features ``plan.names`` of ``columns`` as the booster reads them (one not built: missing)."""
    matrix = np.full((n, len(plan.names)), np.nan)
    texts: dict[int, list[str | None]] = {}
    for j, name in enumerate(plan.names):
        values = columns.get(name)
        codes = plan.codes.get(name)
        if isinstance(values, list):
            if codes is None:
                raise NotCovered(f"{name} built as text, read as a number")
            texts[j] = values
            matrix[:, j] = [np.nan if value is None else codes.get(value, np.nan) for value in values]
        elif values is not None:
            if codes is not None:
                raise NotCovered(f"{name} built as a number, read as a category")
            matrix[:, j] = values
    missing = np.isnan(matrix)
    for j, values in texts.items():
        missing[:, j] = [value is None for value in values]
    unseen: list[list[str]] = [[] for _ in range(n)]
    for j, name in plan.unseen_order:
        for row, value in enumerate(texts.get(j, ())):
            if value is not None and value not in plan.codes[name]:
                unseen[row].append(unseen_level_warning(name, value))
    return ModelInput(matrix, texts, missing, unseen)
