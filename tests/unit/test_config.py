"""Every primary config and every file of every config group composes and resolves; every data
setting is a plain override, also on a data config of one's own found through hydra.searchpath."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from factories import user_configs
from leadml.adapters.layout import check_data_name
from leadml.cli import CONFIG_DIR, check_known_keys, composed_data, data_config_source
from leadml.data.calendar import date_setting
from leadml.data.contracts import IngestSettings
from leadml.data.features import FeatureSettings
from leadml.errors import CONFIG_FILE, LeadmlError, SettingsError, unknown_keys
from leadml.reporting.forecast import ForecastSettings
from leadml.reporting.leadership import ReportSettings
from leadml.scoring.model_input import resolve_as_of
from leadml.stages.ingest import config_fingerprint

CONF = Path(CONFIG_DIR)
PRIMARY = sorted(p.stem for p in CONF.glob("*.yaml"))
GROUP_FILES = sorted(
    (group.name, option.stem) for group in CONF.iterdir() if group.is_dir() for option in group.glob("*.yaml")
)


DATA_SETS = sorted(path.stem for path in (CONF / "data").glob("*.yaml"))
# a user's flat config as the README's example writes it: none of the data-level settings
MY_LEADS = """\
name: my_leads
kind: flat
table: {format: csv, path: exports/leads.csv}
contract:
  id: Lead ID
  target: Status
  positive: [Won]
  time: Created Date
  categorical: [Source]
"""


def _compose(config_name: str, overrides: list[str] | None = None, hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides or [], return_hydra_config=hydra_node)


def _package(group: str, option: str) -> str:
    """Where a group option lands: its ``# @package`` header (the global package: the group's name)."""
    header = re.search(r"^# @package (\S+)", (CONF / group / f"{option}.yaml").read_text(), re.M)
    return header.group(1) if header and header.group(1) != "_global_" else group


def _my_configs(tmp_path: Path) -> Path:
    return user_configs(tmp_path, MY_LEADS)


def test_there_is_a_primary_config_per_entry_point() -> None:
    assert {"generate", "ingest", "features", "train"} <= set(PRIMARY)


@pytest.mark.parametrize("config_name", PRIMARY)
def test_primary_config_composes_and_resolves(config_name: str) -> None:
    cfg = _compose(config_name)
    OmegaConf.resolve(cfg)
    FeatureSettings.from_mapping(OmegaConf.to_container(cfg.features))


# groups one entry point composes alone (in its own defaults, not common.yaml's)
OWN_GROUPS = {"experiment": ("score", "experiment")}


@pytest.mark.parametrize(("group", "option"), GROUP_FILES)
def test_every_group_option_composes(group: str, option: str) -> None:
    for config_name in OWN_GROUPS.get(group, ("generate", "ingest", "features", "train")):
        cfg = _compose(config_name, [f"{group}={option}"])
        OmegaConf.resolve(cfg)
        assert cfg[_package(group, option)] is not None


def test_paths_follow_the_root_override(tmp_path: Path) -> None:
    cfg = _compose("features", [f"paths.root={tmp_path}"])
    assert cfg.input_dir == f"{tmp_path}/data/interim/synthetic"
    assert cfg.output_dir == f"{tmp_path}/data/features/synthetic"


def test_every_data_setting_is_a_plain_override_on_a_config_of_ones_own(tmp_path: Path) -> None:
    overrides = [
        f"hydra.searchpath=[file://{_my_configs(tmp_path)}]",
        "data=my_leads",
        "data.max_bad_share=0.15",
        "data.timezone=Europe/Paris",
        "data.missing_markers=[Select]",
        "data.reference_time=2025-01-01",
        "data.synonyms={Source: {google: paid_search}}",
        "data.points={rules: [{feature: Source, in: [web], points: 5}]}",
    ]
    data = OmegaConf.to_container(_compose("train", overrides).data, resolve=True)
    assert data["max_bad_share"] == 0.15 and data["timezone"] == "Europe/Paris"
    assert data["missing_markers"] == ["Select"] and data["reference_time"] == "2025-01-01"
    assert data["points"]["rules"][0]["points"] == 5
    assert data["contract"]["id"] == "Lead ID"  # the config's own keys are all there
    settings = IngestSettings.from_mapping(
        {key: data[key] for key in ("timezone", "max_bad_share", "synonyms")}
    )
    assert settings.synonyms_for("Source")["google"] == "paid_search"


@pytest.mark.parametrize("data_set", DATA_SETS)
def test_the_data_defaults_change_no_data_config(data_set: str) -> None:
    """The defaults only add keys a data config leaves out, with leadml's own default values, and
    each data config still wins: nothing else of the composed config moves."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "data_defaults" / "base.yaml"))
    for config_name in ("train", "score"):
        before = OmegaConf.to_container(_compose(config_name, [f"data={data_set}", "~data_defaults"]))
        after = OmegaConf.to_container(_compose(config_name, [f"data={data_set}"]))
        added = {key: after["data"].pop(key) for key in set(after["data"]) - set(before["data"])}
        assert after == before
        assert all(value == defaults[key] for key, value in added.items()), added
        unset = {"joins", "where", "labels", "accounts", "segments"} & set(added)  # not ingest settings
        assert all(added[key] is None for key in unset)
        ingest_keys = set(added) - unset - {"batch_rows"}  # batch_rows: the stage's, not the contracts'
        assert (
            IngestSettings.from_mapping({k: v for k, v in defaults.items() if k in ingest_keys})
            == IngestSettings()
        )


def test_a_data_config_overrides_the_defaults() -> None:
    assert _compose("train", ["data=x_education"]).data.missing_markers == ["Select"]
    assert "NA" in _compose("train", ["data=synthetic"]).data.missing_markers
    assert _compose("train", ["data=bank", "data.max_bad_share=0.2"]).data.max_bad_share == 0.2
    # bank lists no missing markers: the defaults add them (so the comparison above compares something)
    assert "missing_markers" not in _compose("train", ["data=bank", "~data_defaults"]).data
    assert _compose("train", ["data=bank"]).data.missing_markers == []


def test_the_data_config_file_is_the_one_hydra_read(tmp_path: Path) -> None:
    folder = _my_configs(tmp_path)
    (folder / "data" / "bank.yaml").write_text(MY_LEADS)  # shadowed: conf/ comes first on the path
    for choice, expected in (
        ("my_leads", folder / "data" / "my_leads.yaml"),
        ("bank", CONF / "data" / "bank.yaml"),
    ):
        cfg = _compose("train", [f"hydra.searchpath=[file://{folder}]", f"data={choice}"], hydra_node=True)
        runtime = cfg.hydra.runtime
        assert data_config_source(runtime.choices["data"], runtime.config_sources) == expected.resolve()
        assert cfg.data.name == choice  # the shadowed bank.yaml (name my_leads) was not read
    assert data_config_source("nowhere", runtime.config_sources) is None


def test_the_config_file_never_enters_the_build_fingerprint(tmp_path: Path) -> None:
    cfg = _compose("train", [f"paths.root={tmp_path}"])
    plain = config_fingerprint(composed_data(cfg), OmegaConf.to_container(cfg.features, resolve=True))
    with open_dict(cfg):
        cfg.data[CONFIG_FILE] = str(tmp_path / "elsewhere" / "data" / "synthetic.yaml")
    assert CONFIG_FILE not in composed_data(cfg)
    assert config_fingerprint(composed_data(cfg), OmegaConf.to_container(cfg.features, resolve=True)) == plain


# --------------------------------------------------------------------------- bad settings (issue 22)
@pytest.mark.parametrize("config_name", PRIMARY)
@pytest.mark.parametrize("data_set", DATA_SETS)
def test_every_shipped_config_passes_the_unknown_key_check(config_name: str, data_set: str) -> None:
    cfg = _compose(config_name, [f"data={data_set}"])
    check_known_keys(cfg, config_name)
    check_data_name(cfg.data.name)


def test_a_key_no_config_file_has_is_refused_naming_it() -> None:
    with pytest.raises(SettingsError, match=r"^unknown key score\.foo: not a setting of conf/score\.yaml"):
        check_known_keys(_compose("score", ["+score.foo=1"]), "score")
    with pytest.raises(SettingsError, match=r"^unknown key score\.sql\.tabel"):
        check_known_keys(_compose("score", ["+score.sql.tabel=x"]), "score")
    # below an empty mapping or a null the keys are the user's own
    check_known_keys(_compose("score", ["+score.spark.conf.spark.executor.memory=8g"]), "score")
    check_known_keys(_compose("forecast", ["forecast.planned={web: 500}"]), "forecast")
    assert unknown_keys({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 0, "b": {"c": 0}}, "x") == ["x.b.d"]


def test_report_settings_are_refused_outside_their_range() -> None:
    for key, value, expected in [
        ("top_leads", -5, "report.settings.top_leads must be a whole number >= 0, got -5"),
        ("table_rows", "abc", "report.settings.table_rows must be a whole number >= 1, got 'abc'"),
        ("page_rows", 0, "report.settings.page_rows must be a whole number >= 1, got 0"),
        ("drift_psi", -0.1, "report.settings.drift_psi must be a positive number, got -0.1"),
    ]:
        with pytest.raises(LeadmlError) as error:
            ReportSettings.from_mapping({key: value})
        assert str(error.value) == expected
    assert ReportSettings.from_mapping({"top_leads": "7", "table_rows": 10.0}).top_leads == 7


@pytest.mark.parametrize("value", ["2026-02-30", "notadate", "nat", "", None])
def test_a_date_setting_that_is_no_date_names_its_key(value: object) -> None:
    with pytest.raises(LeadmlError) as error:
        date_setting(value, "report.as_of", "latest or YYYY-MM-DD")
    assert str(error.value) == f"report.as_of must be latest or YYYY-MM-DD, got {value!r}"
    assert str(date_setting("2026-02-28T13:00", "k")) == "2026-02-28 00:00:00+00:00"
    with pytest.raises(LeadmlError, match=r"^score\.as_of must be today, latest or YYYY-MM-DD, got '2026-02"):
        resolve_as_of("2026-02-30", {})  # leadml-score's date: the same check


def test_forecast_dates_are_checked_with_the_settings() -> None:
    with pytest.raises(LeadmlError, match=r"^forecast\.scored_as_of must be latest, null or YYYY-MM-DD, got"):
        ForecastSettings.from_mapping({"scored_as_of": "notadate"})
    with pytest.raises(LeadmlError, match=r"^forecast\.as_of must be null \(the data's end\) or YYYY-MM-DD"):
        ForecastSettings.from_mapping({"as_of": "2026-02-30"})
    assert ForecastSettings.from_mapping({"scored_as_of": "latest"}).scored_as_of == "latest"


@pytest.mark.parametrize("name", ["../../../../escaped_dir", "a/b", "a\\b", ".hidden", "", "x" * 101, 7])
def test_a_data_name_must_be_a_plain_folder_name(name: object) -> None:
    with pytest.raises(LeadmlError, match=r"^data\.name must be a plain name \(letters, digits"):
        check_data_name(name)
    assert check_data_name("my-leads.v2_1") == "my-leads.v2_1"
