"""Experiments of scoring: the assignment of leads to arms and the experiment's config."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from leadml.scoring.experiment import (
    Experiment,
    ExperimentError,
    arm_indices,
    lead_hashes,
    model_uri_of,
)
from leadml.stages.configs import composed_config

THREE_ARMS = {
    "name": "spring",
    "arms": [
        {"name": "champion", "model": "champion", "share": 0.5},
        {"name": "challenger", "model": "challenger", "share": 0.3},
        {"name": "holdout", "model": "champion", "share": 0.2, "show_score": False},
    ],
}


def _experiment(**changes) -> Experiment:
    experiment = Experiment.from_mapping({**THREE_ARMS, **changes})
    assert experiment is not None
    return experiment


def test_the_hash_is_sha256_of_salt_separator_and_id() -> None:
    """Pinned: the same number in any process, Python version or engine (never Python's hash())."""
    expected = int.from_bytes(hashlib.sha256(b"spring\x1fL000042").digest()[:8], "big")
    assert lead_hashes(["L000042"], "spring")[0] == expected
    assert lead_hashes([42], "spring")[0] == lead_hashes(["42"], "spring")[0]  # the id's text


def test_assignment_is_deterministic_and_depends_on_the_lead_alone() -> None:
    experiment = _experiment()
    ids = [f"L{i:06d}" for i in range(5000)]
    first = arm_indices(ids, experiment)
    assert np.array_equal(first, arm_indices(ids, experiment))
    # a lead's arm does not depend on the other leads of the run, nor on their order
    np.testing.assert_array_equal(arm_indices(ids[::-7], experiment), first[::-7])
    # pinned arms: a change of the function would move running experiments' leads
    # (worked out by hand: u = first 8 bytes of SHA-256 / 2**64, the first arm whose cumulative
    # share exceeds u)
    assert experiment.assign([f"L00000{i}" for i in range(6)]).tolist() == PINNED


PINNED = ["challenger", "champion", "champion", "champion", "challenger", "champion"]


def test_assignment_is_balanced_within_one_percent_at_100000_leads() -> None:
    experiment = _experiment()
    counts = np.bincount(arm_indices([f"lead-{i}" for i in range(100_000)], experiment), minlength=3)
    shares = counts / counts.sum()
    np.testing.assert_allclose(shares, [0.5, 0.3, 0.2], rtol=0, atol=0.01)


def test_another_salt_is_another_assignment() -> None:
    ids = [f"L{i}" for i in range(2000)]
    same = arm_indices(ids, _experiment()) == arm_indices(ids, _experiment(salt="autumn"))
    assert 0.3 < same.mean() < 0.5  # independent draws agree 0.5^2 + 0.3^2 + 0.2^2 = 38% of the time


def test_the_salt_defaults_to_the_name() -> None:
    assert _experiment().salt == "spring"
    assert _experiment(salt="x").salt == "x"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"arms": THREE_ARMS["arms"][:1]}, "experiment.arms must list at least 2 arms"),
        ({"arms": [{**arm, "share": 0.4} for arm in THREE_ARMS["arms"]]}, "the shares must add up to 1"),
        ({"arms": [THREE_ARMS["arms"][0], {**THREE_ARMS["arms"][1], "name": "champion", "share": 0.5}]},
         "appear twice"),
        ({"arms": [{**THREE_ARMS["arms"][0], "name": "arm one"}, *THREE_ARMS["arms"][1:]]},
         "experiment.arms[0].name"),
        ({"arms": [*THREE_ARMS["arms"][:2], {**THREE_ARMS["arms"][2], "show_score": "no"}]},
         "experiment.arms[2].show_score"),
        ({"arms": [*THREE_ARMS["arms"][:2], {**THREE_ARMS["arms"][2], "model": ""}]},
         "experiment.arms[2].model"),
        ({"arms": [*THREE_ARMS["arms"][:2], {**THREE_ARMS["arms"][2], "share": 0}]},
         "experiment.arms[2].share"),
        ({"arms": [*THREE_ARMS["arms"][:2], {**THREE_ARMS["arms"][2], "weight": 1}]},
         "unknown experiment.arms[2] key(s) ['weight']"),
        ({"started": "spring"}, "experiment.started"),
        ({"name": "a b"}, "experiment.name"),
        ({"owner": "me"}, "unknown experiment key(s) ['owner']"),
    ],
)  # fmt: skip
def test_a_malformed_experiment_is_one_line_naming_its_key(changes: dict, key: str) -> None:
    with pytest.raises(ExperimentError) as caught:
        Experiment.from_mapping({**THREE_ARMS, **changes})
    message = str(caught.value)
    assert key in message and "\n" not in message
    assert caught.value.exit_code == 1


def test_shares_may_miss_one_by_rounding_only() -> None:
    thirds = [{"name": f"a{i}", "model": "champion", "share": 1 / 3} for i in range(3)]
    assert Experiment.from_mapping({"name": "thirds", "arms": thirds}) is not None


def test_an_arm_model_is_an_alias_or_a_uri() -> None:
    assert model_uri_of("challenger", "leadml-x") == "models:/leadml-x@challenger"
    for uri in (
        "models:/leadml-x-points@champion",
        "models:/leadml-x/3",
        "runs:/abc/model",
        "models/leadml-x-v3",
    ):
        assert model_uri_of(uri, "leadml-x") == uri


def test_the_shipped_experiments_compose_and_none_is_the_default() -> None:
    assert Experiment.from_mapping(composed_config("score", []).get("experiment")) is None
    pair = Experiment.from_mapping(composed_config("score", ["experiment=champion_challenger"])["experiment"])
    assert (
        pair is not None and pair.names == ("champion", "challenger") and pair.salt == "champion_challenger"
    )
    three = Experiment.from_mapping(composed_config("score", ["experiment=points_holdout"])["experiment"])
    assert three is not None
    assert three.arms[1].model == "models:/leadml-synthetic-points@champion"
    assert [arm.show_score for arm in three.arms] == [True, True, False]
