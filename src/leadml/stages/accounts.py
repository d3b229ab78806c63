"""The nightly account partition: the I/O around :func:`leadml.scoring.account_scores.score_accounts`.

After either engine has written the date's lead partition, its leads are rolled up into
``<score.accounts.output_dir>/as_of=YYYY-MM-DD/part-0.parquet`` (replaced whole and atomically, as
the lead partition is) and, with ``score.sql.url``, upserted to ``score.sql.account_table`` keyed
by (account key, as_of). The account of each lead comes from the ingested leads table (a CRM's
``account_id``); the trend from the previous night's account partition.
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
from leadml.data import schema as s
from leadml.errors import LeadmlError
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
        output = accounts.get("output_dir") or Path(score_cfg["output_dir"]) / "accounts"
        sql = score_cfg.get("sql") or {}
        table = sql.get("account_table")
        if sql.get("url") and table:
            sinks.check_identifier(str(table), "score.sql.account_table")
        return cls(enabled, Path(output), sql.get("url"), str(table) if table else None)


def roll_up_partition(
    sink: AccountSink,
    scorer: Any,
    partition: Path,
    interim_dir: Path,
    as_of: pd.Timestamp,
    steady_band: float,
) -> AccountNight | None:
    """Tonight's account rows of the written lead ``partition``; None when the model keeps no
    account state (a flat table, a model trained before accounts) or the leads have no account."""
    state = account_state(scorer)
    if not sink.enabled or not state:
        return None
    keys = account_keys(interim_dir, str(state["key"]))
    if keys is None:
        logger.info("accounts: the ingested leads have no %s column: no account rows", state["key"])
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


def account_keys(interim_dir: Path, key: str) -> pd.DataFrame | None:
    """``lead_id`` and the account ``key`` of every ingested lead (None: the leads have no such column)."""
    leads_file = interim_dir / f"{s.LEADS}.parquet"
    if not leads_file.exists() or key not in pq.read_schema(leads_file).names:
        return None
    return pd.read_parquet(leads_file, columns=[s.LEAD_ID, key])


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
