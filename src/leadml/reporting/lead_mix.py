"""How today's leads differ from the ones the model was trained on, in words a sales manager reads.

The scoring run measures drift per feature (population stability index, PSI, against the
training window's profile that travels inside the model, :mod:`leadml.modelling.drift`) and
records one technical line per shifted feature ("days_since_last_activity: PSI 0.774 (large
shift)"). The leadership report says it once, in a few sentences: which category grew
("more webinar leads than the model was trained on") or which way a number moved ("leads are
older than in training"). The figures stay for the data team in the scoring run's record.

Everything is read from the model's reference profile and today's features of the open leads:
a category's shares against the reference's, and a number's direction from the share of
today's values below each of the reference's bin edges (the edges are training quantiles, so
no training value is needed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.modelling.drift import UNSEEN, drift_counts, drift_reference, population_stability
from leadml.modelling.scorer import PROBABILITY

MISSING_LEVEL = "__missing__"  # how a reference profile names a missing category
# a mean gap between the cumulative shares below this is no clear direction ("spread differently")
DIRECTION_MIN = 0.02
# a category is named only when its share grew by this much; else the mix as a whole is worded
# (a code with hundreds of levels shifts by many small moves: "campaign code 3755: 0% against 0%")
GROWTH_MIN = 0.02
SOURCE_FEATURES = frozenset({"source", "lead_source"})
# nouns for the numbers whose column name does not read well
NUMBER_WORDS = {
    "employees": "company sizes",
    "annual_revenue": "company revenues",
    "estimated_deal_value": "estimated deal values",
    "revenue_per_employee": "revenue per employee",
    "corporate_email": "shares of corporate e-mail addresses",
}
_COUNT = re.compile(r"^n_(?P<what>.+)_(?P<days>\d+)d$")


@dataclass(frozen=True)
class LeadMixShift:
    """What the leadership report says about drift: whether it was checked, and the sentences."""

    checked: bool  # the model holds a training profile to compare with
    sentences: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Shift:
    psi: float
    key: str  # shifts with the same key become one sentence
    subject: str  # what shifted, listed when several share a key
    sentence: str  # the sentence of this shift alone (a key's first, largest, shift words it)


def lead_mix_shift(
    reference: Mapping[str, Any],
    features: pd.DataFrame | None,
    probabilities: pd.Series,
    threshold: float,
    sentences: int = 3,
) -> LeadMixShift:
    """The largest shifts of today's open leads from the training window, at most ``sentences``.

    ``reference``: the scorer's ``reference`` (``features``: a profile per feature; ``score``:
    the training scores' profile); ``features``: today's features of the open leads (None when
    they could not be rebuilt: the score alone is compared); ``threshold``: the PSI above which
    a shift is worth a sentence (as ``score.psi_warn``). Shifts of the same kind (several
    recency features moving the same way) share one sentence listing them.
    """
    as_of = (
        features[s.AS_OF].iloc[0] if features is not None and s.AS_OF in features and len(features) else None
    )
    profiles = drift_reference(reference, as_of)  # the weekday's latest training rows, as the scoring run
    score_profile = reference.get("score")
    if not profiles and not score_profile:
        return LeadMixShift(checked=False)
    shifts: list[_Shift] = []
    if score_profile:
        shifts += _shifts({PROBABILITY: score_profile}, probabilities.to_frame(PROBABILITY), threshold)
    if profiles and features is not None:
        shifts += _shifts(profiles, features, threshold)
    return LeadMixShift(checked=True, sentences=tuple(_merged(shifts, sentences)))


def _shifts(profiles: Mapping[str, Any], frame: pd.DataFrame, threshold: float) -> list[_Shift]:
    psi = population_stability(profiles, frame)
    counts = drift_counts(profiles, frame)
    out = []
    for name, value in psi.items():
        if not value > threshold:
            continue
        profile = profiles[name]
        if profile["kind"] == "numeric":
            shift = _numeric_shift(name, value, _direction(profile, counts[name]))
        else:
            shift = _categorical_shift(name, value, profile["shares"], counts[name])
        if shift is not None:
            out.append(shift)
    return out


def _merged(shifts: Sequence[_Shift], limit: int) -> list[str]:
    """One sentence per key, the largest PSI first; a key with several shifts lists their subjects."""
    by_key: dict[str, list[_Shift]] = {}
    for shift in sorted(shifts, key=lambda item: -item.psi):
        by_key.setdefault(shift.key, []).append(shift)
    out = []
    for group in list(by_key.values())[:limit]:
        if len(group) == 1:
            out.append(group[0].sentence)
        else:
            out.append(f"{_KEY_SENTENCES[group[0].key]} ({_listed([s.subject for s in group])}).")
    return out


def _listed(subjects: Sequence[str], most: int = 3) -> str:
    shown = list(subjects[:most])
    more = len(subjects) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


# --------------------------------------------------------------------------- numbers
def _direction(profile: Mapping[str, Any], counts: np.ndarray) -> str:
    """Where today's present values lie against training's: "higher", "lower" or "different".

    At each reference bin edge (a training quantile), the share of training values at or
    below it against today's; today's values are higher when fewer of them lie below the
    edges, on average by more than ``DIRECTION_MIN``. Missing values are left out.
    """
    reference = np.asarray(profile["shares"], dtype=np.float64)[:-1]
    today = np.asarray(counts, dtype=np.float64)[:-1]
    if reference.sum() <= 0 or today.sum() <= 0 or len(reference) < 2:
        return "different"
    gap = np.cumsum(reference / reference.sum())[:-1] - np.cumsum(today / today.sum())[:-1]
    mean = float(gap.mean())
    return "higher" if mean > DIRECTION_MIN else "lower" if mean < -DIRECTION_MIN else "different"


def _numeric_shift(name: str, psi: float, direction: str) -> _Shift | None:
    if name == PROBABILITY:
        text = {
            "higher": "Scores run higher than in training: more leads look likely to convert.",
            "lower": "Scores run lower than in training: fewer leads look likely to convert.",
            "different": "Scores are spread differently than in training.",
        }[direction]
        return _Shift(psi, "score", "scores", text)
    if name == "lead_age_days" or name.startswith("days_since_first_"):
        key = f"age-{direction}"  # how long ago a lead came in or first showed up: its age
        subject = "lead age" if name == "lead_age_days" else _words(name.removeprefix("days_since_"))
        return _Shift(psi, key, subject, f"{_KEY_SENTENCES[key]}.")
    if name.startswith("days_since_"):
        subject = _words(name.removeprefix("days_since_"))
        key = f"recency-{direction}"
        return _Shift(psi, key, subject, f"{_KEY_SENTENCES[key]} ({subject}).")
    if name.endswith(("_age_days", "_age_years")):
        return _age_shift(name, psi, direction)
    count = _COUNT.match(name)
    if count or name.startswith("rw_"):
        what = _plural(_words(count["what"] if count else name.removeprefix("rw_")))
        subject = what + (f" in the last {count['days']} days" if count else " lately")
        key = f"activity-{direction}"
        return _Shift(psi, key, subject, f"{_KEY_SENTENCES[key]} ({subject}).")
    words = NUMBER_WORDS.get(name, _words(name))
    text = {
        "higher": f"Higher {words} than in training.",
        "lower": f"Lower {words} than in training.",
        "different": f"{words[:1].upper()}{words[1:]} are spread differently than in training.",
    }[direction]
    return _Shift(psi, name, words, text)


def _age_shift(name: str, psi: float, direction: str) -> _Shift:
    """An age other than the lead's (``company_age_years``): whose age it is, from its name."""
    who = "Companies" if name.startswith("company_") else _words(name.rsplit("_age_", 1)[0]).capitalize()
    text = {
        "higher": f"{who} are older than in training.",
        "lower": f"{who} are younger than in training.",
        "different": f"{who}' ages are spread differently than in training.",
    }[direction]
    return _Shift(psi, name, who.lower(), text)


_KEY_SENTENCES = {
    "score": "Scores have shifted against training",
    "age-higher": "Leads are older than in training",
    "age-lower": "Leads are newer than in training",
    "age-different": "Leads' ages are spread differently than in training",
    "recency-lower": "More leads with recent activity than in training",
    "recency-higher": "Fewer leads with recent activity than in training",
    "recency-different": "The timing of leads' activity differs from training",
    "activity-higher": "More activity than in training",
    "activity-lower": "Less activity than in training",
    "activity-different": "Activity is spread differently than in training",
}


# --------------------------------------------------------------------------- categories
def _categorical_shift(
    name: str, psi: float, reference: Mapping[str, float], counts: Mapping[str, int]
) -> _Shift | None:
    """The category whose share grew most (not an unseen level: the report counts those apart).

    When no category grew by ``GROWTH_MIN`` (many small moves), the mix as a whole is worded.
    """
    total = sum(counts.values())
    if not total:
        return None
    growth = {level: counts.get(level, 0) / total - share for level, share in reference.items()}
    growth.update({level: n / total for level, n in counts.items() if level not in reference})
    growth.pop(UNSEEN, None)
    if not growth:
        return None
    level = max(growth, key=lambda key: growth[key])
    today, before = counts.get(level, 0) / total, reference.get(level, 0.0)
    shares = f"{today:.0%} of today's leads against {before:.0%}"
    words = _words(name)
    if growth[level] < GROWTH_MIN:
        text = f"The {'lead source' if name in SOURCE_FEATURES else words} mix differs from training."
    elif level == MISSING_LEVEL:
        text = f"More leads without a {words} recorded than the model was trained on ({shares})."
    elif name in SOURCE_FEATURES:
        text = f"Lead mix has shifted: more {_words(level)} leads than the model was trained on ({shares})."
    else:
        text = f"More leads with {words} {_words(level)} than the model was trained on ({shares})."
    return _Shift(psi, name, words, text)


def _plural(words: str) -> str:
    return words if words.endswith("s") else f"{words}s"


def _words(name: str) -> str:
    """A column or category name in words: "page_pricing" -> "pricing-page visits", "e-mail open"."""
    if name.startswith("page_") and name != "page_view":
        name = f"{name.removeprefix('page_')}-page visits"
    elif name.startswith("last_page_") and name != "last_page_view":
        name = f"last {name.removeprefix('last_page_')}-page visit"
    return re.sub(r"\bemail\b", "e-mail", name.replace("_", " "))
