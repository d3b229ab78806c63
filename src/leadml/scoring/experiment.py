"""Experiments of scoring (``conf/experiment/``): arms, the assignment of leads to them, their rows.

An experiment splits the open leads into arms (champion, challenger, the points sheet, a
holdout that is shown no score) by shares. A lead's arm is a pure function of the experiment's
salt and the lead's id (:func:`arm_indices`), so a lead stays in its arm night after night and
whichever engine scores it: both engines call the functions of this module on pandas frames.

Every arm's model scores every open lead (:func:`score_arms`): the columns a sales team sees
(``probability``, ``tier``, reasons...) are those of the lead's arm's model, and each arm's own
probability and tier ride along in side columns (``arm_<name>_probability``,
``arm_<name>_tier``), so any arm can be compared with any other offline, on the same leads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from leadml.data import schema as s
from leadml.errors import LeadmlError
from leadml.modelling.evaluate import TierSettings, assign_tiers
from leadml.modelling.scorer import PROBABILITY, LeadScorer
from leadml.scoring.scores import score_leads

NO_EXPERIMENT = "none"
# the columns of an experiment's rows are named in leadml.data.schema (the sink and report read them)
ARM, EXPERIMENT, HIDDEN_TIER = s.ARM, s.EXPERIMENT, s.HIDDEN_TIER
# an arm's name becomes part of SQL column names (arm_<name>_probability): a plain identifier,
# short enough for PostgreSQL's 63 characters with the longest suffix
ARM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
# the experiment's name is stored in every row and names the experiment in messages
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
SHARE_TOLERANCE = 1e-9
SEPARATOR = b"\x1f"  # between the salt and the id: "ab"+"c" and "a"+"bc" hash apart
# the columns a hidden arm keeps as they are: who the lead is, when and what, never how it scored
NEVER_HIDDEN = frozenset({s.LEAD_ID, s.AS_OF, ARM, EXPERIMENT, "model_version"})


class ExperimentError(LeadmlError):
    """A malformed ``experiment`` config (``conf/experiment/<name>.yaml``): exit code 1, as any bad config."""

    exit_code = 1


def side_column(arm: str, what: str) -> str:
    """The column holding arm ``arm``'s own ``what`` (probability, tier) for every lead."""
    return s.arm_column(arm, what)


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the model that scores its leads, its share of leads, whether its scores show."""

    name: str
    model: str  # an alias of the registered model (champion, challenger) or a model URI
    share: float
    show_score: bool = True


@dataclass(frozen=True)
class Experiment:
    """``conf/experiment/<name>.yaml``: arms with shares, and the salt of the assignment."""

    name: str
    salt: str
    arms: tuple[Arm, ...]
    started: str | None = None  # YYYY-MM-DD: when the experiment started (the readout counts from it)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> Experiment | None:
        """The experiment of a composed ``experiment`` section; None for ``experiment=none``.

        Every mistake is one :class:`ExperimentError` line naming the key to fix.
        """
        values = dict(mapping or {})
        name = values.get("name")
        if (name is None or str(name) == NO_EXPERIMENT) and not values.get("arms"):
            return None
        _known(values, {"name", "salt", "started", "arms"}, "experiment")
        name = str(name or "")
        if not EXPERIMENT_NAME.fullmatch(name) or name == NO_EXPERIMENT:
            raise ExperimentError(
                "experiment.name must be a name of letters, digits, '_', '-' and '.' "
                f"(not {NO_EXPERIMENT!r}), got {name!r}"
            )
        salt = values.get("salt")
        arms = tuple(_arm(index, arm) for index, arm in enumerate(_arm_list(values.get("arms"))))
        _check_arms(arms)
        return cls(
            name=name,
            salt=name if salt is None or salt == "" else str(salt),
            arms=arms,
            started=_started(values.get("started")),
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    def cut_points(self) -> np.ndarray:
        """The upper bound of each arm but the last in 64-bit hash units: arm i takes the hashes
        from cut i-1 (0 for the first) up to cut i (exclusive), the last arm every hash above."""
        cumulative = np.cumsum([arm.share for arm in self.arms])[:-1]
        # a float times 2**64 is exact (a power of two); int() then floors it the same way everywhere
        return np.array([min(int(bound * 2.0**64), 2**64 - 1) for bound in cumulative], dtype=np.uint64)

    def assign(self, lead_ids: Iterable[Any]) -> np.ndarray:
        """The arm name of each lead id (object array), :func:`arm_indices` in names."""
        return np.array(self.names, dtype=object)[arm_indices(lead_ids, self)]


def _known(values: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ExperimentError(f"unknown {where} key(s) {unknown}; known: {sorted(known)}")


def _arm_list(arms: Any) -> list[Any]:
    if not isinstance(arms, Sequence) or isinstance(arms, str) or len(arms) < 2:
        raise ExperimentError(
            "experiment.arms must list at least 2 arms, each {name, model, share, show_score}, "
            f"got {arms!r}"
        )
    return list(arms)


def _arm(index: int, values: Any) -> Arm:
    where = f"experiment.arms[{index}]"
    if not isinstance(values, Mapping):
        raise ExperimentError(f"{where} must be a mapping {{name, model, share, show_score}}, got {values!r}")
    _known(values, {"name", "model", "share", "show_score"}, where)
    name = str(values.get("name") or "")
    if not ARM_NAME.fullmatch(name):
        raise ExperimentError(
            f"{where}.name must be a plain identifier (a letter, then letters, digits or '_', at most 40), "
            f"got {values.get('name')!r}: it names the columns arm_<name>_probability and arm_<name>_tier"
        )
    model = values.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ExperimentError(
            f"{where}.model must be an alias (champion, challenger) or a model URI "
            f"(models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model, an exported folder), "
            f"got {model!r}"
        )
    share = values.get("share")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < float(share) <= 1:
        raise ExperimentError(f"{where}.share must be a number above 0 and at most 1, got {share!r}")
    show = values.get("show_score", True)
    if not isinstance(show, bool):
        raise ExperimentError(f"{where}.show_score must be true or false, got {show!r}")
    return Arm(name=name, model=model.strip(), share=float(share), show_score=show)


def _check_arms(arms: tuple[Arm, ...]) -> None:
    names = [arm.name for arm in arms]
    doubled = sorted({name for name in names if names.count(name) > 1})
    if doubled:
        raise ExperimentError(f"experiment.arms: every arm needs its own name, {doubled} appear twice")
    total = sum(arm.share for arm in arms)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        shares = ", ".join(f"{arm.name} {arm.share:g}" for arm in arms)
        raise ExperimentError(f"experiment.arms: the shares must add up to 1, got {total:.10g} ({shares})")


def _started(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value.isoformat()[:10]
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ExperimentError(f"experiment.started must be a date YYYY-MM-DD, got {value!r}") from None


# --------------------------------------------------------------------------- the assignment
def lead_hashes(lead_ids: Iterable[Any], salt: str) -> np.ndarray:
    """The first 8 bytes (big-endian) of SHA-256(salt, 0x1F, the id as UTF-8 text) of each lead id.

    SHA-256 of the id's text: the same number in every process, Python version, machine and engine
    (Python's ``hash()`` is salted per process; Spark's hashes are not pandas'). About a second for a
    million ids (measured: 1.5 s on a busy 2-core machine).
    """
    salted = hashlib.sha256(str(salt).encode() + SEPARATOR)

    def prefix(lead_id: Any) -> bytes:
        digest = salted.copy()  # the salt's state computed once, not once per id
        digest.update(str(lead_id).encode())
        return digest.digest()[:8]

    packed = b"".join(prefix(lead_id) for lead_id in lead_ids)
    return np.frombuffer(packed, dtype=">u8").astype(np.uint64)


def arm_indices(lead_ids: Iterable[Any], experiment: Experiment) -> np.ndarray:
    """The position in ``experiment.arms`` of each lead's arm.

    u = hash / 2**64 is uniform on [0, 1); a lead joins the first arm whose cumulative share exceeds
    u. Compared in integers (:meth:`Experiment.cut_points`), so no rounding of u can move a lead.
    """
    hashes = lead_hashes(lead_ids, experiment.salt)
    return np.searchsorted(experiment.cut_points(), hashes, side="right").astype(np.int64)


# --------------------------------------------------------------------------- scoring the arms
@dataclass(frozen=True)
class ArmModels:
    """The experiment with each arm's loaded model: the first pass of either engine scores with them.

    ``scorers`` holds each distinct model once (by its URI); ``model_of`` names each arm's.
    """

    experiment: Experiment
    scorers: Mapping[str, LeadScorer]  # model URI -> scorer
    model_of: Mapping[str, str]  # arm name -> model URI
    versions: Mapping[str, str]  # arm name -> its model's version label

    def scorer(self, arm: str) -> LeadScorer:
        return self.scorers[self.model_of[arm]]


def score_arms(
    arms: ArmModels,
    features: pd.DataFrame,
    *,
    explain: bool = True,
    explainer: str = "fast",
    deal_value: pd.Series | None = None,
) -> pd.DataFrame:
    """``score_leads`` of every lead by every arm's model, as one frame.

    The usual columns of each lead come from its arm's model (the union of the models' columns:
    a points sheet has no reasons, which stay empty for its leads); then ``arm``, ``experiment``
    and each arm's own probability (:func:`side_column`). Tiers and percentiles are provisional,
    as in ``score_leads`` on a bucket: :func:`finish_arms` sets them from all of today's leads.
    """
    by_model = {
        uri: score_leads(scorer, features, TierSettings(), explain=explain, explainer=explainer,
                         deal_value=deal_value)
        for uri, scorer in arms.scorers.items()
    }  # fmt: skip
    assigned = arms.experiment.assign(features[s.LEAD_ID].to_numpy())
    kinds = {name: frame[name].dtype for frame in reversed(by_model.values()) for name in frame.columns}
    columns = list(dict.fromkeys(name for frame in by_model.values() for name in frame.columns))
    parts = []
    for uri, frame in by_model.items():
        chosen = np.isin(assigned, [arm for arm, model in arms.model_of.items() if model == uri])
        if chosen.any():
            parts.append(_with_columns(frame.loc[chosen], columns, kinds))
    out = pd.concat(parts).sort_index().reset_index(drop=True)
    out[ARM] = assigned
    out[EXPERIMENT] = arms.experiment.name
    for arm in arms.experiment.names:
        out[side_column(arm, PROBABILITY)] = by_model[arms.model_of[arm]][PROBABILITY].to_numpy()
    return out


def _with_columns(frame: pd.DataFrame, columns: list[str], kinds: Mapping[str, Any]) -> pd.DataFrame:
    """``frame`` with every one of ``columns``, in order; a column of another model's, missing here,
    is empty in the type that model gives it (text stays text in the bucket's Arrow schema)."""
    missing = {name: pd.Series(index=frame.index, dtype=kinds[name]) for name in columns if name not in frame}
    return frame.assign(**missing)[columns] if missing else frame[columns]


@dataclass(frozen=True)
class ArmFinish:
    """What finishing an experiment's rows needs of all of today's leads, per arm: the sorted
    probabilities of the arm's model and the tier thresholds they give."""

    experiment: Experiment
    sorted_probabilities: Mapping[str, np.ndarray]
    thresholds: Mapping[str, Mapping[str, float]]
    versions: Mapping[str, str]
    show_score: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def of(
        cls, experiment: Experiment, probabilities: Mapping[str, np.ndarray], tiers: TierSettings,
        versions: Mapping[str, str],
    ) -> ArmFinish:  # fmt: skip
        ordered = {
            arm: np.sort(np.asarray(values, dtype=np.float64)) for arm, values in probabilities.items()
        }
        return cls(
            experiment=experiment,
            sorted_probabilities=ordered,
            thresholds={arm: dict(tiers.thresholds_for(values)) for arm, values in ordered.items()},
            versions=dict(versions),
            show_score={arm.name: arm.show_score for arm in experiment.arms},
        )


def rank_by_arm(frame: pd.DataFrame, job: ArmFinish, floor_tier: str) -> tuple[np.ndarray, np.ndarray]:
    """(percentile, tier) of each row's visible probability among its arm's model's scores of
    all of today's leads: what a run with that model alone gives the lead."""
    probability = frame[PROBABILITY].to_numpy(dtype=np.float64)
    arms = frame[ARM].to_numpy()
    percentile = np.full(len(frame), np.nan)
    tier = np.full(len(frame), None, dtype=object)
    for arm in job.experiment.names:
        rows = arms == arm
        percentile[rows], tier[rows] = _rank(probability[rows], job, arm, floor_tier)
    return percentile, tier


def _rank(
    probability: np.ndarray, job: ArmFinish, arm: str, floor_tier: str
) -> tuple[np.ndarray, np.ndarray]:
    everything = job.sorted_probabilities[arm]
    at_or_below = np.searchsorted(everything, probability, side="right").astype(np.float64)
    percentile = 100.0 * at_or_below / max(len(everything), 1)
    return percentile, np.asarray(assign_tiers(probability, job.thresholds[arm], floor_tier), dtype=object)


def finish_arms(frame: pd.DataFrame, job: ArmFinish, floor_tier: str) -> pd.DataFrame:
    """Each row's model version (its arm's), each arm's own tier, and the scores of arms with
    ``show_score: false`` blanked: tier :data:`HIDDEN_TIER`, every other score column null. Their
    real scores stay in the arm's side columns, for the readout."""
    out = frame.copy()
    arms = out[ARM].to_numpy()
    out["model_version"] = pd.Series(arms, index=out.index).map(dict(job.versions)).astype(object)
    for arm in job.experiment.names:
        probability = out[side_column(arm, PROBABILITY)].to_numpy(dtype=np.float64)
        out[side_column(arm, "tier")] = _rank(probability, job, arm, floor_tier)[1]
    hidden = np.isin(arms, [arm for arm, shown in job.show_score.items() if not shown])
    if hidden.any():
        for column in out.columns:
            if column in NEVER_HIDDEN or column.startswith("arm_") or column == "tier":
                continue
            out[column] = out[column].mask(hidden)
        out["tier"] = out["tier"].astype(object).mask(hidden, HIDDEN_TIER)
    return out


def model_uri_of(model: str, registered_model: str) -> str:
    """An arm's ``model`` as a model URI: an alias (a plain word: champion, challenger or one of your
    own) of the registered model, else the URI or exported folder as written."""
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", model) and model not in {"models", "runs"}:
        return f"models:/{registered_model}@{model}"
    return model
