"""Account scores: the leads of one account rolled up into one row, with their dependence corrected.

A B2B team works accounts, not single leads. The account question is the lead question asked of
a set: *given everything known at T about the open leads of this account, what is the chance that
at least one of them is won within the horizon?* (leads created after T are not in the set).

If the leads of an account were independent given their calibrated probabilities, the answer
would be ``1 - prod(1 - p_i)`` (:data:`INDEPENDENT`). They are not: they share a company, a budget
and a buying committee. Two kinds of dependence pull in opposite directions, and history decides
which one wins on a given data set:

- *redundancy*: the leads of one account win or lose together (one deal, several contacts), so
  the independence roll-up over-counts and the truth lies nearer the largest probability
  (:data:`MAX`, the value under perfect dependence);
- *synergy*: several engaged people at one company is a buying signal that no single lead's
  features show, so the account converts more often than even independence says.

:func:`fit_dependence` measures this on history (out-of-sample lead probabilities of labelled
snapshots, grouped into accounts) with a small, monotone, regularised logistic regression on three
account summaries; :func:`apply_dependence` applies it. Everything here is pure: frames and arrays
in, frames and arrays out; the fitted correction is plain numbers (:meth:`DependenceCorrection.to_dict`)
so it can sit in the model's JSON state next to the calibrator.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling.evaluate import binary_metrics
from leadml.modelling.reasons import GROUP_PREFIX

logger = logging.getLogger(__name__)

# columns of an account row
N_LEADS = "n_leads"  # open leads of the account at as_of
N_ENGAGED = "n_engaged"  # of them, those with a probability at or above AccountSettings.engaged_probability
INDEPENDENT = "p_independent"  # 1 - prod(1 - p): the roll-up if the leads were independent
MAX = "p_max"  # the largest lead probability: the roll-up under perfect dependence (a lower bound)
SUM = "p_sum"  # expected number of the account's leads won within the horizon
ACCOUNT_PROBABILITY = "account_probability"  # the dependence-corrected probability (apply_dependence)
EXPECTED_REVENUE = "expected_revenue"  # sum over the account's leads of probability x deal value
CHANGE = "change"  # account_probability since the previous run (account_trend)
OUTCOME = "account_won"  # history only: at least one of the account's leads was won within the horizon
REASON, AGAINST = "reason", "against"  # reason_1.. / against_1..: group names, largest first

PROBABILITY = "probability"  # the scored rows' calibrated lead probability (leadml.modelling.scorer)
EXPECTED_VALUE = "expected_value"  # the scored rows' probability x estimated deal value

_CLIP = 1e-6  # probabilities are kept in [_CLIP, 1 - _CLIP] before any logit


@dataclass(frozen=True)
class AccountSettings:
    """How leads become account rows.

    ``engaged_probability``: a lead counts as *engaged* when its calibrated probability is at or
    above this. A probability rather than activity counts because it is the one scale every data
    set shares (flat tables have no activities); the stage should pass the minimum of the tier the
    sales team acts on (the scorer's tier C threshold, ``scorer.tiers["thresholds"]["C"]``), so
    "engaged" means "would be worked as a lead". The default is a probability about twice the
    typical base rate of B2B lead data.
    """

    key: str = s.ACCOUNT_ID
    engaged_probability: float = 0.10
    top_reasons: int = 3  # groups named for and against each account
    keep_groups: bool = True  # keep each group's summed contribution (``group:*``), for the trend's reasons

    def __post_init__(self) -> None:
        if not 0.0 < self.engaged_probability < 1.0:
            raise LeadmlError(
                f"accounts.engaged_probability must be in (0, 1), got {self.engaged_probability}"
            )
        if self.top_reasons < 0:
            raise LeadmlError(f"accounts.top_reasons must not be negative, got {self.top_reasons}")


def _logit(probability: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(probability, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    return np.log(clipped) - np.log1p(-clipped)


@dataclass(frozen=True)
class _Groups:
    """Rows by account (and as_of): ``order`` sorts the kept rows, ``starts`` opens each account."""

    order: np.ndarray
    starts: np.ndarray
    first: np.ndarray  # position in the caller's rows of each account's first (sorted) row
    kept: np.ndarray  # positions of the rows with a key
    of: np.ndarray  # each kept row's account number

    @property
    def count(self) -> int:
        return len(self.starts)


def _groups(frame: pd.DataFrame, keys: Sequence[str]) -> _Groups:
    """One group per distinct value of ``keys`` (rows with a missing key are in no group).

    Factorised codes, one stable sort and ``bincount``/``reduceat`` over the rows: a pandas
    groupby with a lambda per account is a hundred times slower at a million leads.
    """
    codes = np.zeros(len(frame), dtype=np.int64)
    valid = np.ones(len(frame), dtype=bool)
    for key in keys:
        key_codes, uniques = pd.factorize(frame[key], use_na_sentinel=True)
        valid &= key_codes >= 0
        codes = codes * max(len(uniques), 1) + np.maximum(key_codes, 0)
    kept = np.flatnonzero(valid)
    order = kept[np.argsort(codes[kept], kind="stable")]
    sorted_codes = codes[order]
    new_group = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]] if len(order) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_group)
    of = np.empty(len(frame), dtype=np.int64)
    of[order] = np.cumsum(new_group) - 1
    return _Groups(order, starts, order[starts], kept, of[kept])


def _summed(values: np.ndarray, groups: _Groups) -> np.ndarray:
    """Each account's sum of ``values`` (one per row): ``bincount`` reads the rows where they are,
    without the sorted copy ``reduceat`` needs (a million rows x 30 groups is 240 MB a copy)."""
    return np.bincount(groups.of, weights=values[groups.kept], minlength=groups.count)


def _largest(values: np.ndarray, groups: _Groups) -> np.ndarray:
    if not groups.count:
        return np.zeros(0, dtype=values.dtype)
    return np.maximum.reduceat(values[groups.order], groups.starts)


def account_rows(
    frame: pd.DataFrame,
    settings: AccountSettings = AccountSettings(),
    probability: str = PROBABILITY,
    value: str | None = None,
    label: str | None = None,
) -> pd.DataFrame:
    """One row per account (and per ``as_of``, when the rows have one) of scored lead rows.

    ``frame`` holds one row per open lead: the account key (``settings.key``; rows without one
    are left out: they are leads without an account, scored as leads only), the calibrated
    ``probability``, optionally ``as_of``, ``expected_value`` or a deal ``value`` column, and the
    groups' contributions (``group:<name>``, log-odds) of a scored partition. Returns the key,
    ``as_of``, :data:`N_LEADS`, :data:`N_ENGAGED`, :data:`INDEPENDENT`, :data:`MAX`, :data:`SUM`,
    :data:`EXPECTED_REVENUE` (when values are known), the top ``settings.top_reasons`` groups for
    (``reason_1``.., with ``reason_1_logodds``..) and against (``against_1``..) the account, and
    with ``label`` (history) :data:`OUTCOME`, whether any of its leads was won within the horizon.

    An account's reasons sum each group's contributions over its leads: a group that lifts four
    leads a little can outweigh one that lifts one lead a lot, as it does for the account. Sums
    are in log-odds, the additive scale of the contributions; they rank the groups, they do not
    add up to the account probability (no exact decomposition of ``1 - prod(1 - p)`` exists).
    """
    keys = [settings.key, *([s.AS_OF] if s.AS_OF in frame.columns else [])]
    missing = [
        c
        for c in (*keys, probability, *([value] if value else []), *([label] if label else []))
        if c not in frame
    ]
    if missing:
        raise LeadmlError(f"account rows need the columns {missing}, which the lead rows lack")
    groups = _groups(frame, keys)
    p = np.clip(frame[probability].to_numpy(dtype=np.float64), 0.0, 1.0)
    if np.isnan(p).any():
        raise LeadmlError(f"account rows need a probability for every lead: {probability} has missing values")
    out = frame.iloc[groups.first][keys].reset_index(drop=True)
    out[N_LEADS] = np.diff(np.r_[groups.starts, len(groups.order)]).astype(np.int64)
    out[N_ENGAGED] = _summed(p >= settings.engaged_probability, groups).astype(np.int64)
    # the product through a sum of logs; a lead at probability 1 makes the account certain
    out[INDEPENDENT] = -np.expm1(_summed(np.log1p(-np.minimum(p, 1.0 - 1e-12)), groups))
    out[MAX] = _largest(p, groups)
    out[SUM] = _summed(p, groups)
    if value is not None:
        out[EXPECTED_REVENUE] = _summed(p * frame[value].to_numpy(dtype=np.float64, na_value=0.0), groups)
    elif EXPECTED_VALUE in frame.columns:
        out[EXPECTED_REVENUE] = _summed(
            frame[EXPECTED_VALUE].to_numpy(dtype=np.float64, na_value=0.0), groups
        )
    if label is not None:
        out[OUTCOME] = _largest(frame[label].to_numpy(dtype=np.int8), groups)
    group_columns = [c for c in frame.columns if isinstance(c, str) and c.startswith(GROUP_PREFIX)]
    if group_columns:
        summed = np.column_stack(
            [
                _summed(np.nan_to_num(frame[c].to_numpy(dtype=np.float64), nan=0.0), groups)
                for c in group_columns
            ]
        )
        names = [c.removeprefix(GROUP_PREFIX) for c in group_columns]
        out = pd.concat([out, top_groups(summed, names, settings.top_reasons)], axis=1)
        if settings.keep_groups:
            out = pd.concat([out, pd.DataFrame(summed, columns=group_columns)], axis=1)
    return out


def top_groups(summed: np.ndarray, names: Sequence[str], k: int) -> pd.DataFrame:
    """The ``k`` groups with the largest positive sums (``reason_i``, ``reason_i_logodds``) and the
    ``k`` with the most negative (``against_i``, ``against_i_logodds``) of each row of ``summed``
    (accounts x groups); None and NaN where an account has fewer such groups."""
    columns: dict[str, np.ndarray] = {}
    k = min(k, len(names))
    labels = np.asarray(names, dtype=object)
    for prefix, sign in ((REASON, 1.0), (AGAINST, -1.0)):
        signed = sign * summed
        order = np.argsort(-signed, axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(signed, order, axis=1)
        for i in range(k):
            useful = chosen[:, i] > 0
            columns[f"{prefix}_{i + 1}"] = np.where(useful, labels[order[:, i]], None)
            columns[f"{prefix}_{i + 1}_logodds"] = np.where(useful, sign * chosen[:, i], np.nan)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- the dependence correction
SUMMARIES: tuple[str, ...] = ("logit_independent", "logit_max", "log_leads")
# the correction's coefficients of SUMMARIES must be >= 0 for the first two (see DependenceCorrection)
MONOTONE: tuple[bool, ...] = (True, True, False)


def summaries(rows: pd.DataFrame) -> np.ndarray:
    """The three account summaries the correction reads (accounts x 3): logit of the independence
    roll-up, logit of the largest probability, log of the number of open leads."""
    return np.column_stack(
        [
            _logit(rows[INDEPENDENT].to_numpy(dtype=np.float64)),
            _logit(rows[MAX].to_numpy(dtype=np.float64)),
            np.log(rows[N_LEADS].to_numpy(dtype=np.float64)),
        ]
    )


@dataclass(frozen=True)
class DependenceSettings:
    """How the correction is fitted.

    ``penalty`` is a ridge penalty on the distance of the coefficients from the independence
    roll-up (intercept 0, slope 1 on its logit, 0 elsewhere), in units of one account's log loss:
    with few accounts the correction stays the roll-up, with many it follows the data.
    ``min_accounts`` / ``min_positives``: below either, or without an account of more than one
    lead, the correction is the independence roll-up (``fitted=False``) and says why.
    """

    penalty: float = 2.0
    min_accounts: int = 200
    min_positives: int = 20


@dataclass(frozen=True)
class DependenceCorrection:
    """``logit P(account won) = intercept + sum(coefficients * summaries)`` (:func:`summaries`).

    Chosen over the alternatives because it is the smallest model that can go both ways the data
    may (see the module): the logit of the independence roll-up carries the leads' evidence, the
    logit of the largest probability lets it lean towards perfect dependence, and log(number of
    leads) measures, at equal probabilities, what one more open lead is worth, up (synergy) or
    down (redundancy). Four numbers fitted on thousands of accounts do not overfit, are plain
    data for the model's JSON state, and read as a sentence in the model report. A one-factor
    copula (one correlation) was ruled out because it can only move the roll-up towards the max,
    never above independence; a monotone LightGBM because its trees are not plain numbers worth
    storing for three inputs.

    Monotone: the coefficients of the two probability summaries are kept at or above 0, and both
    summaries rise with every lead's probability, so a lead's probability going up never lowers
    its account's. The intercept and the slopes also recalibrate the account level as a whole.
    """

    intercept: float = 0.0
    coefficients: tuple[float, ...] = (1.0, 0.0, 0.0)
    fitted: bool = False
    accounts: int = 0  # accounts it was fitted on
    positives: int = 0
    note: str = "not fitted: the independence roll-up"

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        """The corrected account probability of each account row (:func:`account_rows`)."""
        return np.asarray(expit(self.intercept + summaries(rows) @ np.asarray(self.coefficients)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (the model's state holds no pickle)."""
        record = asdict(self)
        record["coefficients"] = dict(zip(SUMMARIES, map(float, self.coefficients), strict=True))
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> DependenceCorrection:
        coefficients = record["coefficients"]
        values = tuple(float(coefficients[name]) for name in SUMMARIES)
        return cls(**{**record, "coefficients": values})


def apply_dependence(rows: pd.DataFrame, correction: DependenceCorrection) -> pd.DataFrame:
    """``rows`` (:func:`account_rows`) with :data:`ACCOUNT_PROBABILITY`."""
    return rows.assign(**{ACCOUNT_PROBABILITY: correction.predict(rows)})


def fit_dependence(
    rows: pd.DataFrame, settings: DependenceSettings = DependenceSettings()
) -> DependenceCorrection:
    """The correction fitted on history's account rows (:func:`history_accounts`).

    Maximum penalised likelihood (L-BFGS-B, the monotone coefficients bounded at 0) of the account
    outcome given :func:`summaries`, the penalty pulling towards the independence roll-up.
    """
    y = rows[OUTCOME].to_numpy(dtype=np.float64)
    n, positives = len(y), int(y.sum())
    if (
        n < settings.min_accounts
        or positives < settings.min_positives
        or n - positives < settings.min_positives
    ):
        return DependenceCorrection(
            accounts=n,
            positives=positives,
            note=f"too few accounts to measure dependence ({n} accounts, {positives} won; "
            f"needs {settings.min_accounts} and {settings.min_positives} of each outcome): "
            "the independence roll-up",
        )
    if not (rows[N_LEADS] > 1).any():
        return DependenceCorrection(
            accounts=n,
            positives=positives,
            note="no account had more than one open lead: the independence roll-up",
        )
    x = np.column_stack([np.ones(n), summaries(rows)])
    prior = np.array([0.0, 1.0, 0.0, 0.0])

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = x @ beta
        nll = -float(np.sum(y * log_expit(margin) + (1.0 - y) * log_expit(-margin)))
        gradient = x.T @ (expit(margin) - y)
        distance = beta - prior
        penalty = settings.penalty * float(distance @ distance)
        return nll + penalty, gradient + 2.0 * settings.penalty * distance

    bounds = [(None, None)] + [(0.0, None) if monotone else (None, None) for monotone in MONOTONE]
    result = minimize(loss, prior, jac=True, method="L-BFGS-B", bounds=bounds)
    if not result.success:
        logger.warning(
            "accounts: the dependence fit did not converge (%s); keeping its last step", result.message
        )
    beta = result.x
    fitted = DependenceCorrection(
        intercept=float(beta[0]),
        coefficients=tuple(float(b) for b in beta[1:]),
        fitted=True,
        accounts=n,
        positives=positives,
    )
    return replace(fitted, note=describe_fit(fitted, rows))


def describe_fit(correction: DependenceCorrection, rows: pd.DataFrame) -> str:
    """One sentence for the model report: what history said about the leads of one account,
    judged by the mean corrected probability of its accounts of several leads against the
    independence roll-up's (within 10% of each other: about independent)."""
    several = rows[rows[N_LEADS] > 1]
    corrected = float(np.mean(correction.predict(several)))
    independent = float(several[INDEPENDENT].mean())
    if corrected > 1.1 * independent:
        how = "several open leads convert an account more often than independence says (synergy)"
    elif corrected < independent / 1.1:
        how = "leads of one account win or lose together: several count for less than independence says"
    else:
        how = "leads of one account convert about independently"
    return (
        f"fitted on {correction.accounts:,} accounts ({correction.positives:,} won, {len(several):,} with "
        f"several open leads; on those {corrected:.1%} on average against {independent:.1%} "
        f"independent): {how}"
    )


def history_accounts(
    rows: pd.DataFrame, settings: AccountSettings = AccountSettings(), probability: str = PROBABILITY
) -> pd.DataFrame:
    """Account rows of labelled lead snapshots: each (account, as_of) with :data:`OUTCOME`.

    ``rows``: ``lead_id``, the account key, ``as_of``, an *out-of-sample* calibrated
    ``probability`` and ``label`` (:func:`out_of_sample_rows` gives them from training).
    Only the leads whose snapshot is in ``rows`` are in an account, so an account is as the
    training windows see it: the out-of-time split keeps a lead in the window of its first snapshot.
    """
    return account_rows(
        rows,
        AccountSettings(settings.key, settings.engaged_probability, top_reasons=0, keep_groups=False),
        probability,
        label=s.LABEL,
    )


def out_of_sample_rows(
    development: pd.DataFrame,
    margins: pd.Series,
    calibrator: Any,
    accounts: pd.DataFrame,
    key: str = s.ACCOUNT_ID,
) -> pd.DataFrame:
    """The lead rows the correction is fitted on, from what training already computes.

    ``margins``: the validation folds' out-of-sample margins (``Selection.oos["margin"]``, relative
    to each fold model's base log-odds), the rows the calibrator was fitted on; ``calibrator``:
    the procedure's :class:`~leadml.modelling.calibration.RelativeCalibrator`, which maps a
    relative margin once its ``offset`` is added back. Each row is a prediction of a model that
    did not see it (never an in-sample one, which would hide the dependence behind overfitting);
    the calibrator did see it, a one-dimensional monotone map and a mild optimism at lead level.
    ``accounts``: ``lead_id`` -> ``key`` (the leads table, or an e-mail domain per lead).
    """
    # a flat table without a time column has no as_of
    keys = [c for c in (s.LEAD_ID, s.AS_OF, s.LABEL) if c in development.columns]
    rows = development.loc[margins.index, keys]
    probability = calibrator.predict_proba(margins.to_numpy(dtype=np.float64) + calibrator.offset)
    return with_account_key(rows.assign(**{PROBABILITY: probability}), accounts, key)


def with_account_key(rows: pd.DataFrame, accounts: pd.DataFrame, key: str = s.ACCOUNT_ID) -> pd.DataFrame:
    """``rows`` with each lead's account ``key`` from ``accounts`` (one row per lead)."""
    lookup = accounts.drop_duplicates(s.LEAD_ID).set_index(s.LEAD_ID)[key]
    return rows.assign(**{key: lookup.reindex(rows[s.LEAD_ID].to_numpy()).to_numpy()})


def email_domain_key(emails: pd.Series, free_domains: Sequence[str]) -> pd.Series:
    """A flat table's account key: the lower-cased e-mail domain, missing for free-mail domains
    (a gmail.com address is no company) and for missing or malformed addresses."""
    domain = emails.astype("string").str.strip().str.lower().str.extract(r"@([^@\s]+)$", expand=False)
    return domain.where(~domain.isin(set(free_domains)))


# --------------------------------------------------------------------------- evaluation and trend
def account_metrics(
    rows: pd.DataFrame, correction: DependenceCorrection | None = None, n_bins: int = 10
) -> pd.DataFrame:
    """Account-level ROC AUC, log loss, Brier score and ECE of labelled account rows (the test
    window's, :func:`history_accounts`): one row for the independence roll-up (the baseline), one
    for the largest probability, and one for the ``correction`` when given. An account counts as
    won when any of its open leads is won within the horizon."""
    labels = rows[OUTCOME].to_numpy()
    scores = {INDEPENDENT: rows[INDEPENDENT].to_numpy(), MAX: rows[MAX].to_numpy()}
    if correction is not None:
        scores[ACCOUNT_PROBABILITY] = correction.predict(rows)
    table = pd.DataFrame.from_dict(
        {name: binary_metrics(labels, p, n_bins=n_bins) for name, p in scores.items()}, orient="index"
    )
    table["mean_probability"] = [float(np.mean(p)) for p in scores.values()]
    table.index.name = "roll_up"
    return table[["roc_auc", "log_loss", "brier", "ece", "mean_probability", "base_rate", "n", "positives"]]


def account_trend(today: pd.DataFrame, before: pd.DataFrame | None, key: str = s.ACCOUNT_ID) -> pd.Series:
    """The change of :data:`ACCOUNT_PROBABILITY` since ``before`` (the previous run's account rows),
    aligned with ``today``; NaN for an account the previous run did not have."""
    if before is None or before.empty:
        return pd.Series(np.nan, index=today.index, name=CHANGE)
    previous = before.drop_duplicates(key).set_index(key)[ACCOUNT_PROBABILITY]
    then = previous.reindex(today[key].to_numpy()).to_numpy(dtype=np.float64)
    return pd.Series(
        today[ACCOUNT_PROBABILITY].to_numpy(dtype=np.float64) - then, index=today.index, name=CHANGE
    )


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AccountEvaluation:
    """What training learns about accounts: the correction fitted on the validation folds'
    out-of-sample rows, and how it and the plain roll-ups did on the test window's accounts."""

    settings: AccountSettings
    correction: DependenceCorrection
    metrics: pd.DataFrame  # account_metrics of the test window's accounts
    accounts: int  # the test window's accounts
    several: int  # of them, with more than one open lead

    def state(self) -> dict[str, Any]:
        """What the scorer keeps (``LeadScorer.accounts``): plain JSON values."""
        return {
            "key": self.settings.key,
            "engaged_probability": self.settings.engaged_probability,
            "correction": self.correction.to_dict(),
            "test": {
                str(name): {k: float(v) for k, v in row.items()} for name, row in self.metrics.iterrows()
            },
            "test_accounts": self.accounts,
            "test_accounts_several_leads": self.several,
        }


def engaged_threshold(
    tiers: Mapping[str, Any], default: float = AccountSettings.engaged_probability
) -> float:
    """The probability from which a lead counts as engaged: the lowest minimum of the worked tiers
    (the tier C minimum with the default tiers), so "engaged" means "would be worked as a lead"."""
    minimums = [float(v) for v in (tiers.get("thresholds") or {}).values() if 0.0 < float(v) < 1.0]
    return min(minimums) if minimums else default


def evaluate_accounts(
    fit_rows: pd.DataFrame, test_rows: pd.DataFrame, settings: AccountSettings
) -> AccountEvaluation:
    """Fit the correction on ``fit_rows`` (:func:`out_of_sample_rows`) and judge it on ``test_rows``:
    the test window's lead rows with their account key, ``as_of``, ``label`` and the evaluated
    procedure's probability (neither the model nor the correction saw them)."""
    correction = fit_dependence(history_accounts(fit_rows, settings))
    test_accounts = history_accounts(test_rows, settings)
    return AccountEvaluation(
        settings=settings,
        correction=correction,
        metrics=account_metrics(test_accounts, correction),
        accounts=len(test_accounts),
        several=int((test_accounts[N_LEADS] > 1).sum()),
    )
