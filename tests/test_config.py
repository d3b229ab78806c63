"""Every primary config and every file of every config group composes and resolves."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from leadml.cli import CONFIG_DIR
from leadml.features import FeatureSettings

CONF = Path(CONFIG_DIR)
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml"))
GROUP_FILES = sorted(
    (group.name, option.stem) for group in CONF.iterdir() if group.is_dir() for option in group.glob("*.yaml")
)


def _compose(config_name: str, overrides: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [])


def test_there_is_a_primary_config_per_entry_point() -> None:
    assert {"generate", "ingest", "features", "train"} <= set(PRIMARY)


@pytest.mark.parametrize("config_name", PRIMARY)
def test_primary_config_composes_and_resolves(config_name: str) -> None:
    cfg = _compose(config_name)
    OmegaConf.resolve(cfg)
    FeatureSettings.from_mapping(OmegaConf.to_container(cfg.features))


@pytest.mark.parametrize(("group", "option"), GROUP_FILES)
def test_every_group_option_composes(group: str, option: str) -> None:
    for config_name in ("generate", "ingest", "features", "train"):
        cfg = _compose(config_name, [f"{group}={option}"])
        OmegaConf.resolve(cfg)
        assert cfg[group] is not None


def test_paths_follow_the_root_override(tmp_path: Path) -> None:
    cfg = _compose("features", [f"paths.root={tmp_path}"])
    assert cfg.input_dir == f"{tmp_path}/data/interim/synthetic"
    assert cfg.output_dir == f"{tmp_path}/data/features/synthetic"
