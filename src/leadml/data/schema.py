"""Canonical CRM schema shared by the generator, ingestion and features.

Every source (the synthetic CRM, a CSV export, a SQL table) is renamed onto these
column names by ``conf/data/*.yaml`` before its contract is checked, so the rest of
the pipeline only ever sees these names and values.
"""

from __future__ import annotations

ACCOUNTS = "accounts"
LEADS = "leads"
OUTCOMES = "outcomes"
ACTIVITIES = "activities"
CRM_TABLES: tuple[str, ...] = (ACCOUNTS, LEADS, OUTCOMES, ACTIVITIES)

# accounts (firmographics), one row per account
ACCOUNT_ID = "account_id"
COMPANY_NAME = "company_name"
INDUSTRY = "industry"
EMPLOYEES = "employees"
ANNUAL_REVENUE = "annual_revenue"  # USD per year
COUNTRY = "country"  # ISO 3166-1 alpha-2, lower case after normalisation
FOUNDED_YEAR = "founded_year"

# leads, one row per lead
LEAD_ID = "lead_id"
CREATED_AT = "created_at"
SOURCE = "source"
OWNER = "owner"
JOB_TITLE = "job_title"
FIRST_NAME = "first_name"
LAST_NAME = "last_name"
EMAIL = "email"
PHONE = "phone"
ESTIMATED_DEAL_VALUE = "estimated_deal_value"  # known when the lead is created
PERSONAL_DATA_COLUMNS: tuple[str, ...] = (FIRST_NAME, LAST_NAME, EMAIL, PHONE)

# outcomes, one row per lead
STATUS = "status"
CLOSED_AT = "closed_at"
DEAL_VALUE = "deal_value"  # filled in only when a deal is won: never a feature

# activities, one row per event
EVENT_ID = "event_id"
TIMESTAMP = "timestamp"
ACTIVITY_TYPE = "activity_type"
PAGE_CATEGORY = "page_category"

# ground truth written by the generator only; the pipeline never reads it as a feature
GROUND_TRUTH = "ground_truth"
AS_OF = "as_of"
HORIZON_DAYS = "horizon_days"
TRUE_PROBABILITY = "true_probability"

WON, LOST, OPEN = "won", "lost", "open"
STATUSES: tuple[str, ...] = (WON, LOST, OPEN)

ACTIVITY_TYPES: tuple[str, ...] = (
    "page_view",
    "email_open",
    "email_click",
    "form_submit",
    "content_download",
    "webinar",
    "demo_request",
    "call",
    "meeting",
    "unsubscribe",
    "bounce",
)
PAGE_VIEW = "page_view"
PAGE_CATEGORIES: tuple[str, ...] = ("pricing", "product", "docs", "blog", "careers")

SOURCES: tuple[str, ...] = (
    "web_organic",
    "paid_search",
    "paid_social",
    "referral",
    "partner",
    "event",
    "outbound",
    "webinar",
    "content_syndication",
)
INDUSTRIES: tuple[str, ...] = (
    "software",
    "financial_services",
    "healthcare",
    "manufacturing",
    "retail",
    "education",
    "government",
    "media",
    "professional_services",
    "logistics",
)
COUNTRIES: tuple[str, ...] = ("us", "gb", "de", "fr", "nl", "br", "in", "au", "ca", "es")

# training snapshots and flat tables
LABEL = "label"  # 1 when the lead is won within the horizon (flat tables: the positive target)
ORDER_KEY = "order_key"  # flat tables without time: the column that orders rows for out-of-time splits
# flat tables with exact duplicate rows: the lead id of the first row of each row's group of exact
# copies (every column but the row number); the split keeps a group in one window. Never a feature.
DUP_GROUP = "dup_group"

# experiments of scoring (leadml.scoring.experiment): the columns of a scored row under one, read
# by the SQL sink and the report too (layers below scoring); each arm's own figures in side columns
ARM, EXPERIMENT = "arm", "experiment"
# what a lead of an arm with show_score: false shows as its tier: its scores are blank, not missing
HIDDEN_TIER = "hidden"
# an earlier run's prediction of a lead by its own arm's model (leadml.adapters.sinks.earlier_predictions)
OWN_ARM_PROBABILITY = "own_arm_probability"


def arm_column(arm: str, what: str) -> str:
    """The column holding arm ``arm``'s own ``what`` (probability, tier) for every lead."""
    return f"arm_{arm}_{what}"
