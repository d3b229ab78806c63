"""Configs composed as the entry points compose them, from inside a stage, a test or a notebook.

``leadml-export`` quotes the ``leadml-train`` command that re-creates a run's config (the
model card's "re-create" line): :func:`recreate_overrides` finds it by composing candidates.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from leadml.adapters.layout import CONFIG_DIR
from leadml.reporting.model_card import config_differences as differences
from leadml.reporting.model_card import unshared_keys

logger = logging.getLogger(__name__)

# config groups whose choice a training run may have made, data first (it may choose others)
RECREATE_GROUPS = ("data", "model", "split", "calibration", "tiers", "features", "synthetic")


def recreate_overrides(logged: Mapping[str, Any]) -> list[str]:
    """The ``leadml-train`` overrides that compose ``logged`` (a run's config.yaml) again.

    Group choices are found by composing each option and keeping the one that leaves the
    fewest differences; the remaining differences become ``key=value`` overrides.
    """
    base = [f"paths.root={(logged.get('paths') or {}).get('root', '.')}"]
    composed: dict[tuple[str, ...], dict[str, Any]] = {}

    def compose(overrides: list[str]) -> dict[str, Any]:
        key = tuple(overrides)
        if key not in composed:
            composed[key] = composed_config("train", base + overrides)
        return composed[key]

    def distance(overrides: list[str]) -> int:  # differing values plus keys on one side only
        candidate = compose(overrides)
        return len(differences(logged, candidate)) + len(unshared_keys(logged, candidate))

    chosen: list[str] = []
    with hydra_context():
        for group in RECREATE_GROUPS:
            options = sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))
            if len(options) < 2 or logged.get(group) == compose(chosen).get(group):
                continue  # nothing to choose, or the current choice gives this section already
            best = min(options, key=lambda option: distance([*chosen, f"{group}={option}"]))
            if distance([*chosen, f"{group}={best}"]) < distance(chosen):
                chosen.append(f"{group}={best}")
        overrides = differences(logged, compose(chosen), chosen)
        left = differences(logged, compose(overrides))
    if left:  # a value the override grammar cannot carry: the card says the command is not enough
        logger.warning("the re-create command misses %s", left)
        overrides.append("# and as in the run's config.yaml: " + " ".join(left))
    return overrides


@contextlib.contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra's config search as the entry points set it up (already there inside one of them)."""
    if GlobalHydra.instance().is_initialized():
        yield
    else:
        with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            yield


def composed_config(config_name: str, overrides: list[str]) -> dict[str, Any]:
    """A config composed as the entry points do (inside one of them or from a test or notebook)."""
    with hydra_context():
        values = OmegaConf.to_container(hydra.compose(config_name, overrides), resolve=True)
    values.pop("hydra", None)
    return values
