"""Reading CSV, Parquet and SQL (a real SQLite file through SQLAlchemy), fingerprints, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from leadml.adapters.sources import (
    checked_spec,
    describe_source,
    fingerprint_source,
    mask_url,
    read_source,
    scrubbed,
    source_batches,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from leadml.data import schema as s
from leadml.data.contracts import REASON, SOURCE_ROW, IngestSettings, crm_contracts
from leadml.data.ingest import IngestResult, frame_fingerprint, ingest_crm
from leadml.data.validation import validate_table
from leadml.errors import ContractError, LeadmlError

SETTINGS = IngestSettings(reference_time="2024-06-01T00:00:00Z")
CONTRACTS = crm_contracts()


def typed_crm() -> dict[str, pd.DataFrame]:
    """A CRM export with native types, as a warehouse holds it; CSV gets its text form."""
    created = pd.Series(pd.to_datetime(["2024-01-01 09:00", "2024-01-02 09:30", "2024-01-03 10:00"]))
    created = created.dt.tz_localize("UTC")
    return {
        s.ACCOUNTS: pd.DataFrame({
            s.ACCOUNT_ID: ["A1", "A2"], s.COMPANY_NAME: ["Acme", "Globex"],
            s.INDUSTRY: ["Software", "retail"],
            s.EMPLOYEES: [120, 8], s.ANNUAL_REVENUE: [1.5e6, np.nan], s.COUNTRY: ["USA", "Germany"],
            s.FOUNDED_YEAR: [2001, 2015],
        }),
        s.LEADS: pd.DataFrame({
            s.LEAD_ID: ["L1", "L2", "L3"], s.CREATED_AT: created, s.ACCOUNT_ID: ["A1", "A2", "A1"],
            s.SOURCE: ["PPC", "Referral", "web organic"], s.COUNTRY: ["us", "de", "UK"],
            s.ESTIMATED_DEAL_VALUE: [1000.5, np.nan, 20.0], "browser": ["Chrome", "Firefox", None],
        }),
        s.OUTCOMES: pd.DataFrame({
            s.LEAD_ID: ["L1", "L2", "L999"], s.STATUS: ["won", "Closed Lost", "won"],
            s.CLOSED_AT: pd.Series(pd.to_datetime(["2024-03-01", "2024-02-01", "2024-02-01"], utc=True)),
            s.DEAL_VALUE: [5000.0, np.nan, 1.0],
        }),
        s.ACTIVITIES: pd.DataFrame({
            s.EVENT_ID: ["E1", "E2", "E3", "E1"], s.LEAD_ID: ["L1", "L2", "L999", "L1"],
            s.TIMESTAMP: pd.Series(pd.to_datetime(["2024-01-05 10:00", "2024-01-06 11:00", "2024-01-07 12:00",
                                                   "2024-01-05 10:00"], utc=True)),
            s.ACTIVITY_TYPE: ["page_view", "pageview", "call", "page_view"],
            s.PAGE_CATEGORY: ["pricing", "Docs", None, "pricing"],
        }),
    }  # fmt: skip


def as_csv_text(frame: pd.DataFrame) -> pd.DataFrame:
    """What a CRM's CSV export holds: ISO timestamps with offsets, plain numbers."""
    text = {}
    for column in frame.columns:
        values = frame[column]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
        text[column] = values
    return pd.DataFrame(text)


def write_sources(tmp_path: Path) -> dict[str, dict[str, dict]]:
    """The same CRM as CSV files, Parquet files, and tables of one SQLite file; specs per format."""
    database = tmp_path / "crm.sqlite"
    engine = sa.create_engine(f"sqlite:///{database}")
    specs: dict[str, dict[str, dict]] = {"csv": {}, "parquet": {}, "sql_table": {}, "sql_query": {}}
    for table, frame in typed_crm().items():
        as_csv_text(frame).to_csv(tmp_path / f"{table}.csv", index=False)
        frame.to_parquet(tmp_path / f"{table}.parquet", index=False)
        frame.to_sql(table, engine, index=False)
        specs["csv"][table] = {"format": "csv", "path": str(tmp_path / f"{table}.csv")}
        specs["parquet"][table] = {"format": "parquet", "path": str(tmp_path / f"{table}.parquet")}
        specs["sql_table"][table] = {"format": "sql", "url": f"sqlite:///{database}", "table": table}
        specs["sql_query"][table] = {"format": "sql", "url": f"sqlite:///{database}",
                                     "query": f"SELECT * FROM {table} ORDER BY rowid"}  # fmt: skip
    engine.dispose()
    return specs


def ingest_specs(specs: dict[str, dict]) -> IngestResult:
    raw = {table: read_source(spec) for table, spec in specs.items()}
    result = ingest_crm(raw, CONTRACTS, SETTINGS, enforce_bad_share=False,
                        sources={table: describe_source(spec) for table, spec in specs.items()})  # fmt: skip
    for report in result.reports.values():
        assert report.accepted_rows + report.quarantined_rows == report.input_rows
    return result


# --------------------------------------------------------------------------- reading
def test_csv_is_read_as_text_and_only_empty_strings_become_null(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("lead_id,employees,note\nL1,007,NA\nL2,,\n")
    frame = read_source({"format": "csv", "path": str(path)})
    assert frame["employees"].tolist() == ["007", np.nan]
    assert frame["note"].tolist() == ["NA", np.nan]  # "NA" is left to the contract's missing markers
    assert all(str(dtype) == "str" for dtype in frame.dtypes)


def test_csv_options_and_column_mapping(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text('"Lead ID";"Created";"y"\n"1";"2024-01-01";"yes"\n')
    spec = {"path": str(path), "sep": ";", "columns": {s.LEAD_ID: "Lead ID", s.CREATED_AT: "Created"}}
    frame = read_source(spec)
    assert list(frame.columns) == [s.LEAD_ID, s.CREATED_AT, "y"]
    assert describe_source(spec) == f"csv file {path}"


def test_broken_csv_rows_and_encodings_fail_loudly(tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("lead_id,created_at\nL1,2024-01-01,extra\n")
    with pytest.raises(LeadmlError, match=f"csv file {ragged} cannot be parsed: .*Expected 2 columns"):
        read_source({"path": str(ragged)})
    latin = tmp_path / "latin.csv"
    latin.write_bytes("lead_id;city\nL1;S\xe3o Paulo\n".encode("latin-1"))
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(latin), "sep": ";"})
    assert str(error.value) == (
        f"csv file {latin} cannot be parsed: it is not utf-8 text (byte 0xe3 on line 2); "
        "set encoding: latin-1 in the source (or the encoding it was saved in)"
    )
    frame = read_source({"path": str(latin), "sep": ";", "encoding": "latin-1"})
    assert frame["city"].tolist() == ["S\xe3o Paulo"]


def test_a_mapping_to_a_column_that_is_not_there_names_it(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("id,created\nL1,2024-01-01\n")
    with pytest.raises(ContractError) as error:
        read_source({"path": str(path), "columns": {s.LEAD_ID: "Lead ID"}})
    assert "Lead ID (for lead_id)" in str(error.value)
    assert str(path) in str(error.value)
    assert "present columns: id, created" in str(error.value)


def test_a_missing_required_column_names_the_file_and_the_column(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("lead_id,created\nL1,2024-01-01\n")
    spec = {"format": "csv", "path": str(path)}
    with pytest.raises(ContractError) as error:
        validate_table(read_source(spec), CONTRACTS[s.LEADS], SETTINGS, source=describe_source(spec))
    assert str(path) in str(error.value)
    assert "created_at" in str(error.value)
    assert "present columns: lead_id, created" in str(error.value)


def test_missing_files_and_bad_specs_raise_leadml_errors(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(LeadmlError, match=f"csv file not found: {missing}"):
        read_source({"format": "csv", "path": str(missing)})
    with pytest.raises(LeadmlError, match="parquet file not found"):
        read_source({"path": str(tmp_path / "nope.parquet")})
    with pytest.raises(LeadmlError, match="unknown source key"):
        read_source({"format": "csv", "path": str(missing), "delimiter": ";"})
    with pytest.raises(LeadmlError, match="exactly one of 'table' or 'query'"):
        read_source({"format": "sql", "url": "sqlite://"})
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LeadmlError, match="empty"):
        read_source({"path": str(tmp_path / "empty.csv")})


# --------------------------------------------------------------------------- files not as the spec says
@pytest.mark.parametrize(
    ("sep", "given", "expected"),
    [
        (
            ";",
            {},
            "read 1 column with sep ',' but the header looks separated by ';' "
            '("Lead ID;Created Date;Status..."): set sep: ";" in the source',
        ),
        (
            "\t",
            {},
            "read 1 column with sep ',' but the header looks separated by '\\t' "
            '("Lead ID\\tCreated Date\\tStatus..."): set sep: "\\t" in the source',
        ),
        (
            "|",
            {},
            "read 1 column with sep ',' but the header looks separated by '|' "
            '("Lead ID|Created Date|Status..."): set sep: "|" in the source',
        ),
        (
            ",",
            {"sep": ";"},
            "read 1 column with sep ';' but the header looks separated by ',' "
            '("Lead ID,Created Date,Status..."): set sep: "," in the source',
        ),
    ],
    ids=["semicolon", "tab", "pipe", "comma read with sep ;"],
)
def test_a_csv_separated_by_another_character_says_which_sep_to_set(tmp_path, sep, given, expected):
    path = tmp_path / "leads.csv"
    rows = [["Lead ID", "Created Date", "Status", "Source"], ["L1", "2024-01-01", "Won", "Web"]]
    path.write_text("".join(sep.join(row) + "\n" for row in rows))
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(path), **given})
    assert type(error.value) is LeadmlError  # exit 1, as any unreadable file; not a contract error
    assert str(error.value) == f"{path}: {expected}"


def test_a_value_holding_the_separator_does_not_hide_the_wrong_separator(tmp_path):
    # "Smith, John" makes the second record two fields where the header is one: the parser
    # stops on that record before any header check could run on what it read
    path = tmp_path / "leads.csv"
    path.write_text("Lead ID;Name;Status\nL1;Doe;Won\nL2;Smith, John;Lost\n")
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(path)})
    assert str(error.value) == (
        f"""{path}: read 1 column with sep ',' but the header looks separated by ';' """
        f"""("Lead ID;Name;Status"): set sep: ";" in the source"""
    )
    assert read_source({"path": str(path), "sep": ";"})["Name"].tolist() == ["Doe", "Smith, John"]


def test_a_one_column_csv_without_another_separator_is_read(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("Lead ID\nL1\nL2\n")
    assert read_source({"path": str(path)})["Lead ID"].tolist() == ["L1", "L2"]


def test_an_excel_workbook_read_as_csv_says_set_format_xlsx(tmp_path):
    workbook = tmp_path / "leads.xlsx"
    pd.DataFrame({"Lead ID": ["L1"], "Status": ["Won"]}).to_excel(workbook, index=False)
    renamed = tmp_path / "leads.csv"  # an export saved with the wrong suffix
    renamed.write_bytes(workbook.read_bytes())
    for spec in ({"format": "csv", "path": str(workbook)}, {"path": str(renamed)}):
        with pytest.raises(LeadmlError) as error:
            read_source(spec)
        assert str(error.value) == (
            f"{spec['path']} is an Excel workbook, not a CSV file: set format: xlsx in the source "
            "(and sheet: if not the first)"
        )


def test_an_old_xls_a_parquet_file_or_a_zip_archive_read_as_csv_says_what_it_is(tmp_path):
    xls = tmp_path / "old.csv"
    xls.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))  # an OLE compound file's header
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(xls)})
    assert str(error.value) == (
        f"{xls} is an old Excel workbook (.xls), not a CSV file: .xls is not supported; "
        "save it as .xlsx or CSV"
    )
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(tmp_path / "leads.xls")})
    assert (
        str(error.value) == "source: .xls (Excel 97-2003) is not supported; save the workbook as .xlsx or CSV"
    )
    parquet = tmp_path / "leads.csv"
    pd.DataFrame({"lead_id": ["L1"]}).to_parquet(parquet)
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(parquet)})
    assert (
        str(error.value) == f"{parquet} is a Parquet file, not a CSV file: set format: parquet in the source"
    )
    archive = tmp_path / "zipped.csv"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("leads.csv", "lead_id\nL1\n")
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(archive)})
    assert str(error.value) == (
        f"{archive} is a zip archive, not a CSV file: extract the CSV file and set path to it"
    )


def test_text_in_another_encoding_says_which_encoding_to_set(tmp_path):
    latin = tmp_path / "latin.csv"  # the undecodable byte far down: found by streaming, line counted
    latin.write_bytes(("lead_id,city\n" + "L0,Paris\n" * 150_000 + "L1,S\xe3o Paulo\n").encode("latin-1"))
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(latin)})
    assert str(error.value) == (
        f"csv file {latin} cannot be parsed: it is not utf-8 text (byte 0xe3 on line 150002); "
        "set encoding: latin-1 in the source (or the encoding it was saved in)"
    )
    assert read_source({"path": str(latin), "encoding": "latin-1"})["city"].iloc[-1] == "S\xe3o Paulo"
    utf16 = tmp_path / "unicode_text.csv"  # Excel's "Unicode text": UTF-16 and tab-separated
    utf16.write_bytes("lead_id\tcity\nL1\tS\xe3o Paulo\n".encode("utf-16"))
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(utf16)})
    assert str(error.value) == (
        f"csv file {utf16} cannot be parsed: it looks like UTF-16 text, not utf-8 (it starts with a UTF-16 "
        "byte order mark); set encoding: utf-16 in the source"
    )
    frame = read_source({"path": str(utf16), "encoding": "utf-16", "sep": "\t"})
    assert frame["city"].tolist() == ["S\xe3o Paulo"]
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(latin), "encoding": "latin-l"})
    assert str(error.value) == (
        f"csv file {latin}: unknown encoding 'latin-l'; set encoding: to a Python codec name such as "
        "utf-8, latin-1, cp1252 or utf-16"
    )


@pytest.mark.parametrize(
    ("codec", "set_to", "why"),
    [
        ("utf-16", "utf-16", "it starts with a UTF-16 byte order mark"),
        ("utf-16-le", "utf-16-le", "NUL bytes between its characters: UTF-16 without a mark"),
        ("utf-16-be", "utf-16-be", "NUL bytes between its characters: UTF-16 without a mark"),
        ("utf-32", "utf-32", "it starts with a UTF-32 byte order mark"),
        ("utf-32-le", "utf-32-le", "NUL bytes between its characters: UTF-32 without a mark"),
    ],
)
def test_wide_text_read_as_utf8_says_it_looks_like_utf16_or_32(tmp_path, codec, set_to, why):
    path = tmp_path / "leads.csv"  # comma-separated, many lines: the parser met a ragged record first
    path.write_bytes(("lead_id,source,city\n" + "L1,web,S\xe3o Paulo\n" * 20).encode(codec))
    for read in (read_source, lambda spec: list(source_batches(spec, 5))):
        with pytest.raises(LeadmlError) as error:
            read({"path": str(path)})
        assert str(error.value) == (
            f"csv file {path} cannot be parsed: it looks like {codec[:6].upper()} text, not utf-8 ({why}); "
            f"set encoding: {set_to} in the source"
        )
    assert read_source({"path": str(path), "encoding": set_to})["city"].tolist() == ["S\xe3o Paulo"] * 20


def test_a_header_naming_a_column_twice_is_refused_naming_both_positions(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("lead_id,source,city,source\nL1,web,Paris,email\n")
    for read in (read_source, lambda spec: list(source_batches(spec, 5))):
        with pytest.raises(LeadmlError) as error:
            read({"path": str(path)})
        assert str(error.value) == (
            f"csv file {path}: the header names column 'source' twice (columns 2 and 4); "
            "rename or remove one of them"
        )
    trailing = tmp_path / "export.csv"  # empty names of a spreadsheet's trailing separators: not names
    trailing.write_text("lead_id,source,,\nL1,web,,\n")
    assert list(read_source({"path": str(trailing)}).columns[:2]) == ["lead_id", "source"]


def test_an_unknown_encoding_is_refused_before_any_reader_naming_the_source(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes("lead_id,city\nL1,S\xe3o Paulo\n".encode("latin-1"))  # undecodable as well
    spec = {"path": str(path), "encoding": "nonsense-enc"}
    message = (
        f"csv file {path}: unknown encoding 'nonsense-enc'; set encoding: to a Python codec name such as "
        "utf-8, latin-1, cp1252 or utf-16"
    )
    for read in (read_source, lambda spec: list(source_batches(spec, 5))):
        with pytest.raises(LeadmlError) as error:
            read(spec)
        assert str(error.value) == message
    with pytest.raises(LeadmlError) as error:
        checked_spec(spec, "data.tables.leads")
    assert str(error.value) == f"data.tables.leads: {message}"


def test_a_folder_given_as_a_csv_file_is_one_line(tmp_path):
    folder = tmp_path / "leads.csv"
    folder.mkdir()
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(folder)})
    assert str(error.value) == f"csv file {folder} cannot be read: Is a directory"


# --------------------------------------------------------------------------- Excel
def write_workbook(path: Path, sheets: dict[str, pd.DataFrame]) -> Path:
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=False)
    return path


def two_sheets(tmp_path: Path) -> Path:
    leads = pd.DataFrame({
        "Lead ID": [1001, 1002, 1003],
        "Created Date": pd.to_datetime(["2024-01-01 09:30", "2024-01-02 10:00", None]),
        "Deal Size": [1500.5, None, 20.0],
        "Source": ["Web", "NA", None],
    })  # fmt: skip
    archive = pd.DataFrame({"Lead ID": [1], "Status": ["Lost"]})
    return write_workbook(tmp_path / "export.xlsx", {"Leads": leads, "Archive 2023": archive})


def test_xlsx_first_sheet_keeps_the_cell_values(tmp_path):
    path = two_sheets(tmp_path)
    frame = read_source({"path": str(path)})  # format inferred from the suffix, first sheet
    assert list(frame.columns) == ["Lead ID", "Created Date", "Deal Size", "Source"]
    assert frame["Lead ID"].tolist() == [1001, 1002, 1003]
    assert frame["Created Date"].tolist()[:2] == [
        pd.Timestamp("2024-01-01 09:30"),
        pd.Timestamp("2024-01-02 10:00"),
    ]
    assert frame["Created Date"].isna().tolist() == [False, False, True]
    assert frame["Deal Size"].tolist()[::2] == [1500.5, 20.0]
    assert frame["Source"].tolist() == ["Web", "NA", np.nan]  # "NA" is left to the missing markers
    assert describe_source({"path": str(path)}) == f"xlsx file {path}"


@pytest.mark.parametrize("sheet", ["Archive 2023", "archive 2023", 1])
def test_xlsx_named_or_numbered_sheet(tmp_path, sheet):
    path = two_sheets(tmp_path)
    frame = read_source({"format": "xlsx", "path": str(path), "sheet": sheet})
    assert frame.to_dict("list") == {"Lead ID": [1], "Status": ["Lost"]}


def test_a_missing_sheet_names_the_file_the_sheet_and_the_sheets_present(tmp_path):
    path = two_sheets(tmp_path)
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(path), "sheet": "Leads 2024"})
    assert (
        str(error.value)
        == f"xlsx file {path} has no sheet 'Leads 2024'; sheets present: 'Leads', 'Archive 2023'"
    )
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(path), "sheet": 2})
    assert str(error.value) == (
        f"xlsx file {path} has no sheet 2 (counting from 0); sheets present: 'Leads', 'Archive 2023'"
    )


def test_sheet_is_checked_with_the_spec(tmp_path):
    with pytest.raises(LeadmlError) as error:
        checked_spec({"path": "leads.csv", "sheet": "Leads"}, "data.table")
    assert str(error.value) == "data.table.sheet: a csv source has no sheets (sheet is for xlsx)"
    with pytest.raises(LeadmlError) as error:
        checked_spec({"path": "leads.xlsx", "sheet": True}, "data.table")
    assert str(error.value) == "data.table.sheet: True is neither a sheet name nor a 0-based sheet number"
    assert checked_spec({"path": "macros.XLSM"})["format"] == "xlsx"


def test_an_unreadable_workbook_is_one_line_naming_the_file(tmp_path):
    truncated = tmp_path / "truncated.xlsx"
    truncated.write_bytes(two_sheets(tmp_path).read_bytes()[:300])
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(truncated)})
    assert (
        str(error.value)
        == f"xlsx file {truncated} cannot be read as an Excel workbook: File is not a zip file"
    )
    text = tmp_path / "really_text.xlsx"
    text.write_text("Lead ID,Status\nL1,Won\n")
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(text)})
    assert str(error.value) == (
        f"xlsx file {text} is not an Excel workbook (an .xlsx file is a zip archive, this one is not): "
        "if it is CSV text, set format: csv in the source"
    )
    encrypted = tmp_path / "locked.xlsx"  # a password-protected .xlsx is an OLE file, like an .xls
    encrypted.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    with pytest.raises(LeadmlError) as error:
        read_source({"path": str(encrypted)})
    assert str(error.value) == (
        f"xlsx file {encrypted} is an old Excel workbook (.xls) or one saved with a password: neither is "
        "supported; save it as .xlsx without a password, or as CSV"
    )
    with pytest.raises(LeadmlError, match=f"xlsx file not found: {tmp_path / 'nope.xlsx'}"):
        read_source({"path": str(tmp_path / "nope.xlsx")})


def test_a_column_mixing_numbers_dates_and_text_is_read_as_text(tmp_path):
    cells = pd.DataFrame({
        "Web Visits": [12, "n/a", 3.0, None],
        "Last Call": [pd.Timestamp("2024-01-05 08:00"), "never", None, None],
        "Employees": [10, 20, None, 40],
    })  # fmt: skip
    path = write_workbook(tmp_path / "mixed.xlsx", {"Sheet1": cells})
    frame = read_source({"path": str(path)})
    assert frame["Web Visits"].tolist() == ["12", "n/a", "3", np.nan]  # as a CSV export shows them
    assert frame["Last Call"].tolist() == ["2024-01-05 08:00:00", "never", np.nan, np.nan]
    assert frame["Employees"].dtype == "float64"  # one kind of value: kept as read
    write_parquet_atomic(frame, tmp_path / "mixed.parquet")  # a mixed object column could not be


def test_xlsx_fingerprint_is_the_sha256_of_the_bytes(tmp_path):
    path = two_sheets(tmp_path)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert fingerprint_source({"path": str(path), "sheet": "Archive 2023"}) == expected


def test_csv_parquet_and_sqlite_table_and_query_give_the_same_result(tmp_path):
    results = {name: ingest_specs(specs) for name, specs in write_sources(tmp_path).items()}
    expected = results.pop("csv")
    assert expected.quarantines[s.OUTCOMES][REASON].tolist() == ["lead_id L999 not in leads"]
    assert expected.quarantines[s.ACTIVITIES][REASON].tolist() == [
        "lead_id L999 not in leads", "duplicate event_id E1, kept source row 1",
    ]  # fmt: skip
    sources = expected.tables[s.LEADS][s.SOURCE].astype(str).tolist()
    assert sources == ["paid_search", "referral", "web_organic"]
    for name, result in results.items():
        for table in s.CRM_TABLES:
            pd.testing.assert_frame_equal(result.tables[table], expected.tables[table], obj=f"{name} {table}")
            assert frame_fingerprint(result.tables[table]) == frame_fingerprint(expected.tables[table])
            got = result.quarantines[table][[SOURCE_ROW, REASON]]
            pd.testing.assert_frame_equal(got, expected.quarantines[table][[SOURCE_ROW, REASON]], obj=name)


def test_a_missing_table_or_database_file_names_the_url_and_table(tmp_path):
    database = tmp_path / "crm.sqlite"
    sa.create_engine(f"sqlite:///{database}").connect().close()
    with pytest.raises(LeadmlError) as error:
        read_source({"format": "sql", "url": f"sqlite:///{database}", "table": "leads"})
    assert str(error.value) == f"table leads not found in sqlite:///{database}"
    absent = tmp_path / "typo.sqlite"
    with pytest.raises(LeadmlError, match="database file not found"):
        read_source({"format": "sql", "url": f"sqlite:///{absent}", "table": "leads"})
    assert not absent.exists()  # SQLite must not have created it
    with pytest.raises(LeadmlError, match="no such table"):
        read_source({"format": "sql", "url": f"sqlite:///{database}", "query": "SELECT * FROM leads"})


def test_passwords_never_appear_in_messages():
    url = "postgresql://scorer:s3cret-pw@127.0.0.1:1/crm"
    assert mask_url(url) == "postgresql://scorer:***@127.0.0.1:1/crm"
    assert mask_url("not a url://scorer:s3cret-pw@host/x") == "not a url://scorer:***@host/x"
    spec = {"format": "sql", "url": url, "table": "leads"}
    assert "s3cret" not in describe_source(spec)
    with pytest.raises(LeadmlError) as error:  # no driver installed, or nothing listening on port 1
        read_source(spec)
    assert "s3cret" not in str(error.value)
    assert "scorer:***@127.0.0.1:1/crm" in str(error.value)
    driver_message = f"connection to {url} failed: password s3cret-pw rejected"
    assert "s3cret" not in scrubbed(driver_message, url)


# --------------------------------------------------------------------------- fingerprints
def test_file_fingerprint_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_bytes(b"lead_id\nL1\n" * 1000)
    assert fingerprint_source({"path": str(path)}) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_sql_fingerprint_is_stable_and_follows_the_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    engine = sa.create_engine(url)
    pd.DataFrame({"lead_id": ["L1", "L2"], "value": [1.5, None]}).to_sql("leads", engine, index=False)
    spec = {"url": url, "table": "leads"}
    first = fingerprint_source(spec)
    assert first == fingerprint_source(spec)
    assert first == fingerprint_source({"url": url, "query": "SELECT * FROM leads"})
    pd.DataFrame({"lead_id": ["L3"], "value": [2.0]}).to_sql("leads", engine, index=False, if_exists="append")
    engine.dispose()
    assert fingerprint_source(spec) != first


# --------------------------------------------------------------------------- writing
def test_atomic_writers_replace_files_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "out" / "leads.parquet"
    frame = pd.DataFrame({"lead_id": ["L1"], "at": pd.to_datetime(["2024-01-01"], utc=True)})
    write_parquet_atomic(frame, target)
    write_parquet_atomic(frame.assign(lead_id="L2"), target)
    assert pd.read_parquet(target)["lead_id"].tolist() == ["L2"]
    manifest = tmp_path / "out" / "manifest.json"
    write_json_atomic({"rows": np.int64(3), "at": pd.Timestamp("2024-01-01", tz="UTC")}, manifest)
    assert json.loads(manifest.read_text()) == {"rows": 3, "at": "2024-01-01T00:00:00+00:00"}
    assert sorted(os.listdir(tmp_path / "out")) == ["leads.parquet", "manifest.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    manifest = tmp_path / "manifest.json"
    write_json_atomic({"version": 1}, manifest)
    with pytest.raises(TypeError):
        write_json_atomic({"version": object()}, manifest)
    with pytest.raises(ValueError):
        write_json_atomic({"version": float("nan")}, manifest)
    assert json.loads(manifest.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == ["manifest.json"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_atomic_writes_get_the_umask_mode_like_every_other_output(tmp_path: Path, mask: int) -> None:
    """Not tempfile's private 0600: the ranked CSV and the run record are read as the HTML is."""
    before = os.umask(mask)
    try:
        written = [
            write_csv_atomic(pd.DataFrame({"a": [1]}), tmp_path / "ranked.csv"),
            write_json_atomic({"a": 1}, tmp_path / "_scoring_run.json"),
        ]
    finally:
        os.umask(before)
    assert {oct(path.stat().st_mode & 0o777) for path in written} == {oct(0o666 & ~mask)}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["_scoring_run.json", "ranked.csv"]
