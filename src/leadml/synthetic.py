"""Synthetic CRM export with a known data-generating process and its exact ground truth.

Every lead follows a latent daily Markov chain (cold -> aware -> engaged -> evaluating ->
won, with lost absorbing from anywhere). Its transition probabilities come from a fit
score built from firmographics, seniority parsed from the title, e-mail domain, source
and owner, with non-linear effects and interactions; its activity events are Poisson by
latent state with a weekly rhythm. Because the chain is known, the probability that an
open lead is won within the horizon is computed exactly from its own transition
matrices, which lets the pipeline's calibration and ranking be checked against the truth.

All functions are pure: settings in, DataFrames out, no I/O and no config lookups.
Randomness comes from ``numpy.random.default_rng(settings.seed)`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadml.calendar import snapshot_dates, to_utc
from leadml.progress import progress_iter
from leadml.schema import (
    ACCOUNT_ID,
    ACCOUNTS,
    ACTIVITIES,
    ACTIVITY_TYPE,
    ACTIVITY_TYPES,
    ANNUAL_REVENUE,
    AS_OF,
    CLOSED_AT,
    COMPANY_NAME,
    COUNTRIES,
    COUNTRY,
    CREATED_AT,
    DEAL_VALUE,
    EMAIL,
    EMPLOYEES,
    ESTIMATED_DEAL_VALUE,
    EVENT_ID,
    FIRST_NAME,
    FOUNDED_YEAR,
    GROUND_TRUTH,
    HORIZON_DAYS,
    INDUSTRIES,
    INDUSTRY,
    JOB_TITLE,
    LAST_NAME,
    LEAD_ID,
    LEADS,
    LOST,
    OPEN,
    OUTCOMES,
    OWNER,
    PAGE_CATEGORIES,
    PAGE_CATEGORY,
    PAGE_VIEW,
    PHONE,
    SOURCE,
    SOURCES,
    STATUS,
    STATUSES,
    TIMESTAMP,
    TRUE_PROBABILITY,
    WON,
)

logger = logging.getLogger(__name__)

BROWSER = "browser"
CAMPAIGN_CODE = "campaign_code"
NOISE_COLUMNS: tuple[str, ...] = (BROWSER, CAMPAIGN_CODE)

SECONDS_PER_DAY = 86_400

# latent states of the daily chain; the first four are transient
COLD, AWARE, ENGAGED, EVALUATING, STATE_WON, STATE_LOST = range(6)
LATENT_STATES: tuple[str, ...] = ("cold", "aware", "engaged", "evaluating", WON, LOST)
N_STATES = len(LATENT_STATES)
N_TRANSIENT = 4

# a day with n unsubscribes or bounces multiplies the chance of staying in play by (1 - this)^n
LOSS_PER_NEGATIVE_EVENT = 0.35

WEEKDAY_ACTIVITY = np.array([1.0, 1.08, 1.08, 1.0, 0.85, 0.18, 0.12])  # Monday .. Sunday
WEEKDAY_LEAD_CREATION = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.25, 0.2])
# UTC hours: European mornings and American afternoons overlap in the middle of the day
# fmt: off
HOURLY_ACTIVITY = np.array(
    [0.15, 0.12, 0.1, 0.1, 0.12, 0.2, 0.35, 0.6, 0.9, 1.0, 1.0, 1.0,
     1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.8, 0.7, 0.5, 0.3, 0.2]
)
# fmt: on


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class SyntheticSettings:
    """Size, period, randomness and messiness of the synthetic CRM."""

    seed: int = 42
    n_leads: int = 50_000
    start: str = "2024-07-01"
    end: str = "2026-07-01"
    n_accounts: int | None = None  # None: n_leads // 4
    n_owners: int = 20
    messiness: float = 0.01  # share of rows hit by each kind of defect; 0 gives clean data
    horizon_days: int = 90
    snapshot_cadence_days: int = 14
    event_rate_scale: float = 1.0  # multiplies every activity rate; 1.0 gives about 34 events a lead
    annual_lead_growth: float = 0.25  # lead creation rate grows by this share per year

    def __post_init__(self) -> None:
        problems = _settings_problems(self)
        if problems:
            raise ValueError("invalid synthetic settings: " + "; ".join(problems))

    @property
    def account_count(self) -> int:
        return self.n_accounts if self.n_accounts is not None else max(1, self.n_leads // 4)


def _settings_problems(settings: SyntheticSettings) -> list[str]:
    problems = [
        f"{name} must be at least {minimum}, got {getattr(settings, name)}"
        for name, minimum in (
            ("n_leads", 1),
            ("n_owners", 1),
            ("horizon_days", 1),
            ("snapshot_cadence_days", 1),
        )
        if getattr(settings, name) < minimum
    ]
    if settings.n_accounts is not None and settings.n_accounts < 1:
        problems.append(f"n_accounts must be at least 1 or null, got {settings.n_accounts}")
    if not 0.0 <= settings.messiness <= 0.5:
        problems.append(f"messiness must be in [0, 0.5], got {settings.messiness}")
    if settings.event_rate_scale < 0:
        problems.append(f"event_rate_scale must not be negative, got {settings.event_rate_scale}")
    if settings.annual_lead_growth <= -1:
        problems.append(f"annual_lead_growth must be above -1, got {settings.annual_lead_growth}")
    try:
        start, end = to_utc(settings.start), to_utc(settings.end)
    except (ValueError, TypeError) as error:
        return [*problems, f"start and end must be dates: {error}"]
    if start != start.normalize() or end != end.normalize():
        problems.append(
            f"start and end must be dates at midnight, got {settings.start!r} and {settings.end!r}"
        )
    if end <= start:
        problems.append(f"end ({settings.end}) must be after start ({settings.start})")
    return problems


def settings_from_mapping(mapping: Mapping[str, Any]) -> SyntheticSettings:
    """Settings from a plain mapping (e.g. ``OmegaConf.to_container`` of ``cfg.synthetic``)."""
    known = {field.name for field in fields(SyntheticSettings)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ValueError(
            f"unknown synthetic settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    values = {key: str(value) if key in ("start", "end") else value for key, value in mapping.items()}
    return SyntheticSettings(**values)


# --------------------------------------------------------------------------- vocabularies
# fmt: off
INDUSTRY_SHARES = np.array([0.16, 0.11, 0.10, 0.12, 0.10, 0.08, 0.06, 0.07, 0.12, 0.08])
INDUSTRY_FIT = np.array([0.5, 0.3, 0.1, -0.1, -0.25, -0.5, -0.6, 0.0, 0.2, -0.1])
INDUSTRY_REVENUE_PER_EMPLOYEE = np.array([1.3, 1.6, 0.9, 1.0, 0.6, 0.4, 0.5, 0.9, 1.1, 0.8]) * 170_000.0
COUNTRY_SHARES = np.array([0.38, 0.12, 0.11, 0.07, 0.05, 0.05, 0.07, 0.05, 0.06, 0.04])
COUNTRY_FIT = np.array([0.2, 0.1, 0.1, -0.1, 0.1, -0.4, -0.5, 0.0, 0.1, -0.2])
COUNTRY_TLDS = (".com", ".co.uk", ".de", ".fr", ".nl", ".com.br", ".in", ".com.au", ".ca", ".es")
COUNTRY_CALLING_CODES = ("+1", "+44", "+49", "+33", "+31", "+55", "+91", "+61", "+1", "+34")
COUNTRY_SPELLINGS: dict[str, tuple[str, ...]] = {
    "us": ("US", "USA", "United States", "united states", "U.S."),
    "gb": ("GB", "UK", "United Kingdom", "Great Britain"),
    "de": ("DE", "Germany", "Deutschland"),
    "fr": ("FR", "France"),
    "nl": ("NL", "Netherlands", "The Netherlands", "Holland"),
    "br": ("BR", "Brazil", "Brasil"),
    "in": ("IN", "India"),
    "au": ("AU", "Australia"),
    "ca": ("CA", "Canada"),
    "es": ("ES", "Spain", "España"),
}
STATUS_SPELLINGS: dict[str, tuple[str, ...]] = {
    WON: ("Closed Won", "WON", "closed-won", "Won"),
    LOST: ("Closed Lost", "closed-lost", "LOST", "Lost"),
    OPEN: ("Open", "OPEN", " open"),
}

SOURCE_SHARES = np.array([0.20, 0.16, 0.12, 0.06, 0.06, 0.08, 0.14, 0.07, 0.11])
SOURCE_DRIVE = np.array([0.2, 0.0, -0.8, 0.9, 0.6, 0.3, -0.3, 0.2, -0.6])
# initial latent state shares (cold, aware, engaged, evaluating) per source
SOURCE_INITIAL_STATE = np.array(
    [
        [0.50, 0.35, 0.12, 0.03],  # web_organic
        [0.55, 0.30, 0.12, 0.03],  # paid_search
        [0.80, 0.17, 0.03, 0.00],  # paid_social
        [0.30, 0.35, 0.25, 0.10],  # referral
        [0.35, 0.35, 0.20, 0.10],  # partner
        [0.40, 0.40, 0.15, 0.05],  # event
        [0.80, 0.15, 0.05, 0.00],  # outbound
        [0.40, 0.45, 0.15, 0.00],  # webinar
        [0.70, 0.25, 0.05, 0.00],  # content_syndication
    ]
)
# the activity recorded when the lead is created (by source), unless it arrives evaluating
SOURCE_CREATION_EVENT: tuple[str | None, ...] = (
    "form_submit", "form_submit", "form_submit", "form_submit", None, None, None, "webinar",
    "content_download",
)
BROWSERS = ("chrome", "firefox", "safari", "edge")
BROWSER_SHARES = np.array([0.6, 0.1, 0.2, 0.1])
FREE_EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "hotmail.com", "outlook.com")

FIRST_NAMES = (
    "James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
    "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Daniel", "Karen",
    "Lukas", "Anna", "Jonas", "Lea", "Pierre", "Camille", "Sanne", "Daan", "Lucas", "Ana", "Rahul", "Priya",
    "Arjun", "Aisha", "Oliver", "Amelia", "Noah", "Olivia", "Liam", "Emma", "Mateo", "Lucia", "Chen", "Mei",
    "Kenji", "Yuki", "Omar", "Fatima", "Sven", "Ingrid",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee",
    "Muller", "Schmidt", "Schneider", "Fischer", "Dubois", "Moreau", "Jansen", "DeVries", "Silva", "Santos",
    "Sharma", "Patel", "Singh", "Kumar", "Clarke", "Walker", "Wright", "Thompson", "White", "Harris",
    "Nguyen", "Wang", "Kim", "Tanaka", "Rossi", "Ferrari", "Novak", "Larsen", "Berg", "Costa",
)
COMPANY_PREFIXES = (
    "Blue", "North", "Silver", "Bright", "Red", "Green", "Iron", "Clear", "Swift", "True", "Grand", "Nova",
    "Alpine", "Harbor", "Summit", "Cedar", "Apex", "Polar", "Golden", "Urban", "Stone", "River", "Quantum",
    "Vertex", "Atlas", "Crimson", "Pioneer", "Falcon", "Coastal", "Prime",
)
COMPANY_CORES = (
    "wave", "field", "point", "bridge", "stone", "line", "path", "forge", "peak", "light", "works", "leaf",
    "gate", "scale", "stack", "mark", "shore", "wind", "core", "spring", "grid", "view", "nest", "loop",
)
COMPANY_SUFFIXES = (
    "Systems", "Labs", "Group", "Solutions", "Technologies", "Holdings", "Partners", "Industries", "Inc",
    "GmbH", "Ltd", "Analytics", "Health", "Logistics", "Media", "Capital",
)

# seniority levels, recovered from the title by keyword rules in this order of precedence:
# student/intern/trainee, chief/ceo/cto/cfo/coo/cmo/cio/founder, vp/svp/evp/vice president,
# director, head, manager, senior/sr./staff; anything else is an individual contributor
SENIORITY_LEVELS: tuple[str, ...] = (
    "c_level", "vp", "director", "head", "manager", "senior", "individual", "junior",
)
C_LEVEL, JUNIOR = 0, 7
SENIORITY_FIT = np.array([0.0, 0.6, 0.8, 0.5, 0.25, 0.0, -0.3, -1.6])  # C-level: see _seniority_fit
# share of each level by company size class (small, mid-market, large)
SENIORITY_SHARES_BY_SIZE = np.array(
    [
        [0.18, 0.06, 0.08, 0.08, 0.15, 0.13, 0.25, 0.07],
        [0.07, 0.08, 0.12, 0.08, 0.20, 0.17, 0.23, 0.05],
        [0.03, 0.08, 0.13, 0.07, 0.22, 0.18, 0.24, 0.05],
    ]
)
DEPARTMENTS = (
    "Engineering", "IT", "IT Operations", "Data", "Marketing", "Sales", "Finance", "Procurement",
    "Operations", "Product", "Human Resources",
)
ROLES = (
    "Data Analyst", "Software Engineer", "Systems Administrator", "Accountant", "Buyer",
    "Marketing Coordinator", "Data Scientist", "Sales Representative", "Product Designer",
    "Recruiting Coordinator", "Business Analyst", "DevOps Engineer",
)
TITLE_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("Chief Executive Officer", "CEO", "Founder & CEO", "Co-Founder and CEO", "Chief Technology Officer",
     "CTO", "Chief Financial Officer", "CFO", "Chief Operating Officer", "Chief Marketing Officer",
     "Chief Information Officer", "CIO"),
    ("VP of {dept}", "Vice President, {dept}", "VP {dept}", "SVP {dept}", "Vice President of {dept}",
     "EVP, {dept}"),
    ("Director of {dept}", "Director, {dept}", "{dept} Director", "Sr. Director, {dept}",
     "Senior Director of {dept}"),
    ("Head of {dept}", "Global Head of {dept}", "Head, {dept}"),
    ("{dept} Manager", "Manager, {dept}", "Senior {dept} Manager", "{dept} Team Manager"),
    ("Senior {role}", "Sr. {role}", "Staff {role}"),
    ("{role}", "{role} II", "Associate {role}"),
    ("Student", "Marketing Intern", "Intern", "PhD Student", "Working Student", "Graduate Student",
     "{dept} Intern", "Trainee"),
)

# company size classes drive both the title mix and how telling a pricing-page visit is
SMALL_MAX_EMPLOYEES, LARGE_MIN_EMPLOYEES = 50, 1000
SMALL, MID_MARKET, LARGE = range(3)
LOW_FIT_THRESHOLD = -1.0
N_MIX_GROUPS = 6  # size class x low fit: the event-kind mix of a lead in a given state

# event kinds: every activity type but page_view, then page_view once per page category
EVENT_KINDS: tuple[tuple[str, str | None], ...] = tuple(
    (kind, None) for kind in ACTIVITY_TYPES if kind != PAGE_VIEW
) + tuple((PAGE_VIEW, category) for category in PAGE_CATEGORIES)
# relative weight of each kind in (cold, aware, engaged, evaluating); pricing views are by size below
KIND_WEIGHTS_BY_STATE: dict[str, tuple[float, float, float, float]] = {
    "email_open": (30, 28, 22, 15),
    "email_click": (3, 8, 10, 8),
    "form_submit": (1, 3, 4, 3),
    "content_download": (2, 5, 6, 3),
    "webinar": (0.5, 2, 4, 2),
    "demo_request": (0.05, 0.3, 2, 8),
    "call": (1, 2, 5, 10),
    "meeting": (0.1, 0.3, 2, 10),
    "unsubscribe": (2, 1, 0.4, 0.15),
    "bounce": (2, 0.8, 0.3, 0.1),
    "product": (5, 12, 18, 15),
    "docs": (2, 5, 12, 15),
    "blog": (12, 12, 6, 3),
    "careers": (4, 2, 1, 0.5),
}
# small companies look at prices whatever their intent; at large ones it is a buying signal
PRICING_WEIGHTS_BY_SIZE = np.array([[12, 10, 9, 8], [2, 4, 8, 14], [0.3, 0.8, 5, 18]], dtype=float)
LOW_FIT_KIND_MULTIPLIER: dict[str, float] = {"unsubscribe": 3.0, "bounce": 3.0, "careers": 2.0}
NEGATIVE_KINDS: tuple[str, ...] = ("unsubscribe", "bounce")
# expected events on a Monday by latent state, before the lead's own engagement (WEEKDAY_ACTIVITY
# scales the other days)
EVENT_RATE_BY_STATE = np.array([0.03, 0.25, 1.0, 3.0])
# spread of what no model can see: a lead's own activity level (log scale, mean 1) and the part
# of its drive that no recorded attribute explains; the oracle knows both
ENGAGEMENT_SD = 0.2
HIDDEN_DRIVE_SD = 0.15

# daily transition rates: the first factor is the ceiling, the fit sets how much of it is reached
PROGRESS_CEILING = np.array([0.018, 0.028, 0.03, 0.025])  # cold->aware, aware->engaged, ...->won
PROGRESS_OFFSET = np.array([-1.0, -0.6, -0.3, 0.0])
REGRESS_RATE = np.array([0.0, 0.006, 0.008, 0.008])
BASE_LOSS = np.array([0.004, 0.003, 0.004, 0.006])
LOW_FIT_LOSS = np.array([0.006, 0.004, 0.004, 0.008])

GARBAGE_TIMESTAMPS = ("not a date", "2025-13-45 25:00", "0000-00-00 00:00:00", "31/02/2025 10:00")
ISO_OFFSETS = ("Z", "+00:00", "+01:00", "-05:00", "")
ISO_OFFSET_SECONDS = np.array([0, 0, 3600, -5 * 3600, 0])
ISO_OFFSET_SHARES = np.array([0.4, 0.15, 0.15, 0.15, 0.15])
# fmt: on


# --------------------------------------------------------------------------- containers
@dataclass(frozen=True)
class _Period:
    start: pd.Timestamp
    n_days: int
    start_weekday: int
    grid_days: np.ndarray  # day index (from start) of every snapshot date

    @property
    def first_day(self) -> np.datetime64:
        return np.datetime64(self.start.tz_convert(None).date(), "D")

    def weekday(self, day: int) -> int:
        return (self.start_weekday + day) % 7


@dataclass(frozen=True)
class _Accounts:
    industry: np.ndarray
    employees: np.ndarray
    revenue: np.ndarray
    country: np.ndarray
    founded_year: np.ndarray
    name_parts: np.ndarray  # (n, 3) indices into prefixes, cores, suffixes


@dataclass(frozen=True)
class _Leads:
    account: np.ndarray
    created_day: np.ndarray  # sorted: lead ids follow creation time
    created_second: np.ndarray  # second of the day
    source: np.ndarray
    owner: np.ndarray
    seniority: np.ndarray
    title: np.ndarray  # index into _title_table()
    country: np.ndarray
    first_name: np.ndarray
    last_name: np.ndarray
    free_email: np.ndarray  # index into FREE_EMAIL_DOMAINS, -1 for the company domain
    estimated_deal_value: np.ndarray
    browser: np.ndarray
    campaign_code: np.ndarray
    engagement: np.ndarray  # unobserved multiplier of the lead's activity rate
    hidden_drive: np.ndarray  # unobserved part of the fit
    owner_drive: np.ndarray  # the owning rep's small effect
    initial_draw: np.ndarray  # uniform draw that picks the initial latent state


@dataclass(frozen=True)
class _LeadProcess:
    """Per-lead parameters of the latent chain; arrays are (n_leads,) or (n_leads, 4 transient states)."""

    initial_state: np.ndarray
    progress: np.ndarray  # daily chance to move one state up (evaluating -> won), given not lost
    regress: np.ndarray  # daily chance to move one state down, given not lost
    base_loss: np.ndarray  # daily chance of loss on a day without unsubscribes or bounces
    event_rate: np.ndarray  # expected events on a Monday
    mix_group: np.ndarray  # (n_leads,) row block of the event kind table: size class * 2 + low fit


@dataclass(frozen=True)
class _History:
    state: np.ndarray  # final latent state per lead
    closed_day: np.ndarray  # -1 while open
    closed_second: np.ndarray
    event_lead: np.ndarray
    event_second: np.ndarray  # seconds since the start of the period, sorted
    event_kind: np.ndarray
    snapshot_day: np.ndarray  # one row per (open lead, grid date)
    snapshot_lead: np.ndarray
    snapshot_state: np.ndarray


# --------------------------------------------------------------------------- public API
def generate_crm(settings: SyntheticSettings, progress: bool = False) -> dict[str, pd.DataFrame]:
    """The raw CRM export (accounts, leads, outcomes, activities) and its exact ground truth.

    ``progress`` shows a bar over the simulated days (about 20 s for a million leads).
    """
    world_rng, process_rng, mess_rng = np.random.default_rng(settings.seed).spawn(3)
    period = _period(settings)
    accounts = _draw_accounts(world_rng, settings.account_count, period.start.year)
    leads = _draw_leads(world_rng, settings, accounts, period)
    process = _lead_process(leads, accounts)
    logger.info("simulating %d leads over %d days", settings.n_leads, period.n_days)
    history = _simulate(process_rng, process, leads, period, settings.event_rate_scale, progress)
    logger.info("simulated %d events; computing the ground truth", history.event_lead.size)
    truth = _ground_truth(process, history, period, settings)
    tables = _export_tables(mess_rng, accounts, leads, history, period, settings.messiness)
    tables[GROUND_TRUTH] = truth
    logger.info("generated %s", ", ".join(f"{len(frame):,} {name}" for name, frame in tables.items()))
    return tables


def absorption_probability(daily_matrices: np.ndarray, horizon_days: int, target_state: int) -> np.ndarray:
    """Chance of sitting in ``target_state`` after ``horizon_days`` steps, from every state.

    ``daily_matrices`` is (n, period, k, k): day ``t`` of the horizon uses matrix ``t % period``
    (a weekly rhythm makes the chain periodic rather than homogeneous). Returns (n, k).
    """
    n, period, k, _ = daily_matrices.shape
    by_day = np.ascontiguousarray(np.moveaxis(daily_matrices, 1, 0))
    full_periods, remainder = divmod(horizon_days, period)
    # P = W^q M_0 ... M_(r-1) with W one full period; only P's target column is needed,
    # so the tail and the powers of W are applied to that column instead of multiplied out
    reach = np.zeros((n, k, 1))
    reach[:, target_state] = 1.0
    for day in reversed(range(remainder)):
        reach = by_day[day] @ reach
    power = by_day[0]
    for day in range(1, period):
        power = power @ by_day[day]
    while full_periods:
        if full_periods & 1:
            reach = power @ reach
        full_periods >>= 1
        if full_periods:
            power = power @ power
    return reach[:, :, 0]


# --------------------------------------------------------------------------- the world
def _period(settings: SyntheticSettings) -> _Period:
    start, end = to_utc(settings.start), to_utc(settings.end)
    grid = snapshot_dates(start, end, settings.snapshot_cadence_days)
    grid_days = np.asarray((grid - start).days, dtype=np.int64)
    return _Period(start=start, n_days=(end - start).days, start_weekday=start.dayofweek, grid_days=grid_days)


def _draw_accounts(rng: np.random.Generator, n_accounts: int, start_year: int) -> _Accounts:
    industry = rng.choice(len(INDUSTRIES), size=n_accounts, p=INDUSTRY_SHARES)
    employees = np.clip(np.round(np.exp(rng.normal(np.log(80.0), 1.7, n_accounts))), 1, 250_000).astype(
        np.int64
    )
    revenue_per_employee = INDUSTRY_REVENUE_PER_EMPLOYEE[industry] * np.exp(rng.normal(0.0, 0.45, n_accounts))
    revenue = np.maximum(np.round(employees * revenue_per_employee, -3), 10_000.0)
    log_age = 1.8 + 0.25 * np.log(employees) + rng.normal(0.0, 0.6, n_accounts)
    founded_year = start_year - np.clip(np.round(np.exp(log_age)), 0, 150).astype(np.int64)
    name_parts = np.column_stack(
        [
            rng.integers(0, len(vocabulary), n_accounts)
            for vocabulary in (COMPANY_PREFIXES, COMPANY_CORES, COMPANY_SUFFIXES)
        ]
    )
    return _Accounts(
        industry=industry,
        employees=employees,
        revenue=revenue,
        country=rng.choice(len(COUNTRIES), size=n_accounts, p=COUNTRY_SHARES),
        founded_year=founded_year,
        name_parts=name_parts,
    )


def _size_class(employees: np.ndarray) -> np.ndarray:
    """SMALL, MID_MARKET or LARGE per company."""
    return (employees >= SMALL_MAX_EMPLOYEES).astype(np.int64) + (employees >= LARGE_MIN_EMPLOYEES)


def _creation_days(rng: np.random.Generator, n_leads: int, period: _Period, growth: float) -> np.ndarray:
    days = np.arange(period.n_days)
    weights = WEEKDAY_LEAD_CREATION[(period.start_weekday + days) % 7] * (1.0 + growth) ** (days / 365.0)
    return np.sort(rng.choice(period.n_days, size=n_leads, p=weights / weights.sum()))


def _seconds_of_day(rng: np.random.Generator, size: int) -> np.ndarray:
    hours = rng.choice(24, size=size, p=HOURLY_ACTIVITY / HOURLY_ACTIVITY.sum())
    return hours * 3600 + rng.integers(0, 3600, size)


def _draw_seniority(rng: np.random.Generator, size_class: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(SENIORITY_SHARES_BY_SIZE, axis=1)
    cumulative[:, -1] = 1.0
    return _draw_rows(rng, cumulative, size_class)


def _draw_rows(rng: np.random.Generator, cumulative: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One category per element, from the cumulative distribution in row ``rows[i]``."""
    return _rows_from_draws(rng.random(rows.size), cumulative, rows)


def _rows_from_draws(draws: np.ndarray, cumulative: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return (draws[:, None] >= cumulative[rows]).sum(axis=1)


def _draw_leads(
    rng: np.random.Generator, settings: SyntheticSettings, accounts: _Accounts, period: _Period
) -> _Leads:
    n = settings.n_leads
    # larger companies are the source of more leads
    account_weights = accounts.employees.astype(float) ** 0.35
    account = rng.choice(accounts.employees.size, size=n, p=account_weights / account_weights.sum())
    created_day = _creation_days(rng, n, period, settings.annual_lead_growth)
    created_second = _seconds_of_day(rng, n)
    order = np.lexsort((created_second, created_day))
    created_day, created_second = created_day[order], created_second[order]
    employees = accounts.employees[account]
    seniority = _draw_seniority(rng, _size_class(employees))
    title_level, _ = _title_table()
    level_start = np.searchsorted(title_level, np.arange(len(SENIORITY_LEVELS)))
    level_count = np.bincount(title_level, minlength=len(SENIORITY_LEVELS))
    title = level_start[seniority] + (rng.random(n) * level_count[seniority]).astype(np.int64)
    moved = rng.random(n) < 0.05
    country = np.where(moved, rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARES), accounts.country[account])
    fit_before_email = _firmographic_fit(accounts, account, seniority, country)
    free_email_chance = np.where(seniority == JUNIOR, 0.6, _sigmoid(-2.0 - 0.9 * fit_before_email))
    free_email = np.where(rng.random(n) < free_email_chance, rng.integers(0, len(FREE_EMAIL_DOMAINS), n), -1)
    owner = rng.integers(0, settings.n_owners, n)
    deal_value = np.round(3_000.0 * employees**0.5 * np.exp(rng.normal(0.0, 0.4, n)), -2)
    return _Leads(
        account=account,
        created_day=created_day,
        created_second=created_second,
        source=rng.choice(len(SOURCES), size=n, p=SOURCE_SHARES),
        owner=owner,
        seniority=seniority,
        title=title,
        country=country,
        first_name=rng.integers(0, len(FIRST_NAMES), n),
        last_name=rng.integers(0, len(LAST_NAMES), n),
        free_email=free_email,
        estimated_deal_value=np.maximum(deal_value, 500.0),
        browser=rng.choice(len(BROWSERS), size=n, p=BROWSER_SHARES),
        campaign_code=rng.integers(1000, 10_000, n),
        engagement=np.exp(rng.normal(-(ENGAGEMENT_SD**2) / 2, ENGAGEMENT_SD, n)),
        hidden_drive=rng.normal(0.0, HIDDEN_DRIVE_SD, n),
        owner_drive=rng.normal(0.0, 0.15, settings.n_owners)[owner],
        initial_draw=rng.random(n),
    )


@cache
def _title_table() -> tuple[np.ndarray, tuple[str, ...]]:
    """Every job title the generator writes, sorted by seniority level: (level per title, titles)."""
    levels, titles = [], []
    for level, templates in enumerate(TITLE_TEMPLATES):
        expanded = dict.fromkeys(
            template.format(dept=dept, role=role)
            for template in templates
            for dept in (DEPARTMENTS if "{dept}" in template else ("",))
            for role in (ROLES if "{role}" in template else ("",))
        )
        levels += [level] * len(expanded)
        titles += list(expanded)
    return np.array(levels), tuple(titles)


# --------------------------------------------------------------------------- the process
def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-values))


def _seniority_fit(seniority: np.ndarray, employees: np.ndarray) -> np.ndarray:
    # C-level buyers sign at small companies but rarely engage with vendors at large ones
    c_level = np.clip(0.9 - 0.8 * (np.log10(employees) - 1.5), -1.2, 0.9)
    return np.where(seniority == C_LEVEL, c_level, SENIORITY_FIT[seniority])


def _firmographic_fit(
    accounts: _Accounts, account: np.ndarray, seniority: np.ndarray, country: np.ndarray
) -> np.ndarray:
    employees = accounts.employees[account]
    log_employees = np.log10(employees)
    industry = accounts.industry[account]
    revenue_per_employee = accounts.revenue[account] / employees
    size = 0.3 - 0.45 * (log_employees - 2.4) ** 2  # mid-market (a few hundred people) fits best
    wealth = 0.35 * np.log(revenue_per_employee / INDUSTRY_REVENUE_PER_EMPLOYEE[industry])
    return (
        size + wealth + INDUSTRY_FIT[industry] + COUNTRY_FIT[country] + _seniority_fit(seniority, employees)
    )


def _lead_process(leads: _Leads, accounts: _Accounts) -> _LeadProcess:
    """Per-lead chain parameters from what is known about the lead and what is hidden."""
    observed_fit = _firmographic_fit(accounts, leads.account, leads.seniority, leads.country) - 0.7 * (
        leads.free_email >= 0
    )
    drive = (observed_fit + SOURCE_DRIVE[leads.source] + leads.owner_drive + leads.hidden_drive)[:, None]
    n = leads.account.size
    initial_cumulative = np.cumsum(SOURCE_INITIAL_STATE, axis=1)
    initial_cumulative[:, -1] = 1.0
    low_fit = observed_fit < LOW_FIT_THRESHOLD
    return _LeadProcess(
        initial_state=_rows_from_draws(leads.initial_draw, initial_cumulative, leads.source).astype(np.int8),
        progress=PROGRESS_CEILING * _sigmoid(drive + PROGRESS_OFFSET),
        regress=np.broadcast_to(REGRESS_RATE, (n, N_TRANSIENT)),
        base_loss=BASE_LOSS + LOW_FIT_LOSS * _sigmoid(-drive - 0.5),
        event_rate=EVENT_RATE_BY_STATE * leads.engagement[:, None],
        mix_group=_size_class(accounts.employees[leads.account]) * 2 + low_fit,
    )


@cache
def _kind_cumulative() -> np.ndarray:
    """Cumulative event-kind distribution, one row per (state, size class, low fit): (24, kinds)."""
    names = [category if kind == PAGE_VIEW else kind for kind, category in EVENT_KINDS]
    rows = []
    for state in range(N_TRANSIENT):
        for size_class in range(3):
            for low_fit in (False, True):
                weights = np.array(
                    [
                        PRICING_WEIGHTS_BY_SIZE[size_class, state]
                        if name == "pricing"
                        else KIND_WEIGHTS_BY_STATE[name][state]
                        * (LOW_FIT_KIND_MULTIPLIER.get(name, 1.0) if low_fit else 1.0)
                        for name in names
                    ]
                )
                rows.append(np.cumsum(weights) / weights.sum())
    cumulative = np.array(rows)
    cumulative[:, -1] = 1.0
    return cumulative


@cache
def _negative_share() -> np.ndarray:
    """Share of unsubscribes and bounces among events, by (mix group, state): (6, 4)."""
    probabilities = np.diff(_kind_cumulative(), axis=1, prepend=0.0)
    negative = np.isin(np.array([kind for kind, _ in EVENT_KINDS]), NEGATIVE_KINDS)
    return probabilities[:, negative].sum(axis=1).reshape(N_TRANSIENT, N_MIX_GROUPS).T


def _kind_index(name: str) -> int:
    return [kind for kind, _ in EVENT_KINDS].index(name)


# --------------------------------------------------------------------------- simulation
def _simulate(
    rng: np.random.Generator,
    process: _LeadProcess,
    leads: _Leads,
    period: _Period,
    rate_scale: float,
    progress: bool = False,
) -> _History:
    n = leads.account.size
    state = np.full(n, -1, dtype=np.int8)
    closed_day = np.full(n, -1, dtype=np.int32)
    closed_second = np.zeros(n, dtype=np.int32)
    day_bounds = np.searchsorted(leads.created_day, np.arange(period.n_days + 1))
    grid = set(period.grid_days.tolist())
    active = np.empty(0, dtype=np.int64)
    event_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    snapshot_parts: list[tuple[int, np.ndarray, np.ndarray]] = []
    cumulative = _kind_cumulative()
    negative_kinds = np.array([_kind_index(kind) for kind in NEGATIVE_KINDS])
    creation_kind = _creation_kinds(process, leads)
    for day in progress_iter(range(period.n_days), progress, "simulating", unit="day"):
        if day in grid:
            snapshot_parts.append((day, active.copy(), state[active]))
        new = np.arange(day_bounds[day], day_bounds[day + 1])
        state[new] = process.initial_state[new]
        active = np.concatenate([active, new])
        current = state[active].astype(np.int64)
        # leads created today are active only for the rest of the day
        earliest = np.zeros(active.size, dtype=np.int64)
        earliest[active.size - new.size :] = leads.created_second[new]
        exposure = (SECONDS_PER_DAY - earliest) / SECONDS_PER_DAY
        mean_events = (
            process.event_rate[active, current]
            * (rate_scale * WEEKDAY_ACTIVITY[period.weekday(day)])
            * exposure
        )
        counts = rng.poisson(mean_events)
        owner_row = np.repeat(np.arange(active.size), counts)
        kinds = _draw_rows(
            rng, cumulative, current[owner_row] * N_MIX_GROUPS + process.mix_group[active[owner_row]]
        )
        seconds = np.where(
            earliest[owner_row] > 0,
            earliest[owner_row]
            + (rng.random(owner_row.size) * (SECONDS_PER_DAY - earliest[owner_row])).astype(np.int64),
            _seconds_of_day(rng, owner_row.size),
        )
        negatives = np.bincount(owner_row[np.isin(kinds, negative_kinds)], minlength=active.size)
        next_state = _next_states(rng, process, active, current, negatives)
        closing = next_state >= STATE_WON
        last_second = earliest.copy()
        np.maximum.at(last_second, owner_row, seconds)
        closing_last = last_second[closing]
        closed_day[active[closing]] = day
        closed_second[active[closing]] = np.maximum(
            closing_last
            + (rng.random(closing_last.size) * (SECONDS_PER_DAY - closing_last)).astype(np.int64),
            1,
        )
        state[active] = next_state
        event_parts.append(_day_events(day, active, owner_row, seconds, kinds, new, leads, creation_kind))
        active = active[~closing]
        if day % 100 == 0:
            logger.debug("day %d: %d open leads, %d events", day, active.size, counts.sum())
    if period.n_days in grid:
        snapshot_parts.append((period.n_days, active.copy(), state[active]))
    event_lead, event_second, event_kind = (np.concatenate(part) for part in zip(*event_parts, strict=True))
    return _History(
        state=state,
        closed_day=closed_day,
        closed_second=closed_second,
        event_lead=event_lead,
        event_second=event_second,
        event_kind=event_kind,
        snapshot_day=np.concatenate(
            [np.full(leads_.size, day) for day, leads_, _ in snapshot_parts] or [np.empty(0, np.int64)]
        ),
        snapshot_lead=np.concatenate([leads_ for _, leads_, _ in snapshot_parts] or [np.empty(0, np.int64)]),
        snapshot_state=np.concatenate([states for _, _, states in snapshot_parts] or [np.empty(0, np.int8)]),
    )


def _creation_kinds(process: _LeadProcess, leads: _Leads) -> np.ndarray:
    """Kind of the event logged at creation (-1: none): a demo request if arriving evaluating."""
    by_source = np.array([_kind_index(kind) if kind else -1 for kind in SOURCE_CREATION_EVENT])
    return np.where(process.initial_state == EVALUATING, _kind_index("demo_request"), by_source[leads.source])


def _next_states(
    rng: np.random.Generator,
    process: _LeadProcess,
    active: np.ndarray,
    current: np.ndarray,
    negatives: np.ndarray,
) -> np.ndarray:
    loss = 1.0 - (1.0 - process.base_loss[active, current]) * (1.0 - LOSS_PER_NEGATIVE_EVENT) ** negatives
    up = (1.0 - loss) * process.progress[active, current]
    down = (1.0 - loss) * process.regress[active, current]
    draw = rng.random(active.size)
    return np.select(
        [draw < loss, draw < loss + up, draw < loss + up + down],
        [STATE_LOST, current + 1, current - 1],
        current,
    ).astype(np.int8)


def _day_events(
    day: int,
    active: np.ndarray,
    owner_row: np.ndarray,
    seconds: np.ndarray,
    kinds: np.ndarray,
    new: np.ndarray,
    leads: _Leads,
    creation_kind: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    logged = new[creation_kind[new] >= 0]
    lead = np.concatenate([active[owner_row], logged]).astype(np.int32)
    second = np.concatenate([seconds, leads.created_second[logged]]) + day * SECONDS_PER_DAY
    kind = np.concatenate([kinds, creation_kind[logged]]).astype(np.int8)
    order = np.argsort(second, kind="stable")
    return lead[order], second[order], kind[order]


# --------------------------------------------------------------------------- ground truth
def _ground_truth(
    process: _LeadProcess, history: _History, period: _Period, settings: SyntheticSettings
) -> pd.DataFrame:
    """P(won within the horizon) for every lead open at every grid date T, from its state at T.

    A lead is open at T when created before T and not closed by then; its state at T is the one
    reached by the transition at the end of day T-1. The transitions at the ends of days
    T .. T+H-1 close a lead within (T, T+H], the window of the pipeline's label.
    """
    probability = np.empty(history.snapshot_lead.size)
    weekday_of_row = (period.start_weekday + history.snapshot_day) % 7
    for weekday in np.unique(weekday_of_row):
        rows = np.flatnonzero(weekday_of_row == weekday)
        by_state = _won_probability_by_state(process, int(weekday), settings)
        probability[rows] = by_state[history.snapshot_lead[rows], history.snapshot_state[rows]]
    n_leads = history.state.size
    # nanoseconds, like the as-of column of the features it is compared with
    as_of = (period.start + pd.to_timedelta(history.snapshot_day, unit="D")).as_unit("ns")
    return pd.DataFrame(
        {
            LEAD_ID: _prefixed_ids("L", history.snapshot_lead + 1, _lead_id_width(n_leads)),
            AS_OF: as_of,
            HORIZON_DAYS: np.full(probability.size, settings.horizon_days, dtype=np.int64),
            TRUE_PROBABILITY: probability,
        }
    )


def _won_probability_by_state(
    process: _LeadProcess, weekday: int, settings: SyntheticSettings, chunk: int = 50_000
) -> np.ndarray:
    """(n_leads, 4): chance of a win within the horizon from each transient state, on a given weekday."""
    weekdays = (weekday + np.arange(7)) % 7
    leads = np.arange(process.initial_state.size)
    # lost is absorbing and last, so dropping its row and column leaves the chance of a win unchanged
    kept = N_STATES - 1
    parts = [
        absorption_probability(
            _transition_matrices(process, leads[begin : begin + chunk], weekdays, settings.event_rate_scale)[
                :, :, :kept, :kept
            ],
            settings.horizon_days,
            STATE_WON,
        )[:, :N_TRANSIENT]
        for begin in range(0, leads.size, chunk)
    ]
    return np.concatenate(parts)


def _transition_matrices(
    process: _LeadProcess, leads: np.ndarray, weekdays: np.ndarray, rate_scale: float
) -> np.ndarray:
    """Each lead's daily transition matrix for each weekday given: (len(leads), len(weekdays), 6, 6)."""
    rate = process.event_rate[leads][:, None, :] * rate_scale * WEEKDAY_ACTIVITY[weekdays][None, :, None]
    negative_share = _negative_share()[process.mix_group[leads]]  # (n, 4)
    expected_negative = rate * negative_share[:, None, :]
    # E[(1 - c)^N] for N ~ Poisson(mu) is exp(-c mu): the loss chance with the day's events integrated out
    loss = 1.0 - (1.0 - process.base_loss[leads][:, None, :]) * np.exp(
        -LOSS_PER_NEGATIVE_EVENT * expected_negative
    )
    stay_in_play = 1.0 - loss
    up = stay_in_play * process.progress[leads][:, None, :]
    down = stay_in_play * process.regress[leads][:, None, :]
    matrices = np.zeros((leads.size, weekdays.size, N_STATES, N_STATES))
    transient = np.arange(N_TRANSIENT)
    matrices[:, :, transient, STATE_LOST] = loss
    matrices[:, :, transient, transient + 1] = up
    matrices[:, :, transient[1:], transient[:-1]] = down[:, :, 1:]
    matrices[:, :, transient, transient] = 1.0 - loss - up - down
    matrices[:, :, STATE_WON, STATE_WON] = 1.0
    matrices[:, :, STATE_LOST, STATE_LOST] = 1.0
    return matrices


# --------------------------------------------------------------------------- export
# long columns are built in chunks to bound the memory of intermediate arrays
CHUNK_ROWS = 5_000_000
KEEP, MISSING = -1, -2  # replacement codes for timestamp columns; k >= 0 writes GARBAGE_TIMESTAMPS[k]


def _chunks(size: int) -> list[slice]:
    return [slice(begin, begin + CHUNK_ROWS) for begin in range(0, max(size, 1), CHUNK_ROWS)]


def _to_series(chunks: list[pa.Array]) -> pd.Series:
    # one large_string array: pandas converts anything else (other types, several chunks) slowly
    large = [chunk.cast(pa.large_string()) for chunk in chunks]
    return (large[0] if len(large) == 1 else pa.concat_arrays(large)).to_pandas()


def _ascii_rows(strings: np.ndarray) -> np.ndarray:
    """(n, width) byte matrix of equally long ASCII strings."""
    width = int(np.char.str_len(strings).max()) if strings.size else 0
    return np.asarray(strings).astype(f"S{width}").view(np.uint8).reshape(-1, width)


def _joined_rows(pieces: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Row i joins ``table[index[i]]`` of every (table, index) piece, tables being byte matrices."""
    layout = np.dtype([(f"piece{k}", f"V{table.shape[1]}") for k, (table, _) in enumerate(pieces)])
    size = max(np.size(index) for _, index in pieces)
    joined = np.empty(size, dtype=layout)
    for k, (table, index) in enumerate(pieces):
        # each table row as one opaque item, so a gather moves whole rows rather than single bytes
        joined[f"piece{k}"] = np.take(np.ascontiguousarray(table).view(f"V{table.shape[1]}").ravel(), index)
    return joined.view(np.uint8).reshape(size, layout.itemsize)


def _strings_from_rows(rows: np.ndarray) -> pa.Array:
    """Arrow strings from an (n, width) byte matrix, without touching each row in Python."""
    n, width = rows.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows))
    )


@cache
def _clock_rows() -> np.ndarray:
    """'THH:MM:SS' for every second of the day: (86400, 9) bytes."""
    clock = np.datetime64("2000-01-01T00:00:00") + np.arange(SECONDS_PER_DAY)
    return _ascii_rows(np.datetime_as_string(clock))[:, 10:].copy()


def _iso_rows(seconds: np.ndarray, first_day: np.datetime64, suffix: str) -> np.ndarray:
    """'YYYY-MM-DDTHH:MM:SS' + suffix for seconds since ``first_day``, from per-day and per-second tables."""
    days, second_of_day = np.divmod(seconds, SECONDS_PER_DAY)
    lowest = int(days.min()) if days.size else 0
    highest = int(days.max()) if days.size else 0
    day_rows = _ascii_rows(np.datetime_as_string(first_day + np.arange(lowest, highest + 1)))
    pieces = [(day_rows, days - lowest), (_clock_rows(), second_of_day)]
    if suffix:
        pieces.append((_ascii_rows(np.array([suffix])), np.zeros(seconds.size, dtype=np.int8)))
    return _joined_rows(pieces)


def _timestamp_column(
    seconds: np.ndarray, first_day: np.datetime64, replacement: np.ndarray, offsets: np.ndarray | None = None
) -> pd.Series:
    """UTC timestamps ending in "Z", or local ones with ISO_OFFSETS[offsets] when given.

    ``replacement`` is KEEP, MISSING or an index into GARBAGE_TIMESTAMPS per row.
    """
    garbage_labels = pa.array(GARBAGE_TIMESTAMPS, pa.large_string())
    offset_labels = pa.array(ISO_OFFSETS, pa.large_string())
    chunks = []
    for part in _chunks(seconds.size):
        codes = replacement[part]
        substitutes = garbage_labels.take(pa.array(np.maximum(codes, 0), mask=codes < 0))
        if offsets is None:
            strings = _strings_from_rows(_iso_rows(seconds[part], first_day, "Z"))
        else:
            strings = pc.binary_join_element_wise(
                _strings_from_rows(_iso_rows(seconds[part], first_day, "")),
                offset_labels.take(offsets[part]),
                pa.scalar("", pa.large_string()),
            )
        chunks.append(pc.if_else(pa.array(codes == KEEP), strings, substitutes))
    return _to_series(chunks)


def _labels(codes: np.ndarray, labels: tuple[str, ...] | list[str]) -> pd.Series:
    """Strings from integer codes into ``labels``; negative codes are missing."""
    table = pa.array(list(labels), pa.large_string())
    return _to_series(
        [
            table.take(pa.array(np.maximum(codes[part], 0), mask=codes[part] < 0))
            for part in _chunks(codes.size)
        ]
    )


@cache
def _last_digit_rows() -> np.ndarray:
    """'0000' .. '9999': (10000, 4) bytes."""
    return _ascii_rows(np.char.zfill(np.arange(10_000).astype(str), 4))


def _prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """prefix + number zero-padded to ``width`` digits, assembled from digit tables."""
    chunks = []
    for part in _chunks(numbers.size):
        leading, last_four = np.divmod(numbers[part], 10_000)
        lowest = int(leading.min()) if leading.size else 0
        highest = int(leading.max()) if leading.size else 0
        heads = _ascii_rows(
            np.char.add(prefix, np.char.zfill(np.arange(lowest, highest + 1).astype(str), width - 4))
        )
        chunks.append(
            _strings_from_rows(_joined_rows([(heads, leading - lowest), (_last_digit_rows(), last_four)]))
        )
    return _to_series(chunks)


def _lead_id_width(n_leads: int) -> int:
    # room for the unknown ids the messy export adds above n_leads
    return max(7, len(str(2 * n_leads)))


def _export_tables(
    rng: np.random.Generator,
    accounts: _Accounts,
    leads: _Leads,
    history: _History,
    period: _Period,
    messiness: float,
) -> dict[str, pd.DataFrame]:
    return {
        ACCOUNTS: _accounts_table(rng, accounts, messiness),
        LEADS: _leads_table(rng, accounts, leads, period, messiness),
        OUTCOMES: _outcomes_table(rng, leads, history, period, messiness),
        ACTIVITIES: _activities_table(rng, history, period, messiness),
    }


# ----- messiness helpers
def _hit_rows(rng: np.random.Generator, size: int, rate: float) -> np.ndarray:
    """Sorted positions of about a share ``rate`` of ``size`` rows."""
    if rate <= 0 or size == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.choice(size, size=rng.binomial(size, rate), replace=False))


def _spelling_table(
    canonical: tuple[str, ...], spellings: Mapping[str, tuple[str, ...]] | None = None
) -> tuple[list[str], np.ndarray]:
    """Labels (canonical first, then other spellings) and a (canonical, variant) table of their codes."""
    variants = [
        [
            v
            for v in dict.fromkeys(spellings[label] if spellings else _snake_case_variants(label))
            if v != label
        ]
        for label in canonical
    ]
    labels = list(canonical)
    width = max(len(options) for options in variants)
    table = np.zeros((len(canonical), width), dtype=np.int16)
    for row, options in enumerate(variants):
        table[row] = np.resize(np.arange(len(labels), len(labels) + len(options)), width)
        labels += options
    return labels, table


def _snake_case_variants(label: str) -> tuple[str, ...]:
    words = label.replace("_", " ")
    return (
        words.title(),
        label.replace("_", "-"),
        f" {label.upper()} ",
        label.replace("_", ""),
        words.upper(),
    )


def _misspell(rng: np.random.Generator, codes: np.ndarray, table: np.ndarray, rate: float) -> np.ndarray:
    """Codes with a share ``rate`` moved to another spelling of the same value."""
    result = codes.astype(np.int16)
    rows = _hit_rows(rng, codes.size, rate)
    rows = rows[result[rows] >= 0]
    result[rows] = table[result[rows], rng.integers(0, table.shape[1], rows.size)]
    return result


def _blank(rng: np.random.Generator, codes: np.ndarray, rate: float) -> np.ndarray:
    result = codes.copy()
    result[_hit_rows(rng, codes.size, rate)] = -1
    return result


def _spoil_seconds(
    rng: np.random.Generator,
    seconds: np.ndarray,
    first_day: np.datetime64,
    rate: float,
    eligible: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Move a share ``rate`` of instants to 2030 or later and pick another share for garbage strings.

    Rows not ``eligible`` (None: all are) stay missing. Returns the seconds and the replacement
    codes (KEEP, MISSING or an index into GARBAGE_TIMESTAMPS) for :func:`_timestamp_column`.
    """
    replacement = np.full(seconds.size, KEEP, dtype=np.int8)
    if eligible is not None:
        replacement[~eligible] = MISSING
    garbage = _hit_rows(rng, seconds.size, rate)
    future = np.setdiff1d(_hit_rows(rng, seconds.size, rate), garbage, assume_unique=True)
    if eligible is not None:
        garbage, future = garbage[eligible[garbage]], future[eligible[future]]
    to_2030 = int((np.datetime64("2030-01-01") - first_day) / np.timedelta64(1, "s"))
    spoiled = seconds.copy()
    spoiled[future] = to_2030 + rng.integers(0, 5 * 365 * SECONDS_PER_DAY, future.size)
    replacement[garbage] = rng.integers(0, len(GARBAGE_TIMESTAMPS), garbage.size)
    return spoiled, replacement


# ----- tables
def _accounts_table(rng: np.random.Generator, accounts: _Accounts, messiness: float) -> pd.DataFrame:
    n = accounts.industry.size
    industry_labels, industry_variants = _spelling_table(INDUSTRIES)
    country_labels, country_variants = _spelling_table(COUNTRIES, COUNTRY_SPELLINGS)
    industry = _blank(rng, _misspell(rng, accounts.industry, industry_variants, messiness), messiness)
    country = _blank(rng, _misspell(rng, accounts.country, country_variants, messiness), messiness)
    employees = pd.array(accounts.employees, dtype="Int64")
    employees[_hit_rows(rng, n, messiness)] = pd.NA
    name_parts = [
        pa.array(vocabulary).take(pa.array(accounts.name_parts[:, i]))
        for i, vocabulary in enumerate((COMPANY_PREFIXES, COMPANY_CORES, COMPANY_SUFFIXES))
    ]
    return pd.DataFrame(
        {
            ACCOUNT_ID: _prefixed_ids("A", np.arange(1, n + 1), _account_id_width(n)),
            COMPANY_NAME: _to_series(
                [pc.binary_join_element_wise(name_parts[0], name_parts[1], " ", name_parts[2], "")]
            ),
            INDUSTRY: _labels(industry, industry_labels),
            EMPLOYEES: employees,
            ANNUAL_REVENUE: accounts.revenue,
            COUNTRY: _labels(country, country_labels),
            FOUNDED_YEAR: accounts.founded_year,
        }
    )


def _account_id_width(n_accounts: int) -> int:
    return max(6, len(str(n_accounts)))


def _company_domains(accounts: _Accounts) -> pa.Array:
    prefix = pa.array([word.lower() for word in COMPANY_PREFIXES]).take(pa.array(accounts.name_parts[:, 0]))
    core = pa.array(COMPANY_CORES).take(pa.array(accounts.name_parts[:, 1]))
    return pc.binary_join_element_wise(
        prefix, core, pa.array(COUNTRY_TLDS).take(pa.array(accounts.country)), ""
    )


def _emails(rng: np.random.Generator, accounts: _Accounts, leads: _Leads) -> pa.Array:
    first = pa.array([name.lower() for name in FIRST_NAMES]).take(pa.array(leads.first_name))
    last = pa.array([name.lower() for name in LAST_NAMES]).take(pa.array(leads.last_name))
    free = leads.free_email >= 0
    # at a free mail provider first.last is usually taken, so half add digits
    with_digits = free & (rng.random(free.size) < 0.5)
    digits = pc.cast(pa.array(rng.integers(1, 100, free.size)), pa.string())
    domain = pc.if_else(
        pa.array(free),
        pa.array(FREE_EMAIL_DOMAINS).take(pa.array(np.maximum(leads.free_email, 0))),
        _company_domains(accounts).take(pa.array(leads.account)),
    )
    local = pc.binary_join_element_wise(first, ".", last, pc.if_else(pa.array(with_digits), digits, ""), "")
    return pc.binary_join_element_wise(local, "@", domain, "")


def _phones(rng: np.random.Generator, leads: _Leads) -> pa.Array:
    number = pc.cast(pa.array(rng.integers(200_000_000, 999_999_999, leads.country.size)), pa.string())
    return pc.binary_join_element_wise(
        pa.array(COUNTRY_CALLING_CODES).take(pa.array(leads.country)), number, " "
    )


def _job_titles(rng: np.random.Generator, leads: _Leads, messiness: float) -> pd.Series:
    _, titles = _title_table()
    # as people type them: mostly as printed on the card, some all lower or upper case
    labels = [variant for title in titles for variant in (title, title.lower(), title.upper())]
    case = rng.choice(3, size=leads.title.size, p=[0.88, 0.09, 0.03])
    return _labels(_blank(rng, leads.title * 3 + case, messiness), labels)


def _leads_table(
    rng: np.random.Generator, accounts: _Accounts, leads: _Leads, period: _Period, messiness: float
) -> pd.DataFrame:
    n = leads.account.size
    source_labels, source_variants = _spelling_table(SOURCES)
    country_labels, country_variants = _spelling_table(COUNTRIES, COUNTRY_SPELLINGS)
    offset = rng.choice(len(ISO_OFFSETS), size=n, p=ISO_OFFSET_SHARES)
    seconds = leads.created_day.astype(np.int64) * SECONDS_PER_DAY + leads.created_second
    seconds, replacement = _spoil_seconds(rng, seconds, period.first_day, messiness, None)
    owner_names = [f"rep_{number:02d}" for number in range(1, leads.owner.max() + 2)]
    frame = pd.DataFrame(
        {
            LEAD_ID: _prefixed_ids("L", np.arange(1, n + 1), _lead_id_width(n)),
            # an offset shows the local wall clock of the same instant
            CREATED_AT: _timestamp_column(
                seconds + ISO_OFFSET_SECONDS[offset], period.first_day, replacement, offsets=offset
            ),
            ACCOUNT_ID: _prefixed_ids("A", leads.account + 1, _account_id_width(accounts.industry.size)),
            SOURCE: _labels(_misspell(rng, leads.source, source_variants, messiness), source_labels),
            OWNER: _labels(leads.owner, owner_names),
            JOB_TITLE: _job_titles(rng, leads, messiness),
            COUNTRY: _labels(
                _blank(rng, _misspell(rng, leads.country, country_variants, messiness), messiness),
                country_labels,
            ),
            FIRST_NAME: _labels(leads.first_name, FIRST_NAMES),
            LAST_NAME: _labels(leads.last_name, LAST_NAMES),
            EMAIL: _to_series([_emails(rng, accounts, leads)]),
            PHONE: _to_series([_phones(rng, leads)]),
            ESTIMATED_DEAL_VALUE: leads.estimated_deal_value,
            BROWSER: _labels(leads.browser, BROWSERS),
            CAMPAIGN_CODE: leads.campaign_code,
        }
    )
    return _with_duplicates(rng, frame, messiness)


def _with_duplicates(rng: np.random.Generator, frame: pd.DataFrame, rate: float) -> pd.DataFrame:
    """Repeat a share ``rate`` of rows next to the original, the copy missing its phone and title."""
    copied = _hit_rows(rng, len(frame), rate)
    if copied.size == 0:
        return frame
    n = len(frame)
    copy_first = rng.random(copied.size) < 0.5
    original_second = np.zeros(n, dtype=np.int64)
    original_second[copied] = copy_first
    order = np.argsort(np.concatenate([2 * np.arange(n) + original_second, 2 * copied + ~copy_first]))
    rows = np.concatenate([np.arange(n), copied])[order]
    is_copy = np.concatenate([np.zeros(n, dtype=bool), np.ones(copied.size, dtype=bool)])[order]
    result = frame.take(rows).reset_index(drop=True)
    result.loc[is_copy, [PHONE, JOB_TITLE]] = np.nan
    return result


def _outcomes_table(
    rng: np.random.Generator, leads: _Leads, history: _History, period: _Period, messiness: float
) -> pd.DataFrame:
    n = history.state.size
    status = np.select([history.state == STATE_WON, history.state == STATE_LOST], [0, 1], 2)
    status_labels, status_variants = _spelling_table(STATUSES, STATUS_SPELLINGS)
    closed = history.closed_day >= 0
    seconds = history.closed_day.astype(np.int64) * SECONDS_PER_DAY + history.closed_second
    seconds, replacement = _spoil_seconds(rng, seconds, period.first_day, messiness, closed)
    won = history.state == STATE_WON
    # known only once the deal is signed; close to the estimate but not equal to it
    deal_value = np.where(
        won, np.round(leads.estimated_deal_value * np.exp(rng.normal(0.0, 0.3, n)), -2), np.nan
    )
    return pd.DataFrame(
        {
            LEAD_ID: _prefixed_ids("L", np.arange(1, n + 1), _lead_id_width(n)),
            STATUS: _labels(_misspell(rng, status, status_variants, messiness), status_labels),
            CLOSED_AT: _timestamp_column(seconds, period.first_day, replacement),
            DEAL_VALUE: deal_value,
        }
    )


def _activities_table(
    rng: np.random.Generator, history: _History, period: _Period, messiness: float
) -> pd.DataFrame:
    n_leads = history.state.size
    lead, seconds, kind = history.event_lead, history.event_second, history.event_kind
    n_unknown = rng.binomial(lead.size, messiness)
    if n_unknown:
        # events of leads the export does not contain (deleted, merged away, another system's ids)
        extra_seconds = np.sort(rng.integers(0, period.n_days * SECONDS_PER_DAY, n_unknown))
        at = np.searchsorted(seconds, extra_seconds, side="right")
        lead = np.insert(lead, at, n_leads + rng.integers(1, n_leads + 1, n_unknown))
        kind = np.insert(kind, at, rng.integers(0, len(EVENT_KINDS), n_unknown))
        seconds = np.insert(seconds, at, extra_seconds)
    size = lead.size
    seconds, replacement = _spoil_seconds(rng, seconds, period.first_day, messiness, None)
    type_labels, type_variants = _spelling_table(ACTIVITY_TYPES)
    type_of_kind = np.array([ACTIVITY_TYPES.index(activity) for activity, _ in EVENT_KINDS], dtype=np.int8)
    category_of_kind = np.array(
        [PAGE_CATEGORIES.index(category) if category else -1 for _, category in EVENT_KINDS], dtype=np.int8
    )
    return pd.DataFrame(
        {
            EVENT_ID: _prefixed_ids("E", np.arange(1, size + 1), max(9, len(str(size)))),
            LEAD_ID: _prefixed_ids("L", lead + 1, _lead_id_width(n_leads)),
            TIMESTAMP: _timestamp_column(seconds, period.first_day, replacement),
            ACTIVITY_TYPE: _labels(_misspell(rng, type_of_kind[kind], type_variants, messiness), type_labels),
            PAGE_CATEGORY: _labels(category_of_kind[kind], PAGE_CATEGORIES),
        }
    )
