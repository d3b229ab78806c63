"""``leadml-init``: a commented flat data config proposed for an export, which trains as it is.

Detection is tested on small generated files (separator, encoding, workbook, order without time,
Won/Lost/Open target, planted leaks, personal data); errors by their exact line and exit code;
the README's commands as written; and, on each public data set, init followed by training.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy.special import expit

from factories import REPO, local_tracking, run_entry_point
from leadml import cli
from leadml.cli import CONFIG_DIR
from leadml.data.config_yaml import yaml_scalar
from leadml.data.contracts import flat_contract
from leadml.data.profiles import detect_separator, header_problem, sample_records
from leadml.errors import ContractError, LeadmlError, SourceMissingError
from leadml.modelling.proposal_check import data_section
from leadml.stages.init import init_data_config, sniff_source

README = REPO / "README.md"
PUBLIC = Path(CONFIG_DIR).parent.parent / "shared" / "data" / "public"
# training as fast as it goes: the point is that the written config trains, not how well
QUICK = [
    "selection.trials=1",
    "selection.seconds=0",
    "selection.recency=[]",
    "selection.max_trees=60",
    "selection.min_trees=10",
    "selection.early_stopping_rounds=10",
    "evaluation.bootstrap=10",
    "evaluation.shap_rows=100",
    "calibration=none",
]


def crm_export(n: int = 800, seed: int = 1, hours: int = 6) -> pd.DataFrame:
    """A CRM export as a user brings it: Won, Lost and still open leads, a creation and a close
    date, two columns sales fill in at the outcome, personal data and a form placeholder."""
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n)
    source = rng.choice(["Web", "Referral", "Event"], n)
    won = rng.random(n) < expit(visits - 3.5 + np.where(source == "Referral", 1.0, 0.0))
    still_open = rng.random(n) < 0.1
    status = np.where(still_open, rng.choice(["Open", "In progress"], n), np.where(won, "Won", "Lost"))
    created = pd.date_range("2024-01-01", periods=n, freq=f"{hours}h")
    closed = (created + pd.to_timedelta(rng.integers(5, 60, n), unit="D")).strftime("%Y-%m-%d")
    return pd.DataFrame(
        {
            "Lead ID": [f"L-{i:05d}" for i in range(n)],
            "Created Date": created.strftime("%Y-%m-%d %H:%M"),
            "Closed Date": np.where(still_open, "", closed),
            "Status": status,
            "Sales Notes": np.where(still_open, "", np.where(won, "signed", "no answer")),
            "Deal Size": np.where(won & ~still_open, rng.integers(1000, 9000, n), 0),
            "Source": source,
            "Industry": rng.choice(["Retail", "Software", "Banking", "Select"], n),
            "Employees": rng.integers(1, 300, n),
            "Web Visits": visits,
            "Email": [f"person{i}@example.com" for i in range(n)],
            "Phone": [f"+1 555 {i:07d}" for i in range(n)],
            "First Name": rng.choice(["Ada", "Alan", "Grace"], n),
        }
    )


def contract_of(written) -> dict:
    return data_section(written.text)["contract"]


# --------------------------------------------------------------------------- detection
def test_a_crm_export_gets_id_target_values_time_types_personal_data_and_its_leaks(tmp_path: Path) -> None:
    crm_export(hours=12).to_csv(tmp_path / "leads.csv", index=False)
    written = init_data_config([tmp_path / "leads.csv"], out=tmp_path / "conf" / "data")
    assert written.path == tmp_path / "conf" / "data" / "leads.yaml"
    data = data_section(written.path.read_text())
    contract = data["contract"]
    assert contract["id"] == "Lead ID" and contract["time"] == "Created Date" and "order" not in contract
    assert contract["target"] == "Status"
    assert (contract["positive"], contract["negative"]) == (["Won"], ["Lost"])
    assert sorted(contract["open"]) == ["In progress", "Open"]
    # filled in at the outcome: dropped, with the sentinel's evidence in the comment above each
    suspects = [entry.column for entry in written.proposal.suspects]
    assert sorted(suspects) == ["Deal Size", "Sales Notes"]
    assert {"Deal Size", "Sales Notes", "Closed Date"} <= set(contract["drop"])
    assert (
        "    # single-feature AUC 1.00; 100% of rows in levels that name the outcome (no_answer 0% "
        "positive,\n    # signed 100% positive)\n    - Sales Notes\n"
    ) in written.text
    assert "single-feature AUC 0.98; 100% of rows in value ranges that name the outcome (0 to" in written.text
    assert "a date other than the time column" in written.text
    assert contract["personal"] == ["Email", "Phone", "First Name"]
    assert contract["categorical"] == ["Source", "Industry"]
    assert contract["integer"] == ["Employees", "Web Visits"]
    assert data["missing_markers"] == ["Select"]
    assert data["table"] == {"format": "csv", "path": str(tmp_path / "leads.csv")}
    assert not written.text.startswith("# @package _global_")  # a year of rows: the default split
    assert "# 800 unique values, none missing: the id" in written.text
    assert "Checked through the contract: 800 of 800 rows accepted" in written.text


def test_a_semicolon_file_is_read_with_its_separator() -> None:
    text = 'Lead ID;Status;Notes\nL1;Won;"a, b, c"\nL2;Lost;"d, e"\nL3;Won;f\n'
    assert detect_separator(text) == (";", "3 fields on each of the first 4 lines")
    assert detect_separator("a,b\n1,2\n3,4\n") == (",", "2 fields on each of the first 3 lines")
    assert detect_separator("a\tb\tc\n1\t2\t3\n")[0] == "\t"
    assert detect_separator("a|b\n1|2\n")[0] == "|"


def test_a_semicolon_latin_1_export_is_proposed_with_sep_and_encoding(tmp_path: Path) -> None:
    leads = crm_export(300).assign(Source=lambda frame: frame["Source"].replace("Event", "Événement €"))
    path = tmp_path / "leads.csv"
    leads.to_csv(path, index=False, sep=";", encoding="cp1252")
    source = sniff_source(path)
    assert (source.format, source.sep, source.encoding) == ("csv", ";", "cp1252")
    assert source.notes[2].startswith("cp1252: byte 0xc9 on line ")
    written = init_data_config([path], out=tmp_path)
    assert data_section(written.text)["table"] == {
        "format": "csv",
        "path": str(path),
        "sep": ";",
        "encoding": "cp1252",
    }
    assert "Source" in contract_of(written)["categorical"]
    # a byte Windows-1252 does not define: Latin-1; a byte order mark: utf-8-sig
    (tmp_path / "latin.csv").write_bytes("a,b\nx,y\u0081\n".encode("latin-1"))
    assert sniff_source(tmp_path / "latin.csv").encoding == "latin-1"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbfa,b\n1,2\n")
    assert sniff_source(tmp_path / "bom.csv").encoding == "utf-8-sig"


def test_a_workbook_is_read_from_the_sheet_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "export.xlsx"
    leads = crm_export(300)
    leads["Created Date"] = pd.to_datetime(leads["Created Date"])  # real date cells
    with pd.ExcelWriter(path) as workbook:
        pd.DataFrame({"note": ["exported by the CRM"]}).to_excel(workbook, sheet_name="About", index=False)
        leads.to_excel(workbook, sheet_name="Leads", index=False)
    for sheet in ("Leads", "leads", "1"):
        written = init_data_config([path], out=tmp_path, sheet=sheet, force=True)
        data = data_section(written.text)
        assert data["table"] == {"format": "xlsx", "path": str(path), "sheet": "Leads"}
        assert data["contract"]["time"] == "Created Date" and data["contract"]["target"] == "Status"
    assert written.proposal.source.notes == ("xlsx", "sheet 'Leads' of 2 ('About' not read)")


def test_without_a_time_column_a_sequence_number_orders_the_rows_and_the_config_chooses_split_order(
    tmp_path: Path,
) -> None:
    leads = crm_export(600).drop(columns=["Created Date", "Closed Date"])
    leads.insert(1, "Lead Number", np.arange(9000, 9000 - len(leads), -1))  # the newest first
    leads.to_csv(tmp_path / "leads.csv", index=False)
    written = init_data_config([tmp_path / "leads.csv"], out=tmp_path / "configs" / "data")
    lines = written.text.splitlines()
    assert lines[0] == "# @package _global_"
    assert "defaults:\n  - override /split: order\n\ndata:\n  name: leads" in written.text
    contract = contract_of(written)
    assert contract["order"] == "Lead Number" and "time" not in contract
    assert "follow the rows backwards: the file lists the newest first" in written.text
    # composed as leadml-train would: the global package chooses split=order
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "data=leads"])
    assert cfg.split.kind == "order" and cfg.data.contract.order == "Lead Number"


def test_rows_in_date_order_are_ordered_by_row_and_shuffled_rows_not_at_all(tmp_path: Path) -> None:
    leads = crm_export(2000).drop(columns=["Created Date", "Closed Date", "Lead ID"])
    leads.insert(0, "month", pd.date_range("2022-01-01", periods=len(leads), freq="12h").strftime("%b"))
    leads.to_csv(tmp_path / "sorted.csv", index=False)
    written = init_data_config([tmp_path / "sorted.csv"], out=tmp_path)
    contract = contract_of(written)
    assert contract["id"] == "source_row" and contract["order"] == "source_row"
    evidence = " ".join(line.strip("# ") for line in written.text.splitlines())
    assert re.search(
        r"month comes in 3\d runs of its 12 values over 2,000 rows \(shuffled rows would", evidence
    )
    shuffled = leads.sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    written = init_data_config([tmp_path / "shuffled.csv"], out=tmp_path)
    assert "order" not in contract_of(written) and not written.text.startswith("# @package")
    assert "leadml-train splits the leads at random" in written.text


def test_target_values_it_cannot_place_go_under_open_and_say_so(tmp_path: Path) -> None:
    leads = crm_export(400)
    leads.loc[::25, "Status"] = "Parked"
    leads.to_csv(tmp_path / "leads.csv", index=False)
    contract = contract_of(written := init_data_config([tmp_path / "leads.csv"], out=tmp_path))
    assert sorted(contract["open"]) == ["In progress", "Open", "Parked"]
    assert "# unsure: 'Parked' under open (scored, never a label) because it names no outcome" in written.text


def test_numbers_written_as_text_missing_values_and_keys(tmp_path: Path) -> None:
    leads = crm_export(400)
    leads["Score"] = np.where(np.arange(400) % 10 == 0, "n/v", (np.arange(400) % 7).astype(str))
    leads["Days Since Contact"] = np.where(np.arange(400) % 3 == 0, -1, np.arange(400) % 50 + 1)
    leads["Customer Number"] = np.random.default_rng(0).permutation(400) + 10_000
    leads.to_csv(tmp_path / "leads.csv", index=False)
    written = init_data_config([tmp_path / "leads.csv"], out=tmp_path)
    contract = contract_of(written)
    assert data_section(written.text)["missing_markers"] == ["Select", "n/v"]  # n/v among numbers: missing
    assert "Score" in contract["integer"]
    assert "# Days Since Contact: [-1]  # -1 in 34% of its rows, every other value >= 0" in written.text
    # uncommented as the comment says, the proposal is a valid contract
    uncommented = written.text.replace("  # missing_values:", "  missing_values:").replace(
        "      # Days Since Contact:", "      Days Since Contact:"
    )
    assert flat_contract(data_section(uncommented)["contract"]).table.column(
        "Days Since Contact"
    ).missing_values == ("-1",)
    assert "Customer Number" in contract["drop"]  # unique numbers: a key, not a feature
    assert (
        "      - Customer Number  # unique whole numbers in every row: a key, not a feature" in written.text
    )


def test_a_header_line_that_is_data_is_noticed() -> None:
    assert header_problem(sample_records("1,2024-01-03,x\n2,2024-01-04,y\n3,2024-01-05,z\n", ",")) == (
        "2 of its 2 columns of numbers or dates hold a number or date there too"
    )
    assert header_problem(sample_records("id,created,x\n1,2024-01-04,y\n2,2024-01-05,z\n", ",")) is None


@pytest.mark.parametrize(
    "value",
    ["yes", "No", "on", "1", "1.5e3", "null", "a: b", "x #y", "${oops}", "[a]", "Lead Source", "-1", ""],
)
def test_every_name_and_value_reads_back_as_written(value: str) -> None:
    read = OmegaConf.to_container(
        OmegaConf.create(f"k: {yaml_scalar(value)}\nl: [{yaml_scalar(value)}]\n"), resolve=True
    )
    assert read == {"k": value, "l": [value]}


# --------------------------------------------------------------------------- errors
def _init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    return run_entry_point(cli.init, ["leadml-init", *argv])


@pytest.mark.parametrize(
    ("setup", "argv", "code", "message"),
    [
        (None, ["exports/leads.csv"], SourceMissingError.exit_code, "exports/leads.csv: no such file"),
        (None, ["exports"], LeadmlError.exit_code, "exports is a folder, not a file"),
        (
            "",
            ["exports/leads.csv"],
            ContractError.exit_code,
            "csv file exports/leads.csv is empty (no header row)",
        ),
        (
            "1,2024-01-03,x\n2,2024-01-04,y\n3,2024-01-05,z\n",
            ["exports/leads.csv"],
            LeadmlError.exit_code,
            "exports/leads.csv: the first line looks like data, not column names (2 of its 2 columns of "
            "numbers or dates hold a number or date there too): add a header line with the column names",
        ),
        (
            "id,colour\n1,red\n2,blue\n",
            ["exports/leads.csv"],
            LeadmlError.exit_code,
            "exports/leads.csv: no column looks like the outcome (2 to 5 values, named like status, "
            "converted, won, outcome, stage or y, or the only yes/no column): name it with --target COLUMN, "
            "or give the outcomes (won deals: the lead id and a date) as a second file",
        ),
        (
            "id,colour\n1,red\n2,blue\n",
            ["exports/leads.csv", "--sheet", "Leads"],
            LeadmlError.exit_code,
            "exports/leads.csv: --sheet is for an Excel workbook, and this is a csv file",
        ),
        (
            "id,colour\n1,red\n2,blue\n",
            ["exports/leads.csv", "--name", "my leads"],
            LeadmlError.exit_code,
            "--name 'my leads': use letters, digits, '_' and '-' (it names a file and a folder)",
        ),
        (
            "id,colour\n1,red\n2,blue\n",
            ["exports/leads.csv", "--target", "Status"],
            LeadmlError.exit_code,
            "--target 'Status' is not a column; columns: id, colour",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_file_with_its_exit_code(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: str | None,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    (tmp_path / "exports").mkdir()
    if setup is not None:
        (tmp_path / "exports" / "leads.csv").write_text(setup)
    exit_code, out, err = _init(tmp_path, monkeypatch, *argv)
    assert (exit_code, out) == (code, "")
    assert err.splitlines() == [f"leadml-init: error: {message}"]
    assert not (tmp_path / "conf").exists()


def test_an_existing_config_is_kept_unless_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exports").mkdir()
    crm_export(300).to_csv(tmp_path / "exports" / "leads.csv", index=False)
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "leads.yaml").write_text("# mine\n")
    code, out, err = _init(tmp_path, monkeypatch, "exports/leads.csv")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "leadml-init: error: conf/data/leads.yaml exists: give --force to overwrite it, or --name for "
        "another data set"
    ]
    assert (tmp_path / "conf" / "data" / "leads.yaml").read_text() == "# mine\n"
    code, out, err = _init(tmp_path, monkeypatch, "exports/leads.csv", "--force")
    assert (code, err) == (0, "")
    assert out.splitlines()[-2:] == [
        "init: wrote conf/data/leads.yaml",
        "init: train it with: leadml-train hydra.searchpath=[file://conf] data=leads",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "old.xls",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100,
            "exports/old.xls: .xls (Excel 97-2003) is not supported; save the workbook as .xlsx or CSV",
        ),
        (
            "leads.zip",
            b"PK\x03\x04" + b"\0" * 100,
            "exports/leads.zip is a zip archive: extract the file inside and give that",
        ),
    ],
)
def test_files_it_cannot_read_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes, message: str
) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / name).write_bytes(content)
    code, _, err = _init(tmp_path, monkeypatch, f"exports/{name}")
    assert code == 1 and err.splitlines() == [f"leadml-init: error: {message}"]


def test_an_unknown_sheet_names_the_sheets_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exports").mkdir()
    crm_export(50).to_excel(tmp_path / "exports" / "leads.xlsx", sheet_name="Leads", index=False)
    code, _, err = _init(tmp_path, monkeypatch, "exports/leads.xlsx", "--sheet", "Deals")
    assert code == 1
    assert err.splitlines() == [
        "leadml-init: error: xlsx file exports/leads.xlsx has no sheet 'Deals'; sheets present: 'Leads'"
    ]


@pytest.mark.parametrize(
    ("mqls", "deals", "argv", "message"),
    [
        (
            "mql_id,origin\nm1,web\nm2,ads\n",
            "mql_id,won_date\nm1,2024-02-01\n",
            [],
            "exports/mqls.csv: outcomes from a second file need this file's own time column (the horizon "
            "starts there), and none of its columns holds ISO 8601 dates",
        ),
        (
            "mql_id,first_contact_date\nm1,2024-01-01\nm2,2024-01-02\n",
            "deal,won_date\nd1,2024-02-01\n",
            [],
            "exports/won_deals.csv: no column holds the values of a unique column of the first file (its "
            "lead id), so it cannot label the leads",
        ),
        (
            "mql_id,first_contact_date\nm1,2024-01-01\nm2,2024-01-02\n",
            "mql_id,won\nm1,yes\n",
            [],
            "exports/won_deals.csv: no column holds ISO 8601 dates filled in every row: the outcome's date "
            "is needed to label leads within a horizon",
        ),
        (
            "mql_id,first_contact_date\nm1,2024-01-01\n",
            "mql_id,won_date\nm1,2024-02-01\n",
            ["--target", "won"],
            "--target and an outcomes file: the label comes from one of them, give either",
        ),
    ],
)
def test_outcomes_that_cannot_label_the_leads_say_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mqls: str, deals: str, argv: list[str], message: str
) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "mqls.csv").write_text(mqls)
    (tmp_path / "exports" / "won_deals.csv").write_text(deals)
    code, _, err = _init(tmp_path, monkeypatch, "exports/mqls.csv", "exports/won_deals.csv", *argv)
    assert code == 1 and err.splitlines() == [f"leadml-init: error: {message}"]


# --------------------------------------------------------------------------- the README's commands
def readme_init_commands() -> list[list[str]]:
    """The commands of the README's "Start from a file" block, as argument lists."""
    text = README.read_text()
    start = text.index("### Start from a file (`leadml-init`)")
    match = re.compile(r"```bash\n(.*?)```", re.S).search(text, start)
    assert match is not None
    return [shlex.split(line, comments=True) for line in match.group(1).splitlines() if line.strip()]


def mqls_and_won_deals(n: int = 3000, seed: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Marketing-qualified leads and the deals won from them (a second table, as Olist's funnel)."""
    rng = np.random.default_rng(seed)
    origin = rng.choice(["organic", "paid", "referral"], n)
    mqls = pd.DataFrame(
        {
            "mql_id": [f"m{i:05d}" for i in range(n)],
            "first_contact_date": pd.date_range("2023-01-01", periods=n, freq="5h").strftime("%Y-%m-%d"),
            "origin": origin,
        }
    )
    won = rng.random(n) < np.where(origin == "referral", 0.3, 0.1)
    days = rng.exponential(20, n).round(1)
    won_date = pd.to_datetime(mqls["first_contact_date"]) + pd.to_timedelta(days, unit="D")
    deals = pd.DataFrame(
        {
            "mql_id": mqls["mql_id"][won],
            "won_date": won_date[won].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "seller_id": [f"s{i}" for i in range(int(won.sum()))],
        }
    )
    return mqls, deals


@pytest.mark.slow
def test_the_readme_commands_write_configs_that_train_and_label_from_a_second_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports").mkdir()
    crm_export(3000, hours=5).to_csv(tmp_path / "exports" / "leads.csv", index=False)
    mqls, deals = mqls_and_won_deals()
    mqls.to_csv(tmp_path / "exports" / "mqls.csv", index=False)
    deals.to_csv(tmp_path / "exports" / "won_deals.csv", index=False)
    commands = readme_init_commands()
    assert [command[0] for command in commands] == [
        ".venv/bin/leadml-init",
        ".venv/bin/leadml-train",
        ".venv/bin/leadml-init",
    ]
    entry_points = {"leadml-init": cli.init, "leadml-train": cli.train}
    outputs = []
    for command in commands:
        program = Path(command[0]).name
        extra = QUICK if program == "leadml-train" else []  # the README's command, trained quickly
        with local_tracking():
            code, out, err = run_entry_point(entry_points[program], [program, *command[1:], *extra])
        assert code == 0, err
        outputs.append(out)
    assert outputs[0].splitlines()[-1] == (
        "init: train it with: leadml-train hydra.searchpath=[file://my_configs] data=leads"
    )
    assert "Sales Notes, Deal Size" in outputs[0] or "Deal Size, Sales Notes" in outputs[0]
    assert "gate: version 1 of leadml-leads" in outputs[1]
    assert "leakage sentinel: checked" in outputs[1] and "none flagged" in outputs[1]
    funnel = data_section((tmp_path / "my_configs" / "data" / "funnel.yaml").read_text())
    assert "target" not in funnel["contract"] and funnel["contract"]["id"] == "mql_id"
    assert funnel["outcomes"] == {
        "table": {"format": "csv", "path": str(tmp_path / "exports" / "won_deals.csv")},
        "id": "mql_id",
        "time": "won_date",
        "horizon_days": 90,
        "observed_from": None,
        "observed_until": None,
    }
    assert re.search(
        r"init: Checked through the contract: [\d,]+ of 3,000 rows accepted, [\d,]+ not labelled", outputs[2]
    )


# --------------------------------------------------------------------------- the public data sets
PUBLIC_SETS = {
    "x_education": (["x_education/Leads.csv"], ["Tags", "Lead Quality"]),
    "bank": (["bank_marketing/bank-full.csv"], ["duration"]),
    "olist": (
        [
            "olist_marketing_funnel/olist_marketing_qualified_leads_dataset.csv",
            "olist_marketing_funnel/olist_closed_deals_dataset.csv",
        ],
        [],
    ),
}


@pytest.mark.slow
@pytest.mark.public_data
@pytest.mark.skipif(not PUBLIC.exists(), reason=f"public data not found at {PUBLIC}")
@pytest.mark.parametrize("data", list(PUBLIC_SETS))
def test_init_on_a_public_set_writes_a_config_that_trains_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: str
) -> None:
    files, leaks = PUBLIC_SETS[data]
    monkeypatch.chdir(tmp_path)
    name = f"init_{data}"
    code, out, err = run_entry_point(
        cli.init,
        ["leadml-init", *(str(PUBLIC / file) for file in files), "--name", name, "--out", "configs/data"],
    )
    assert (code, err) == (0, ""), err
    text = (tmp_path / "configs" / "data" / f"{name}.yaml").read_text()
    contract = data_section(text)["contract"]
    dropped = [
        line.split("dropped: ")[1] for line in out.splitlines() if "after the outcome, dropped" in line
    ]
    assert dropped == ([", ".join(leaks)] if leaks else [])
    assert set(leaks) <= set(contract.get("drop", []))
    with local_tracking():
        code, out, err = run_entry_point(
            cli.train,
            [
                "leadml-train",
                "hydra.searchpath=[file://configs]",
                f"data={name}",
                f"paths.root={tmp_path}",
                *QUICK,
            ],
        )
    assert code == 0, err
    assert f"gate: version 1 of leadml-{name}" in out
    if data == "x_education":
        assert contract["order"] == "Lead Number" and contract["target"] == "Converted"
        assert "leakage sentinel: checked" in out and "none flagged" in out
    elif data == "bank":
        assert contract["order"] == "source_row" and contract["positive"] == ["yes"]
    else:
        assert data_section(text)["outcomes"]["observed_from"] == "2017-12-05"
        assert contract["time"] == "first_contact_date"
