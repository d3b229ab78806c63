"""Point-in-time features and training snapshots.

A training example is a (lead, as-of date T) pair. Every feature of that pair is
computed only from facts dated strictly before T, by the same function
(:func:`features_as_of`) that the nightly scorer calls with T = the run date, so
training and scoring cannot drift apart. The label looks only at (T, T + horizon].

Behaviour is summarised per *channel*: one channel per activity type (``email_open``,
``demo_request`` ...) and one per page category of page views (``page_pricing`` ...).
Per channel we count events in each window (7/30/90 days by default) and a
recency-weighted count with a configurable half-life, so engagement decays by itself
as a lead goes quiet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadml.data import schema as s
from leadml.data import wording
from leadml.data.arrays import argsort_int, is_in, positions_in
from leadml.data.calendar import snapshot_dates, to_utc
from leadml.data.contracts import normalise_token
from leadml.errors import LeadmlError, known_settings
from leadml.progress import progress_iter

logger = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
LABEL = s.LABEL
# Recency weights below 2**-RECENCY_HALF_LIVES are treated as zero, which bounds the
# look-back of a snapshot without changing any figure by more than about 1e-6.
RECENCY_HALF_LIVES = 20

FREE_EMAIL_DOMAINS: tuple[str, ...] = (
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "proton.me",
    "protonmail.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "yandex.ru",
    "qq.com",
    "163.com",
)
# the domain of an e-mail address (lower-cased and trimmed first)
EMAIL_DOMAIN = r"@([^@\s]+)$"

# Ordered: the first rule whose pattern matches a title wins ("VP of Sales Operations
# Manager" is a VP). Patterns are matched on the lower-cased title with word boundaries.
SENIORITY_RULES: tuple[tuple[str, str], ...] = (
    ("intern_student", r"\b(?:intern|internship|student|trainee|apprentice|graduate assistant)\b"),
    (
        "c_level",
        r"\b(?:chief|ceo|cfo|cto|coo|cio|cmo|cro|ciso|founder|co-founder|cofounder|owner"
        r"|(?<!vice )(?<!vice-)president"
        r"|managing director|general manager)\b",
    ),
    ("vp", r"\b(?:vp|svp|evp|vice president|head of|head)\b"),
    ("director", r"\b(?:director|dir\.?)\b"),
    ("manager", r"\b(?:manager|mgr|lead|team lead|supervisor|principal)\b"),
    ("senior_individual", r"\b(?:senior|sr\.?|staff|specialist|architect|consultant)\b"),
    (
        "individual",
        r"\b(?:analyst|engineer|developer|associate|coordinator|representative|assistant"
        r"|officer|administrator|accountant|designer|scientist|executive|agent|clerk|buyer)\b",
    ),
)
SENIORITY_LEVELS: tuple[str, ...] = (*(level for level, _ in SENIORITY_RULES), "other", "unknown")

FIT, ENGAGEMENT, SOURCE_FAMILY, OTHER = "fit", "engagement", "source", "other"

CHANNEL_LABELS: dict[str, str] = {
    "page_view": "page views",
    "email_open": "e-mail opens",
    "email_click": "e-mail clicks",
    "form_submit": "form submissions",
    "content_download": "content downloads",
    "webinar": "webinar attendances",
    "demo_request": "demo requests",
    "call": "calls",
    "meeting": "meetings",
    "unsubscribe": "unsubscribes",
    "bounce": "e-mail bounces",
    "page_pricing": "pricing-page visits",
    "page_product": "product-page visits",
    "page_docs": "documentation-page visits",
    "page_blog": "blog-page visits",
    "page_careers": "careers-page visits",
}
# +1: more of it never lowers the score (used for monotone constraints later);
# -1: more of it never raises it; 0: no constraint (careers-page visits are often job seekers).
# each channel's noun (singular, plural) and what a lead did, for "last ... 3 days ago" and "never ..."
CHANNEL_WORDS: dict[str, tuple[str, str, str]] = {
    "page_view": ("page view", "page views", "viewed a page"),
    "email_open": ("e-mail open", "e-mail opens", "opened an e-mail"),
    "email_click": ("e-mail click", "e-mail clicks", "clicked an e-mail"),
    "form_submit": ("form submission", "form submissions", "submitted a form"),
    "content_download": ("content download", "content downloads", "downloaded content"),
    "webinar": ("webinar attended", "webinars attended", "attended a webinar"),
    "demo_request": ("demo request", "demo requests", "requested a demo"),
    "call": ("call", "calls", "had a call"),
    "meeting": ("meeting", "meetings", "had a meeting"),
    "unsubscribe": ("unsubscribe", "unsubscribes", "unsubscribed"),
    "bounce": ("e-mail bounce", "e-mail bounces", "had an e-mail bounce"),
    "page_pricing": ("pricing-page visit", "pricing-page visits", "visited the pricing page"),
    "page_product": ("product-page visit", "product-page visits", "visited a product page"),
    "page_docs": ("documentation-page visit", "documentation-page visits", "read the documentation"),
    "page_blog": ("blog-page visit", "blog-page visits", "read the blog"),
    "page_careers": ("careers-page visit", "careers-page visits", "visited the careers page"),
}
# the seniority levels of SENIORITY_RULES as a reason reads them
SENIORITY_WORDS: dict[str, str] = {
    "intern_student": "an intern or student",
    "c_level": "a C-level contact",
    "vp": "a VP or head of department",
    "director": "a director",
    "manager": "a manager",
    "senior_individual": "a senior specialist",
    "individual": "an individual contributor",
    "other": "a job title of no known seniority",
}
CORPORATE_EMAIL_WORDS: dict[str, str] = {
    "1": "corporate e-mail address",
    "0": "free e-mail address (such as Gmail)",
}
CHANNEL_DIRECTION: dict[str, int] = {
    "page_view": 0,
    "email_open": 1,
    "email_click": 1,
    "form_submit": 1,
    "content_download": 1,
    "webinar": 1,
    "demo_request": 1,
    "call": 0,
    "meeting": 1,
    "unsubscribe": -1,
    "bounce": -1,
    "page_pricing": 1,
    "page_product": 1,
    "page_docs": 0,
    "page_blog": 0,
    "page_careers": 0,
}
CHANNELS: tuple[str, ...] = (*s.ACTIVITY_TYPES, *(f"page_{c}" for c in s.PAGE_CATEGORIES))


@dataclass(frozen=True)
class FeatureSettings:
    """What the snapshot builder and the feature function need from ``conf/features``."""

    horizon_days: int = 90
    cadence_days: int = 14
    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    velocity_recent_days: int = 7
    velocity_baseline_days: int = 30
    lead_categorical: tuple[str, ...] = (s.SOURCE, s.COUNTRY)
    lead_numeric: tuple[str, ...] = (s.ESTIMATED_DEAL_VALUE,)
    extra_categorical: tuple[str, ...] = ()
    extra_numeric: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    free_email_domains: tuple[str, ...] = FREE_EMAIL_DOMAINS

    def __post_init__(self) -> None:
        if self.horizon_days < 1 or self.cadence_days < 1:
            raise ValueError("features.horizon_days and features.cadence_days must be at least 1")
        if not self.windows_days or min(self.windows_days) < 1:
            raise ValueError(f"features.windows_days must be positive, got {list(self.windows_days)}")
        if self.half_life_days <= 0:
            raise ValueError(f"features.half_life_days must be positive, got {self.half_life_days}")
        personal = set(s.PERSONAL_DATA_COLUMNS) & set(
            self.lead_categorical + self.lead_numeric + self.extra_categorical + self.extra_numeric
        )
        if personal:
            raise ValueError(f"personal data can never be a feature: {sorted(personal)}")

    @property
    def lookback_days(self) -> float:
        """How far back a snapshot reads events (windows, velocity and recency weights)."""
        return float(
            max(
                *self.windows_days,
                self.velocity_recent_days + self.velocity_baseline_days,
                self.half_life_days * RECENCY_HALF_LIVES,
            )
        )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> FeatureSettings:
        values = known_settings(cls, mapping, "features")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class FeatureMeta:
    """Metadata that turns a feature into a reason a person can read.

    ``wording`` names the sentence style (:mod:`leadml.data.wording`) and the fields after it
    are what that style needs; a model trained before the style guide has none and reads its
    ``template`` as it always did.
    """

    name: str
    family: str  # fit, engagement, source or other
    group: str  # original column or activity channel the feature is grouped back to
    template: str  # str.format template with {value} (the styles that quote a value use it too)
    monotone: int = 0  # +1 never lowers the score when higher, -1 never raises it, 0 free
    kind: str = "numeric"  # numeric or categorical
    wording: str = ""  # a style of leadml.data.wording.STYLES ("" : the template as it is)
    noun: str = ""  # what is counted or named, singular ("e-mail click", "job title")
    plural: str = ""  # the plural of ``noun`` ("e-mail clicks")
    verb: str = ""  # what the lead did, for "last ... 3 days ago" / "never ..." ("requested a demo")
    window_days: float = 0.0  # the count's window, a recency half-life or a velocity baseline
    labels: Mapping[str, str] = field(default_factory=dict)  # display words of values (data.labels)
    missing: str = ""  # the sentence of a missing value ("never requested a demo")
    # may a missing value be a reason in the lead's favour? True where missing means something
    # (never did it), or where the training rows showed that leads without it convert differently
    missing_informative: bool = False

    def describe(self, value: Any) -> str:
        """A plain-words sentence for one value of this feature."""
        if self.wording:
            return wording.sentence(self, value)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return f"{self.group.replace('_', ' ')} unknown"
        try:
            return self.template.format(value=value)
        except (ValueError, TypeError):
            return self.template.format(value=str(value))


@dataclass
class EventLog:
    """Activities prepared once per stage for fast as-of queries.

    Two orders of the same events: by time (window counts over a slice) and by
    (lead, time) (last and first activity before T, however old).
    """

    lead_ids: pd.Index
    time_s: np.ndarray  # int64 seconds since epoch, ascending
    lead_pos: np.ndarray  # int64 position in lead_ids, aligned with time_s
    channel: np.ndarray  # int16 activity-type channel, aligned with time_s
    page_channel: np.ndarray  # int16 page-category channel or -1, aligned with time_s
    lead_time_key: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))
    channel_time_key: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))


def to_seconds(values: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """UTC timestamps as int64 seconds since the epoch, whatever their resolution."""
    idx = pd.DatetimeIndex(values)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return np.asarray((idx - EPOCH) // pd.Timedelta(seconds=1), dtype=np.int64)


def _time_key(lead_pos: np.ndarray, time_s: np.ndarray) -> np.ndarray:
    # Leads in the high bits, seconds since 1900 in the low 33 bits (272 years).
    return (lead_pos.astype(np.int64) << 33) | (time_s + 2_208_988_800)


def prepare_events(activities: pd.DataFrame, lead_ids: pd.Index) -> EventLog:
    """Index activities of known leads by time and by (lead, time)."""
    lead_pos = positions_in(activities[s.LEAD_ID], lead_ids)
    type_codes = positions_in(activities[s.ACTIVITY_TYPE], s.ACTIVITY_TYPES)
    known = (lead_pos >= 0) & (type_codes >= 0) & np.asarray(activities[s.TIMESTAMP].notna())
    if not known.all():
        logger.warning("ignoring %d activities of unknown leads or types, or without time", (~known).sum())
    time_s = to_seconds(activities[s.TIMESTAMP][known])
    page_codes = positions_in(activities[s.PAGE_CATEGORY], s.PAGE_CATEGORIES)[known]
    return event_log(lead_ids, lead_pos[known], time_s, type_codes[known], page_codes)


def event_log(
    lead_ids: pd.Index,
    lead_pos: np.ndarray,
    time_s: np.ndarray,
    type_codes: np.ndarray,
    page_codes: np.ndarray,
) -> EventLog:
    """The :class:`EventLog` of known events given as int64 arrays: each event's position in
    ``lead_ids``, its seconds since the epoch, its position in ``ACTIVITY_TYPES`` and in
    ``PAGE_CATEGORIES`` (-1: none). The request path builds its events this way, without a frame."""
    is_page_view = type_codes == s.ACTIVITY_TYPES.index(s.PAGE_VIEW)
    page_channel = np.where(is_page_view & (page_codes >= 0), len(s.ACTIVITY_TYPES) + page_codes, -1)
    order = argsort_int(time_s)
    return EventLog(
        lead_ids=lead_ids,
        time_s=time_s[order],
        lead_pos=lead_pos[order],
        channel=type_codes.astype(np.int16)[order],
        page_channel=page_channel.astype(np.int16)[order],
        lead_time_key=np.sort(_time_key(lead_pos, time_s)),
        channel_time_key=np.sort(
            np.concatenate(
                [
                    _time_key(lead_pos * len(CHANNELS) + type_codes, time_s),
                    _time_key(lead_pos * len(CHANNELS) + page_channel, time_s)[page_channel >= 0],
                ]
            )
        ),
    )


def seniority_from_title(titles: pd.Series) -> pd.Series:
    """Seniority level from a free-text job title by ordered keyword rules."""
    lowered = titles.astype("string").str.lower().str.replace(r"[_/,&]", " ", regex=True)
    result = pd.Series("other", index=titles.index, dtype="object")
    undecided = np.array(lowered.notna(), dtype=bool)
    for level, pattern in SENIORITY_RULES:
        hit = lowered.str.contains(pattern, regex=True, na=False).to_numpy() & undecided
        result[hit] = level
        undecided = undecided & ~hit
    result[lowered.isna().to_numpy() | (lowered.str.strip() == "").fillna(True).to_numpy()] = "unknown"
    return pd.Series(pd.Categorical(result, categories=list(SENIORITY_LEVELS)), index=titles.index)


def corporate_email_flag(emails: pd.Series, free_domains: Iterable[str]) -> pd.Series:
    """1.0 for a company domain, 0.0 for a free-mail domain, NaN when there is no address."""
    domain = emails.astype("string").str.strip().str.lower().str.extract(EMAIL_DOMAIN, expand=False)
    flag = (~domain.isin(set(free_domains))).astype("float64")
    return flag.where(domain.notna(), np.nan)


# --------------------------------------------------------------------------- a few values at a time
# The same rules as the two functions above for the handful of values of one request, compiled once
# and without a pandas round trip (a string Series costs more than the rules). pandas runs these
# string methods in Arrow: lower-casing and trimming stay Arrow's (its Unicode case mapping differs
# from Python's for a few letters), the patterns are Python's (pandas falls back to ``re`` for
# them on non-ASCII text and for the look-behind, and on ASCII text RE2 matches the same).
SENIORITY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (level, re.compile(pattern)) for level, pattern in SENIORITY_RULES
)
TITLE_SEPARATORS = re.compile(r"[_/,&]")
EMAIL_DOMAIN_PATTERN = re.compile(EMAIL_DOMAIN)


def seniority_levels(titles: Sequence[str | None]) -> list[str]:
    """:func:`seniority_from_title` of a few titles, as plain strings."""
    levels = []
    for title in titles:
        text = None if title is None else TITLE_SEPARATORS.sub(" ", _arrow_lower(title))
        if text is None or not _arrow_strip(text):
            levels.append("unknown")
            continue
        levels.append(next((level for level, pattern in SENIORITY_PATTERNS if pattern.search(text)), "other"))
    return levels


def corporate_email_flags(emails: Sequence[str | None], free_domains: frozenset[str]) -> np.ndarray:
    """:func:`corporate_email_flag` of a few addresses."""
    flags = np.full(len(emails), np.nan)
    for row, email in enumerate(emails):
        found = None if email is None else EMAIL_DOMAIN_PATTERN.search(_arrow_lower(_arrow_strip(email)))
        if found is not None:
            flags[row] = 0.0 if found.group(1) in free_domains else 1.0
    return flags


def _arrow_lower(text: str) -> str:
    return text.lower() if text.isascii() else str(pc.utf8_lower(pa.scalar(text)).as_py())


def _arrow_strip(text: str) -> str:
    # Arrow trims the same ASCII whitespace as str.strip (\x1c to \x1f included)
    return text.strip() if text.isascii() else str(pc.utf8_trim_whitespace(pa.scalar(text)).as_py())


def lead_profile(leads: pd.DataFrame, accounts: pd.DataFrame, settings: FeatureSettings) -> pd.DataFrame:
    """Static features per lead (one row per lead, in the order of ``leads``).

    The e-mail address, names and phone are read only to derive the corporate-domain
    flag; they never leave this function.
    """
    firmographics = accounts.drop_duplicates(s.ACCOUNT_ID).set_index(s.ACCOUNT_ID)
    account_rows = firmographics.reindex(leads[s.ACCOUNT_ID].to_numpy())
    profile = pd.DataFrame(index=pd.Index(leads[s.LEAD_ID].to_numpy(), name=s.LEAD_ID))
    for column in (*settings.lead_categorical, *settings.extra_categorical):
        profile[column] = (
            _categorical(leads[column]) if column in leads else pd.Categorical([None] * len(leads))
        )
    profile["seniority"] = (
        seniority_from_title(leads[s.JOB_TITLE]).array
        if s.JOB_TITLE in leads
        else pd.Categorical(["unknown"] * len(leads), categories=list(SENIORITY_LEVELS))
    )
    profile["corporate_email"] = (
        corporate_email_flag(leads[s.EMAIL], settings.free_email_domains).to_numpy()
        if s.EMAIL in leads
        else np.nan
    )
    profile[s.INDUSTRY] = _categorical(pd.Series(account_rows[s.INDUSTRY].to_numpy()))
    profile["company_country"] = _categorical(pd.Series(account_rows[s.COUNTRY].to_numpy()))
    for column in (s.EMPLOYEES, s.ANNUAL_REVENUE, s.FOUNDED_YEAR):
        profile[column] = pd.to_numeric(account_rows[column], errors="coerce").to_numpy(dtype="float64")
    for column in (*settings.lead_numeric, *settings.extra_numeric):
        profile[column] = (
            pd.to_numeric(leads[column], errors="coerce").to_numpy(dtype="float64")
            if column in leads
            else np.nan
        )
    profile["_created_s"] = to_seconds(leads[s.CREATED_AT])
    return profile


def _categorical(values: pd.Series) -> pd.Categorical:
    as_text = values.astype("string")
    return pd.Categorical(as_text.to_numpy(dtype=object, na_value=None))


def features_as_of(
    profile: pd.DataFrame,
    events: EventLog,
    lead_positions: np.ndarray,
    as_of: pd.Timestamp,
    settings: FeatureSettings,
) -> pd.DataFrame:
    """Features of the leads at ``lead_positions`` (rows of ``profile``) as of ``as_of``.

    Only events with a timestamp strictly before ``as_of`` are read.
    """
    as_of = to_utc(as_of)
    t = int(to_seconds(pd.DatetimeIndex([as_of]))[0])
    lead_positions = np.asarray(lead_positions, dtype=np.int64)
    columns = activity_columns(events, lead_positions, t, settings)

    static = profile.iloc[lead_positions]
    out = static.drop(columns=["_created_s"]).reset_index()
    out.insert(1, s.AS_OF, pd.Series(as_of, index=out.index, dtype="datetime64[ns, UTC]"))
    out["lead_age_days"] = (t - static["_created_s"].to_numpy()) / SECONDS_PER_DAY
    out["company_age_years"] = as_of.year - static[s.FOUNDED_YEAR].to_numpy()
    out["revenue_per_employee"] = revenue_per_employee(
        pd.to_numeric(static[s.EMPLOYEES], errors="coerce").to_numpy(dtype=np.float64),
        pd.to_numeric(static[s.ANNUAL_REVENUE], errors="coerce").to_numpy(dtype=np.float64),
    )
    out = out.drop(columns=[s.FOUNDED_YEAR])
    dynamic = pd.DataFrame(columns, index=out.index)
    out = pd.concat([out, dynamic], axis=1)
    return out.drop(columns=[c for c in settings.exclude if c in out.columns])


def activity_columns(
    events: EventLog, lead_positions: np.ndarray, t: int, settings: FeatureSettings
) -> dict[str, np.ndarray]:
    """The activity features (counts, recency weights, velocity, days since) of the leads at
    ``lead_positions`` (int64 rows of ``events.lead_ids``) as of ``t`` seconds since the epoch,
    from the events strictly before it."""
    n = len(lead_positions)
    local = np.full(len(events.lead_ids), -1, dtype=np.int64)
    local[lead_positions] = np.arange(n)

    lo = np.searchsorted(events.time_s, t - int(settings.lookback_days * SECONDS_PER_DAY), side="left")
    hi = np.searchsorted(events.time_s, t, side="left")  # strictly before T
    who = local[events.lead_pos[lo:hi]]
    mine = who >= 0
    who = who[mine]
    age_days = (t - events.time_s[lo:hi][mine]) / SECONDS_PER_DAY
    channels = events.channel[lo:hi][mine].astype(np.int64)
    page = events.page_channel[lo:hi][mine].astype(np.int64)
    has_page = page >= 0

    n_channels = len(CHANNELS)
    columns: dict[str, np.ndarray] = {}

    def per_channel(weights: np.ndarray | None, in_window: np.ndarray) -> np.ndarray:
        codes = np.concatenate(
            [
                who[in_window] * n_channels + channels[in_window],
                who[in_window & has_page] * n_channels + page[in_window & has_page],
            ]
        )
        w = None if weights is None else np.concatenate([weights[in_window], weights[in_window & has_page]])
        return np.bincount(codes, weights=w, minlength=n * n_channels).reshape(n, n_channels)

    for window in sorted(settings.windows_days):
        in_window = age_days <= window
        counts = per_channel(None, in_window)
        for c, name in enumerate(CHANNELS):
            columns[f"n_{name}_{window}d"] = counts[:, c].astype("float64")
        columns[f"n_events_{window}d"] = np.bincount(who[in_window], minlength=n).astype("float64")

    weights = np.exp2(-age_days / settings.half_life_days)
    recency = per_channel(weights, np.ones(len(who), dtype=bool))
    for c, name in enumerate(CHANNELS):
        columns[f"rw_{name}"] = recency[:, c]

    recent = np.bincount(who[age_days <= settings.velocity_recent_days], minlength=n)
    baseline_window = (age_days > settings.velocity_recent_days) & (
        age_days <= settings.velocity_recent_days + settings.velocity_baseline_days
    )
    baseline = np.bincount(who[baseline_window], minlength=n)
    columns["engagement_velocity"] = (
        recent / settings.velocity_recent_days - baseline / settings.velocity_baseline_days
    )

    last_s, first_s = _last_and_first_before(events.lead_time_key, lead_positions, t)
    columns["days_since_last_activity"] = (t - last_s) / SECONDS_PER_DAY
    columns["days_since_first_activity"] = (t - first_s) / SECONDS_PER_DAY
    for c, name in enumerate(CHANNELS):
        last_s, _ = _last_and_first_before(events.channel_time_key, lead_positions * n_channels + c, t)
        columns[f"days_since_last_{name}"] = (t - last_s) / SECONDS_PER_DAY
    return columns


def revenue_per_employee(employees: np.ndarray, revenue: np.ndarray) -> np.ndarray:
    """Annual revenue over head count (NaN without a positive head count).

    A ratio that trees cannot build from the two columns by splitting on each: it tells a
    well-funded company from a large but thin one of the same size.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(employees > 0, revenue / employees, np.nan)


def _last_and_first_before(keys: np.ndarray, groups: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of the last and first event strictly before ``t`` per group (NaN if none).

    ``keys`` are sorted (group, time) keys from :func:`_time_key`; a group is a lead or a
    (lead, channel) pair.
    """
    start = np.searchsorted(keys, _time_key(groups, np.full(len(groups), -2_208_988_800)))
    stop = np.searchsorted(keys, _time_key(groups, np.full(len(groups), t)), side="left")
    has_any = stop > start
    offset = (1 << 33) - 1
    last = np.full(len(groups), np.nan)
    first = np.full(len(groups), np.nan)
    last[has_any] = (keys[stop[has_any] - 1] & offset) - 2_208_988_800
    first[has_any] = (keys[start[has_any]] & offset) - 2_208_988_800
    return last, first


def open_lead_positions(profile: pd.DataFrame, closed_s: np.ndarray, t: int) -> np.ndarray:
    """Rows of leads created before ``t`` and not closed at or before it."""
    return np.flatnonzero(_is_open(profile["_created_s"].to_numpy(), closed_s, t))


def _is_open(created_s: np.ndarray, closed_s: np.ndarray, t: int) -> np.ndarray:
    return (created_s < t) & ~(closed_s <= t)  # NaN closed time (still open) compares False


def lead_outcomes(leads: pd.DataFrame, outcomes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Closed time in seconds (NaN while open) and a won flag, aligned with ``leads``."""
    by_lead = outcomes.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID).reindex(leads[s.LEAD_ID].to_numpy())
    closed = pd.DatetimeIndex(by_lead[s.CLOSED_AT])
    known = np.asarray(closed.notna())
    closed_s = np.full(len(closed), np.nan)
    closed_s[known] = to_seconds(closed[known])
    won = (by_lead[s.STATUS] == s.WON).fillna(False).to_numpy(dtype=bool)
    return closed_s, won


def data_end(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp:
    """The last moment the data knows about: the latest timestamp in any table."""
    candidates = [
        tables[s.LEADS][s.CREATED_AT].max(),
        tables[s.OUTCOMES][s.CLOSED_AT].max() if len(tables[s.OUTCOMES]) else pd.NaT,
        tables[s.ACTIVITIES][s.TIMESTAMP].max() if len(tables[s.ACTIVITIES]) else pd.NaT,
    ]
    present = [to_utc(c) for c in candidates if not pd.isna(c)]
    if not present:
        raise LeadmlError("the tables hold no timestamps, so there is no end of data")
    return max(present)


def build_features(
    leads: pd.DataFrame,
    accounts: pd.DataFrame,
    activities: pd.DataFrame,
    as_of: pd.Timestamp | str,
    settings: FeatureSettings,
) -> pd.DataFrame:
    """Features of every lead in ``leads`` as of one date (what the nightly scorer uses)."""
    profile = lead_profile(leads, accounts, settings)
    events = prepare_events(activities, profile.index)
    return features_as_of(profile, events, np.arange(len(profile)), to_utc(as_of), settings)


def open_lead_features(
    tables: Mapping[str, pd.DataFrame], as_of: pd.Timestamp | str, settings: FeatureSettings
) -> pd.DataFrame:
    """Features as of ``as_of`` of every lead open then: what the nightly job scores.

    The same code as a training snapshot on that date (created before it, not closed at
    or before it, only events strictly before it), so training and scoring cannot drift apart.
    """
    leads, accounts, outcomes, activities = (
        tables[n] for n in (s.LEADS, s.ACCOUNTS, s.OUTCOMES, s.ACTIVITIES)
    )
    as_of = to_utc(as_of)
    t = int(to_seconds(pd.DatetimeIndex([as_of]))[0])
    closed_s, _ = lead_outcomes(leads, outcomes)
    # A profile and the event log are most of the work, and every figure of a lead depends on
    # that lead alone: build them for the open leads only (a fifth of a CRM's leads, typically).
    is_open = _is_open(to_seconds(leads[s.CREATED_AT]), closed_s, t)
    leads = leads.loc[is_open]
    activities = activities.loc[is_in(activities[s.LEAD_ID], pd.Index(leads[s.LEAD_ID]))]
    profile = lead_profile(leads, accounts, settings)
    events = prepare_events(activities, profile.index)
    return features_as_of(profile, events, np.arange(len(profile)), as_of, settings)


def build_training_snapshots(
    tables: Mapping[str, pd.DataFrame],
    settings: FeatureSettings,
    end: pd.Timestamp | None = None,
    progress: bool = False,
    dates: Sequence[pd.Timestamp] | None = None,
) -> pd.DataFrame:
    """(lead, as-of) training examples with features and a label.

    Snapshots sit on the calendar grid every ``cadence_days``. A lead contributes one
    while it is open (created before T, not closed at or before T). The label is 1 when
    the lead is won in (T, T + horizon]. Snapshots whose label window runs past ``end``
    (default: the latest timestamp in the data) are censored and left out. ``dates``
    replaces the grid (tests and backfills); censoring still applies.
    """
    leads, accounts, outcomes, activities = (
        tables[n] for n in (s.LEADS, s.ACCOUNTS, s.OUTCOMES, s.ACTIVITIES)
    )
    if leads.empty:  # every lead quarantined (with a max_bad_share that let it through)
        raise LeadmlError("no snapshot fits: the leads table holds no accepted lead")
    end = data_end(tables) if end is None else to_utc(end)
    horizon = pd.Timedelta(days=settings.horizon_days)
    first_created = to_utc(leads[s.CREATED_AT].min())
    if dates is None:
        dates = snapshot_dates(first_created, end - horizon, settings.cadence_days)
    else:
        dates = pd.DatetimeIndex([to_utc(d) for d in dates if to_utc(d) + horizon <= end])
    profile = lead_profile(leads, accounts, settings)
    events = prepare_events(activities, profile.index)
    closed_s, won = lead_outcomes(leads, outcomes)
    horizon_s = settings.horizon_days * SECONDS_PER_DAY
    frames: list[pd.DataFrame] = []
    for as_of in progress_iter(dates, progress, "snapshots", unit="date"):
        t = int(to_seconds(pd.DatetimeIndex([as_of]))[0])
        positions = open_lead_positions(profile, closed_s, t)
        if len(positions) == 0:
            continue
        frame = features_as_of(profile, events, positions, as_of, settings)
        frame.insert(2, LABEL, (won[positions] & (closed_s[positions] <= t + horizon_s)).astype("int8"))
        frames.append(frame)
    if not frames:
        raise LeadmlError(
            f"no snapshot fits: data from {first_created:%Y-%m-%d} to {end:%Y-%m-%d} is shorter than "
            f"one cadence plus the {settings.horizon_days}-day horizon"
        )
    snapshots = pd.concat(frames, ignore_index=True)
    logger.info("built %d snapshots on %d dates", len(snapshots), len(frames))
    return snapshots


def feature_metadata(
    columns: Iterable[str], settings: FeatureSettings, labels: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, FeatureMeta]:
    """Metadata for every feature column produced by :func:`features_as_of`.

    ``labels`` is the data config's display map (``data.labels``: column -> value -> words),
    read by the feature of that name or of that source column (``country`` also words
    ``company_country``).
    """
    meta: dict[str, FeatureMeta] = {}
    for name in columns:
        entry = _meta_for(name, settings)
        if entry is not None:
            meta[name] = with_labels(entry, labels or {})
    return meta


def with_labels(meta: FeatureMeta, labels: Mapping[str, Mapping[str, Any]]) -> FeatureMeta:
    """``meta`` with the configured display words of its values (by feature name, then group)."""
    own = labels.get(meta.name) or labels.get(meta.group)
    if not own:
        return meta
    words = {}
    for value, text in own.items():  # as written, and in the stored spelling ("Web Organic" -> web_organic)
        words[wording.plain_value(value)] = words[normalise_token(wording.plain_value(value))] = str(text)
    return replace(meta, labels={**meta.labels, **words})


def _channel_meta(name: str, settings: FeatureSettings) -> FeatureMeta | None:
    for channel in CHANNELS:
        direction = CHANNEL_DIRECTION[channel]
        noun, plural, verb = CHANNEL_WORDS[channel]
        if name.startswith(f"n_{channel}_") and name.endswith("d"):
            days = name.removeprefix(f"n_{channel}_").removesuffix("d")
            if days.isdigit():
                return FeatureMeta(
                    name, ENGAGEMENT, channel, f"{{value:.0f}} {plural} in the last {days} days", direction,
                    wording="count", noun=noun, plural=plural, window_days=float(days),
                )  # fmt: skip
        if name == f"days_since_last_{channel}":
            return FeatureMeta(
                name, ENGAGEMENT, channel, f"last of the {plural} {{value:.0f}} days ago", 0,
                wording="days_since", noun=noun, plural=plural, verb=verb, missing=f"never {verb}",
                missing_informative=True,
            )  # fmt: skip
        if name == f"rw_{channel}":
            return FeatureMeta(
                name, ENGAGEMENT, channel, f"{{value:.1f}} recent {plural}", direction,
                wording="recency", noun=noun, plural=plural, window_days=float(settings.half_life_days),
            )  # fmt: skip
    if name.startswith("n_events_"):
        days = name.removeprefix("n_events_").removesuffix("d")
        return FeatureMeta(
            name, ENGAGEMENT, "activity", f"{{value:.0f}} activities in the last {days} days", 0,
            wording="count", noun="activity", plural="activities", window_days=float(days),
        )  # fmt: skip
    return None


def _fixed_meta(settings: FeatureSettings) -> dict[str, FeatureMeta]:
    """The metadata of the features every CRM project has (lead and account columns, activity)."""
    never = "no activity yet"
    return {
        "engagement_velocity": FeatureMeta(
            "engagement_velocity", ENGAGEMENT, "activity", "activity {value:+.2f} events a day", 0,
            wording="velocity", window_days=float(settings.velocity_baseline_days),
        ),
        "days_since_last_activity": FeatureMeta(
            "days_since_last_activity", ENGAGEMENT, "activity", "last activity {value}", 0,
            wording="days_ago", missing=never, missing_informative=True,
        ),
        "days_since_first_activity": FeatureMeta(
            "days_since_first_activity", ENGAGEMENT, "activity", "first activity {value}", 0,
            wording="days_ago", missing=never, missing_informative=True,
        ),
        "lead_age_days": FeatureMeta(
            "lead_age_days", OTHER, s.CREATED_AT, "lead created {value}", 0, wording="days_ago",
            noun="creation date",
        ),
        "seniority": FeatureMeta(
            "seniority", FIT, s.JOB_TITLE, "{value}", 0, "categorical", wording="category",
            noun="job title", labels=SENIORITY_WORDS,
        ),
        "corporate_email": FeatureMeta(
            "corporate_email", FIT, s.EMAIL, "corporate e-mail domain", 0, wording="flag",
            noun="e-mail address", labels=CORPORATE_EMAIL_WORDS,
        ),
        s.INDUSTRY: FeatureMeta(
            s.INDUSTRY, FIT, s.INDUSTRY, "industry: {value}", 0, "categorical", wording="category",
            noun="industry",
        ),
        "company_country": FeatureMeta(
            "company_country", FIT, s.COUNTRY, "company based in {value}", 0, "categorical",
            wording="country", noun="company country",
        ),
        s.EMPLOYEES: FeatureMeta(
            s.EMPLOYEES, FIT, s.EMPLOYEES, "{value} employees", 0, wording="count", noun="employee",
            plural="employees", missing="no head count recorded",
        ),
        s.ANNUAL_REVENUE: FeatureMeta(
            s.ANNUAL_REVENUE, FIT, s.ANNUAL_REVENUE, "annual revenue {value}", 0, wording="money",
            noun="annual revenue",
        ),
        "revenue_per_employee": FeatureMeta(
            "revenue_per_employee", FIT, s.ANNUAL_REVENUE, "revenue per employee {value}", 0,
            wording="money", noun="revenue per employee",
        ),
        "company_age_years": FeatureMeta(
            "company_age_years", FIT, s.FOUNDED_YEAR, "company founded {value}", 0, wording="years_ago",
            noun="founding year",
        ),
        s.SOURCE: FeatureMeta(
            s.SOURCE, SOURCE_FAMILY, s.SOURCE, "lead source: {value}", 0, "categorical",
            wording="category", noun="lead source",
        ),
        s.COUNTRY: FeatureMeta(
            s.COUNTRY, FIT, s.COUNTRY, "contact based in {value}", 0, "categorical", wording="country",
            noun="country",
        ),
        s.ESTIMATED_DEAL_VALUE: FeatureMeta(
            s.ESTIMATED_DEAL_VALUE, FIT, s.ESTIMATED_DEAL_VALUE, "estimated deal value {value}", 0,
            wording="money", noun="estimated deal value",
        ),
    }  # fmt: skip


def _meta_for(name: str, settings: FeatureSettings) -> FeatureMeta | None:
    if name in (s.LEAD_ID, s.AS_OF, LABEL):
        return None
    channel = _channel_meta(name, settings)
    if channel is not None:
        return channel
    fixed = _fixed_meta(settings)
    if name in fixed:
        return fixed[name]
    return column_meta(
        name, OTHER, categorical=name in (*settings.extra_categorical, *settings.lead_categorical)
    )


def column_meta(name: str, family: str, categorical: bool, flag: bool = False) -> FeatureMeta:
    """The metadata of a column used as it is (an extra lead column, a flat table's column)."""
    words = name.replace("_", " ") if name.islower() else name  # "campaign_code"; "Lead Source" as it is
    if categorical:
        return FeatureMeta(
            name, family, name, f"{words}: {{value}}", 0, "categorical", wording="category", noun=words
        )
    return FeatureMeta(
        name, family, name, f"{words}: {{value}}", 0, wording="flag" if flag else "number", noun=words
    )


# a missing value may be a reason in a lead's favour when leads without the value converted
# differently on the training rows: |z| of the two-proportion test above this, and a gap in the
# conversion rate of at least this share of the overall rate (not a trace effect of many rows)
MISSING_Z = 3.29  # two-sided p < 0.001
MISSING_MIN_GAP = 0.25
MISSING_MIN_ROWS = 30


def with_missingness_tested(
    meta: Mapping[str, FeatureMeta], snapshots: pd.DataFrame
) -> dict[str, FeatureMeta]:
    """``meta`` with ``missing_informative`` set where missing values convert differently.

    Features whose missing value has a meaning of its own (``never ...``) are informative by
    construction and keep it; a value not recorded (no job title, "unknown") is only where the
    training rows say so.
    """
    if LABEL not in snapshots.columns or snapshots.empty:
        return dict(meta)
    label = snapshots[LABEL].to_numpy(dtype=np.float64)
    out = dict(meta)
    for name, entry in meta.items():
        if entry.missing_informative or not entry.wording or name not in snapshots.columns:
            continue
        if missing_is_informative(label, wording.missing_values(snapshots[name])):
            out[name] = replace(entry, missing_informative=True)
    return out


def missing_is_informative(label: np.ndarray, missing: np.ndarray) -> bool:
    """Two-proportion z-test of the label between missing and present rows, with a material gap."""
    n_missing, n_present = int(missing.sum()), int((~missing).sum())
    if min(n_missing, n_present) < MISSING_MIN_ROWS:
        return False
    rate_missing, rate_present = label[missing].mean(), label[~missing].mean()
    overall = label.mean()
    spread = np.sqrt(overall * (1 - overall) * (1 / n_missing + 1 / n_present))
    if spread == 0:
        return False
    gap = abs(rate_missing - rate_present)
    return bool(gap / spread > MISSING_Z and gap >= MISSING_MIN_GAP * overall)


def metadata_to_json(meta: Mapping[str, FeatureMeta]) -> list[dict[str, Any]]:
    return [asdict(m) for m in meta.values()]


# the columns of a flat table's snapshots that are not features
FLAT_KEY_COLUMNS: tuple[str, ...] = (s.LEAD_ID, s.AS_OF, s.ORDER_KEY, LABEL, s.DUP_GROUP)


def flat_snapshots(
    table: pd.DataFrame, personal: Iterable[str] = (), exclude: Iterable[str] = ()
) -> pd.DataFrame:
    """Training rows of a one-row-per-lead table: its columns are the features as they are.

    Personal-data columns are removed; text columns become categoricals and nullable
    integers or booleans become floats, which is what the models consume. The key columns
    (:data:`FLAT_KEY_COLUMNS`: lead id, as_of or order_key, label and, for a table with exact
    duplicate rows, dup_group) are kept as they are and are not features.
    """
    out = _flat_rows(table, personal, exclude)
    out[LABEL] = out[LABEL].astype("int8")
    return out


def flat_open_features(
    table: pd.DataFrame, personal: Iterable[str] = (), exclude: Iterable[str] = ()
) -> pd.DataFrame:
    """The features of a flat table's open leads (no label), built as :func:`flat_snapshots`
    builds the training rows, so training and scoring cannot drift apart."""
    return _flat_rows(table, personal, exclude)


def _flat_rows(table: pd.DataFrame, personal: Iterable[str], exclude: Iterable[str]) -> pd.DataFrame:
    keys = [c for c in FLAT_KEY_COLUMNS if c in table.columns]
    dropped = set(personal) | set(exclude) | set(keys)
    out = table[keys].copy()
    features = {}
    for column in table.columns:
        if column in dropped:
            continue
        values = table[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            features[column] = values
        elif _numeric_code(column, values):
            features[column] = pd.Series(_categorical(values.map(wording.plain_value, na_action="ignore")),
                                         index=table.index)  # fmt: skip
        elif pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
            features[column] = values.astype("float64")
        else:
            features[column] = pd.Series(_categorical(values), index=table.index)
    return pd.concat([out, pd.DataFrame(features, index=table.index)], axis=1)


def _numeric_code(column: str, values: pd.Series) -> bool:
    """A column of numbers whose name says it is a code or an id: modelled as a category (logged)."""
    if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        return False
    if not wording.is_code_name(str(column)):
        return False
    logger.warning("features: column %r holds numbers but its name says it is a code or an id: "
                   "modelled as a category", column)  # fmt: skip
    return True


def flat_feature_metadata(
    snapshots: pd.DataFrame,
    families: Mapping[str, str],
    labels: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, FeatureMeta]:
    """Metadata for a flat table's features; families come from the data config (default other).

    A numeric column holding only 0 and 1 reads as yes/no; categories through ``labels``.
    """
    meta = {}
    for column in snapshots.columns:
        if column in FLAT_KEY_COLUMNS:
            continue
        values = snapshots[column]
        categorical = isinstance(values.dtype, pd.CategoricalDtype)
        flag = not categorical and bool(values.dropna().isin((0.0, 1.0)).all()) and values.notna().any()
        entry = column_meta(column, families.get(column, OTHER), categorical, flag=flag)
        meta[column] = with_labels(entry, labels or {})
    return meta
