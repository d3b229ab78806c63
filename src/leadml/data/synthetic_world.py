"""The synthetic CRM world: its vocabularies and rates, and the containers the simulation fills."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from leadml.data.schema import (
    ACTIVITY_TYPES,
    LOST,
    OPEN,
    PAGE_CATEGORIES,
    PAGE_VIEW,
    WON,
)

logger = logging.getLogger(__name__)


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

HIDDEN_DRIVE_SD = 0.1

# a step up the funnel usually shows in the CRM the day it happens (the first click on a nurture
# e-mail, the download that marks interest, the demo request that opens an evaluation), and so
# does the state a lead arrives in; steps back down are silent, so the state stays partly hidden
STEP_EVENT_BY_STATE: dict[int, str] = {1: "email_click", 2: "content_download", 3: "demo_request"}

STEP_EVENT_CHANCE = 1.0

# daily transition rates: the first factor is the ceiling, the fit sets how much of it is reached
PROGRESS_CEILING = np.array([0.018, 0.028, 0.03, 0.025])  # cold->aware, aware->engaged, ...->won

PROGRESS_OFFSET = np.array([-1.0, -0.6, -0.3, 0.0])

REGRESS_RATE = np.array([0.0, 0.002, 0.003, 0.003])

BASE_LOSS = np.array([0.004, 0.003, 0.004, 0.006])

LOW_FIT_LOSS = np.array([0.006, 0.004, 0.004, 0.008])

GARBAGE_TIMESTAMPS = ("not a date", "2025-13-45 25:00", "0000-00-00 00:00:00", "31/02/2025 10:00")

ISO_OFFSETS = ("Z", "+00:00", "+01:00", "-05:00", "")

ISO_OFFSET_SECONDS = np.array([0, 0, 3600, -5 * 3600, 0])

ISO_OFFSET_SHARES = np.array([0.4, 0.15, 0.15, 0.15, 0.15])

@dataclass(frozen=True)
class SimulationPeriod:
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
class Accounts:
    industry: np.ndarray
    employees: np.ndarray
    revenue: np.ndarray
    country: np.ndarray
    founded_year: np.ndarray
    name_parts: np.ndarray  # (n, 3) indices into prefixes, cores, suffixes

@dataclass(frozen=True)
class LeadRows:
    account: np.ndarray
    created_day: np.ndarray  # sorted: lead ids follow creation time
    created_second: np.ndarray  # second of the day
    source: np.ndarray
    owner: np.ndarray
    seniority: np.ndarray
    title: np.ndarray  # index into title_table()
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
class LeadProcess:
    """Per-lead parameters of the latent chain; arrays are (n_leads,) or (n_leads, 4 transient states)."""

    initial_state: np.ndarray
    progress: np.ndarray  # daily chance to move one state up (evaluating -> won), given not lost
    regress: np.ndarray  # daily chance to move one state down, given not lost
    base_loss: np.ndarray  # daily chance of loss on a day without unsubscribes or bounces
    event_rate: np.ndarray  # expected events on a Monday
    mix_group: np.ndarray  # (n_leads,) row block of the event kind table: size class * 2 + low fit

@dataclass(frozen=True)
class History:
    state: np.ndarray  # final latent state per lead
    closed_day: np.ndarray  # -1 while open
    closed_second: np.ndarray
    event_lead: np.ndarray
    event_second: np.ndarray  # seconds since the start of the period, sorted
    event_kind: np.ndarray
    snapshot_day: np.ndarray  # one row per (open lead, grid date)
    snapshot_lead: np.ndarray
    snapshot_state: np.ndarray


BROWSER = "browser"

CAMPAIGN_CODE = "campaign_code"

NOISE_COLUMNS: tuple[str, ...] = (BROWSER, CAMPAIGN_CODE)

SECONDS_PER_DAY = 86_400

# latent states of the daily chain; the first four are transient
COLD = 0

AWARE = 1

ENGAGED = 2

EVALUATING = 3

STATE_WON = 4

STATE_LOST = 5

@cache
def title_table() -> tuple[np.ndarray, tuple[str, ...]]:
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
