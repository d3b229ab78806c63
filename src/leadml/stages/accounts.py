"""The nightly account partition: the I/O around :func:`leadml.scoring.account_scores.score_accounts`.

After either engine has written the date's lead partition, its leads are rolled up into
``<score.accounts.output_dir>/as_of=YYYY-MM-DD/part-0.parquet`` (replaced whole and atomically, as
the lead partition is) and, with ``score.sql.url``, upserted to ``score.sql.account_table`` keyed
by (account key, as_of). The account of each lead comes from the ingested leads table (a CRM's
``account_id``, or a flat table's ``data.accounts``: :func:`lead_accounts`); the trend from the
previous night's account partition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from leadml.adapters import sinks
from leadml.adapters.layout import FLAT_TABLE, open_rows_file
from leadml.data import schema as s
from leadml.data.features import FLAT_KEY_COLUMNS, FREE_EMAIL_DOMAINS
from leadml.errors import LeadmlError, data_config_file
from leadml.modelling.accounts import email_domain_key
from leadml.modelling.reasons import GROUP_PREFIX
from leadml.scoring.account_scores import LEAD_COLUMNS, AccountNight, account_state, score_accounts
from leadml.scoring.scores import movement_words

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccountSink:
    """Where the account rows go: ``score.accounts`` and ``score.sql.account_table``."""

    enabled: bool
    output_dir: Path
    sql_url: str | None
    sql_table: str | None

    @classmethod
    def from_config(cls, score_cfg: Mapping[str, Any]) -> AccountSink:
        accounts = score_cfg.get("accounts") or {}
        enabled = accounts.get("enabled", True)
        if not isinstance(enabled, bool):
            raise LeadmlError(f"score.accounts.enabled must be true or false, got {enabled!r}")
        # beside the leads' partitions, never inside their folder (read as one data set, it would mix them)
        output = accounts.get("output_dir") or f"{score_cfg['output_dir']}-accounts"
        sql = score_cfg.get("sql") or {}
        table = sql.get("account_table")
        if sql.get("url") and table:
            sinks.check_identifier(str(table), "score.sql.account_table")
        return cls(enabled, Path(output), sql.get("url"), str(table) if table else None)


def roll_up_partition(
    sink: AccountSink,
    scorer: Any,
    partition: Path,
    data: Mapping[str, Any],
    interim_dir: Path,
    as_of: pd.Timestamp,
    steady_band: float,
) -> AccountNight | None:
    """Tonight's account rows of the written lead ``partition``; None when the model keeps no
    account state (a flat table without ``data.accounts``, a model trained before accounts) or
    the leads have no account."""
    state = account_state(scorer)
    if not sink.enabled or not state:
        return None
    keys = lead_accounts(data, interim_dir)
    if keys is None:
        logger.info("accounts: the ingested leads have no account: no account rows")
        return None
    before_dir = sinks.previous_partition_dir(sink.output_dir, as_of)
    before = sinks.read_scored_file(before_dir / sinks.PART_FILE) if before_dir is not None else None
    return score_accounts(
        partition_leads(partition),
        keys,
        state,
        before=before,
        words=movement_words(scorer),
        steady_band=steady_band,
    )


@dataclass(frozen=True)
class AccountSource:
    """Where a lead's account comes from (``data.accounts``): a CRM's ``account_id``; a flat
    table's column naming the account (``column``) or its e-mail addresses' domains (``email``)."""

    column: str | None = None
    email: str | None = None

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> AccountSource | None:
        """None: this data set's leads have no account (a flat table without ``data.accounts``)."""
        configured = data.get("accounts")
        if data.get("kind", "crm") != "flat":
            return cls(column=s.ACCOUNT_ID)
        if not configured:
            return None
        if not isinstance(configured, Mapping) or set(configured) - {"column", "email"}:
            raise LeadmlError(
                f"data.accounts must be {{column: <column naming the account>}} or {{email: <column of "
                f"e-mail addresses>}} in {data_config_file(data)}, got {configured!r}"
            )
        column, email = configured.get("column"), configured.get("email")
        if bool(column) == bool(email):
            raise LeadmlError(
                f"data.accounts needs exactly one of column or email in {data_config_file(data)}, "
                f"got {dict(configured)!r}"
            )
        return cls(column=str(column) if column else None, email=str(email) if email else None)

    @property
    def setting(self) -> str:
        return f"data.accounts.{'email' if self.email else 'column'}"


def lead_accounts(data: Mapping[str, Any], interim_dir: Path) -> pd.DataFrame | None:
    """``lead_id`` and ``account_id`` of every ingested lead, labelled and open (None: the data set's
    leads have no account: a flat table without ``data.accounts``, or CRM leads without
    ``account_id``). A flat table's ``account_id`` is its ``data.accounts.column``, or the domain of
    its ``data.accounts.email`` address (none for free-mail domains: a gmail.com address is no
    company); a column the table lacks is one line naming the setting and the file."""
    source = AccountSource.from_data(data)
    if source is None:
        return None
    column = source.email or source.column
    flat = data.get("kind") == "flat"
    # a flat table keeps its open leads apart from its labelled rows (FLAT_TABLE is "leads" too)
    paths = [interim_dir / f"{s.LEADS}.parquet"]
    if flat:
        paths.append(interim_dir / open_rows_file(FLAT_TABLE))
    frames = []
    for path in (p for p in paths if p.exists()):
        names = pq.read_schema(path).names
        if column not in names:
            if not flat:
                return None  # CRM leads without accounts: scored as leads only
            raise LeadmlError(
                f"{source.setting}={column}: {path} has no column {column!r} "
                f"(its columns: {', '.join(n for n in names if n not in FLAT_KEY_COLUMNS)[:300]})"
            )
        frames.append(pd.read_parquet(path, columns=[s.LEAD_ID, column]))
    if not frames:
        return None
    leads = pd.concat(frames, ignore_index=True)
    key = (
        email_domain_key(leads[column], FREE_EMAIL_DOMAINS)
        if source.email
        else leads[column].astype("string").str.strip().replace("", pd.NA)
    )
    return pd.DataFrame({s.LEAD_ID: leads[s.LEAD_ID].to_numpy(), s.ACCOUNT_ID: key.to_numpy(dtype=object)})


def partition_leads(partition: Path) -> pd.DataFrame:
    """The columns of a scored lead partition the roll-up reads, from every part file."""
    frames = []
    for path in sorted(partition.glob("part-*.parquet")):
        names = sinks.scored_file_columns(path)
        wanted = [c for c in names if c in LEAD_COLUMNS or c.startswith(GROUP_PREFIX)]
        frames.append(sinks.read_scored_file(path, columns=wanted))
    return pd.concat(frames, ignore_index=True)


def write_accounts(sink: AccountSink, night: AccountNight, as_of: pd.Timestamp) -> tuple[Path, int | None]:
    """The account partition written (atomically, replacing the date's) and the rows upserted to
    ``score.sql.account_table`` (None without a SQL sink or table)."""
    folder = sinks.write_partition(night.rows, sink.output_dir, as_of)
    if not (sink.sql_url and sink.sql_table):
        return folder, None
    table = night.rows[[c for c in night.rows.columns if not c.startswith(GROUP_PREFIX)]]
    upserted = sinks.upsert_frames(
        sink.sql_url, sink.sql_table, [table], keys=(night.key, s.AS_OF), what="score.sql.account_table"
    )
    return folder, upserted
