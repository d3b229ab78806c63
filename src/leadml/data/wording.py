"""The style guide of every reason a person reads: one function per kind of feature.

A reason names what the model saw about a lead in words a sales manager reads without
help, the same in the scored partition, the ranked CSV, the report, the endpoint and the
model card (they all go through :meth:`leadml.data.features.FeatureMeta.describe`):

- counts are whole and pluralised ("1 e-mail click", "3 e-mail clicks", "no e-mail clicks
  in the last 30 days"); other numbers keep at most two decimals;
- times are calendar words before the run's date: "yesterday", "3 days ago", "about
  4 months ago" ("today" for the run's own day);
- something that never happened says so ("never requested a demo"); a recency-weighted
  count says what its weight means ("no e-mail clicks in the last 2 weeks", "about
  3 e-mail clicks lately"), never the weight;
- category values go through a display map: the data config's ``labels:``, then ISO
  country codes as country names, then the normalised value in title case ("web_organic"
  -> "Web Organic"); a code is a category, so "1152" never "1152.0";
- a missing value is "no job title recorded" (or the feature's own phrase), never
  "unknown"; whether it may be a positive reason is the feature's ``missing_informative``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pycountry  # its ISO tables load on first lookup, not on import


class FeatureMeta(Protocol):
    """What a style reads of :class:`leadml.data.features.FeatureMeta` (which imports this module)."""

    name: str
    group: str
    template: str
    wording: str
    noun: str
    plural: str
    verb: str
    window_days: float
    labels: Mapping[str, str]
    missing: str


# category values that mean "not recorded" once ingestion has normalised the spelling
MISSING_CATEGORIES = frozenset({"", "unknown", "nan", "none", "null", "n/a"})
# a column whose name says it holds a code or an identifier: a category even when its values are
# numbers (a campaign code of 1152 is not "more" than one of 1000)
CODE_NAME = re.compile(r"(?:^|[\s_\-])(?:code|codes|id|ids|zip|zipcode|postcode|postal|sku|number)$", re.I)
DAYS_PER_MONTH = 30.4375


def is_code_name(column: str) -> bool:
    """Whether a column's name says it holds a code or an id (``campaign_code``, ``Zip``)."""
    return bool(CODE_NAME.search(column.strip()))


def is_missing(value: Any) -> bool:
    """None, NaN or a category value that means "not recorded"."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in MISSING_CATEGORIES


def missing_values(column: pd.Series) -> np.ndarray:
    """Missing (NaN, None) or a category value that means "not recorded" ("unknown"), row by row."""
    missing = column.isna().to_numpy().copy()
    if isinstance(column.dtype, pd.CategoricalDtype):
        levels = np.array([is_missing(str(level)) for level in column.cat.categories], dtype=bool)
        if levels.any():
            codes = column.cat.codes.to_numpy()
            missing |= (codes >= 0) & levels[np.maximum(codes, 0)]
    return missing


def number(value: float) -> str:
    """A number as a person writes it: whole with thousands separators, else at most 2 decimals."""
    value = float(value)
    if not math.isfinite(value):
        return "not a number"
    if value.is_integer() or abs(value) >= 100:
        return f"{round(value):,}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.2g}"


def counted(n: float, singular: str, plural: str) -> str:
    """A whole count with its noun: "1 e-mail click", "3 e-mail clicks", "1,200 employees"."""
    whole = round(float(n))
    return f"{whole:,} {singular if abs(whole) == 1 else plural}"


def window(days: float) -> str:
    """ "the last 7 days", "the last 2 weeks", "the last 90 days"."""
    days = round(float(days))
    if days == 1:
        return "the last day"
    if days >= 14 and days % 7 == 0 and days <= 70:
        return f"the last {days // 7} weeks"
    return f"the last {days} days"


def days_ago(days: float) -> str:
    """How long before the run's date, in calendar words.

    The run's date T is midnight and every event is strictly before it, so an event 0.3 days
    before T happened "yesterday": the calendar day counts up (ceiling), not the hours.
    """
    whole = math.ceil(float(days) - 1e-9)
    if whole <= 0:
        return "today"
    if whole == 1:
        return "yesterday"
    if whole <= 45:
        return f"{whole} days ago"
    if whole < 548:
        return f"about {round(whole / DAYS_PER_MONTH)} months ago"
    return f"about {round(whole / 365.25)} years ago"


def years_ago(years: float) -> str:
    whole = round(float(years))
    if whole <= 0:
        return "this year"
    return f"{counted(whole, 'year', 'years')} ago"


def money(value: float) -> str:
    """ "$1,200", "$3.4 million", "$1.2 billion"; a negative amount "-$5"."""
    value = float(value)
    if not math.isfinite(value):
        return "an amount out of range"
    sign, size = ("-" if value < 0 else ""), abs(value)
    if size >= 1e9:
        return f"{sign}${size / 1e9:,.1f} billion".replace(".0 ", " ")
    if size >= 1e6:
        return f"{sign}${size / 1e6:,.1f} million".replace(".0 ", " ")
    return f"{sign}${size:,.0f}"


def title_case(value: str) -> str:
    """A normalised value as a label: "web_organic" -> "Web Organic" (words keep their other letters)."""
    words = re.sub(r"[_\s]+", " ", value).strip().split(" ")
    return " ".join(word[:1].upper() + word[1:] for word in words if word)


def plain_value(value: Any) -> str:
    """A category value as text: a whole float (a code read as a number) loses its ".0"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text[:-2] if re.fullmatch(r"-?\d+\.0", text) else text


@lru_cache(maxsize=4096)
def country_name(value: str) -> str | None:
    """The English short name of an ISO 3166 alpha-2 or alpha-3 code ("us" -> "United States")."""
    if not re.fullmatch(r"[A-Za-z]{2,3}", value):
        return None
    found = pycountry.countries.get(**{"alpha_2" if len(value) == 2 else "alpha_3": value.upper()})
    if found is None:
        return None
    return getattr(found, "common_name", None) or found.name


def label(value: Any, labels: Mapping[str, str], countries: bool = False) -> str:
    """A category value through the display map, then (``countries``) ISO codes, then title case."""
    text = plain_value(value)
    if text in labels:
        return labels[text]
    if countries:
        name = country_name(text)
        if name is not None:
            return name
    if re.fullmatch(r"[-+\d.,]+", text):  # a code: as it is
        return text
    return title_case(text)


# --------------------------------------------------------------------------- one style per kind
def missing_sentence(meta: FeatureMeta) -> str:
    """What a missing value of the feature reads as: its own phrase, else "no ... recorded"."""
    return meta.missing or f"no {meta.noun or meta.group.replace('_', ' ')} recorded"


def _count(meta: FeatureMeta, value: float) -> str:
    if meta.window_days and round(value) == 0:
        return f"no {meta.plural} in {window(meta.window_days)}"
    words = counted(value, meta.noun, meta.plural)
    return f"{words} in {window(meta.window_days)}" if meta.window_days else words


def _recency(meta: FeatureMeta, value: float) -> str:
    # each event weighs 2**(-age / half-life): a total under 0.5 means none within one half-life
    if value < 0.5:
        return f"no {meta.plural} in {window(meta.window_days)}"
    return f"about {counted(max(1, round(value)), meta.noun, meta.plural)} lately"


def _days_since(meta: FeatureMeta, value: float) -> str:
    return f"last {meta.verb} {days_ago(value)}"


def _velocity(meta: FeatureMeta, value: float) -> str:
    per_week = 7.0 * value  # the feature is events a day: recent window minus the window before
    before = (
        "the month before" if round(meta.window_days) == 30 else f"the {number(meta.window_days)} days before"
    )
    if abs(per_week) < 0.5:
        return f"activity steady against {before}"
    more = "more" if per_week > 0 else "fewer"
    amount = counted(abs(per_week), f"{more} activity", f"{more} activities")
    return f"about {amount} a week than {before}"


def _flag(meta: FeatureMeta, value: float) -> str:
    key = "1" if float(value) >= 0.5 else "0"
    if key in meta.labels:
        return meta.labels[key]
    return f"{meta.noun}: {'yes' if key == '1' else 'no'}"


def _category(meta: FeatureMeta, value: Any) -> str:
    return meta.template.format(value=label(value, meta.labels))


def _country(meta: FeatureMeta, value: Any) -> str:
    return meta.template.format(value=label(value, meta.labels, countries=True))


def _money(meta: FeatureMeta, value: float) -> str:
    return meta.template.format(value=money(value))


def _number(meta: FeatureMeta, value: float) -> str:
    return meta.template.format(value=number(value))


def _days_ago_style(meta: FeatureMeta, value: float) -> str:
    return meta.template.format(value=days_ago(value))


def _years_ago(meta: FeatureMeta, value: float) -> str:
    return meta.template.format(value=years_ago(value))


STYLES: dict[str, Callable[[Any, Any], str]] = {
    "count": _count,
    "recency": _recency,
    "days_since": _days_since,
    "velocity": _velocity,
    "flag": _flag,
    "category": _category,
    "country": _country,
    "money": _money,
    "number": _number,
    "days_ago": _days_ago_style,
    "years_ago": _years_ago,
}
NUMERIC_STYLES = frozenset(STYLES) - {"category", "country"}


def sentence(meta: FeatureMeta, value: Any) -> str:
    """The reason for one value of a feature, in the feature's style."""
    if is_missing(value):
        return missing_sentence(meta)
    style = STYLES[meta.wording]
    if meta.wording in NUMERIC_STYLES:
        try:
            value = float(value)
        except (TypeError, ValueError):  # a category where a number was expected: say it as it is
            return f"{meta.noun or meta.name}: {plain_value(value)}"
        if not math.isfinite(value):
            return f"{meta.noun or meta.name}: out of range"
    return style(meta, value)
