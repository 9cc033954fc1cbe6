"""Proactive benefit notifications: write what would be sent, each notification exactly once.

Reads the CURRENT `benefit_notifications_v1` version, keeps the rows that became eligible on
that version's `as_of`, and appends those whose `notification_id` is not yet in the sent
ledger to the outbox. The outbox file for a date is rewritten whole and atomically, then its
ledger file, which records the outbox size it indexed; an outbox whose ledger file is missing or
indexed another size (a crash came between the two) is indexed again before anything is chosen,
so nothing is written to an outbox twice.

The ledger is one Parquet file per outbox date (`ledger/<as_of>.parquet`: notification_id,
dataset_version), read together by DuckDB: a run costs the rows of the day's version plus an
anti join on the ids, never a Python object per notification (the first run at 10M persons
writes about a million) and never a rewrite of everything sent before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.fsutil import copy_atomic
from zerodoc.publish import store
from zerodoc.sql import sql_literal

DATASET = "benefit_notifications_v1"
# The outbox line, keys in this (sorted) order: what a sending service reads.
OUTBOX_COLUMNS = ("dataset_version", "notification_id", "programme", "reason", "recipient_pseudonym", "rule_id")
LEGACY_LEDGER = "sent.json"  # the ledger before it was Parquet: one JSON object {notification_id: version}
PRIVATE = 0o600  # recipients and their income reasons: the owner's only, as write_bytes_atomic makes files


@dataclass(frozen=True)
class NotifyResult:
    version: str
    as_of: str
    candidates: int
    sent: int
    already_sent: int
    outbox: Path


def notifications_dir(cfg: Settings) -> Path:
    return cfg.state_dir / "notifications"


def ledger_dir(cfg: Settings) -> Path:
    return notifications_dir(cfg) / "ledger"


def _read_outbox(path: Path) -> str:
    columns = ", ".join(f"{sql_literal(c)}: 'VARCHAR'" for c in OUTBOX_COLUMNS)
    return (f"read_json({sql_literal(str(path))}, format = 'newline_delimited', columns = {{{columns}}}, "
            "auto_detect = false)")


def _list(paths: list[Path]) -> str:
    return "[" + ", ".join(sql_literal(str(p)) for p in paths) + "]"


def _index_outbox(con, outbox: Path, cfg: Settings) -> None:
    """The outbox's ids as its ledger file, which records the outbox size it indexed."""
    size = outbox.stat().st_size
    copy_atomic(con, f"SELECT notification_id, dataset_version FROM {_read_outbox(outbox)}",
                ledger_dir(cfg) / f"{outbox.stem}.parquet",
                f"FORMAT parquet, KV_METADATA {{outbox_bytes: {sql_literal(str(size))}}}", mode=PRIVATE)


def _recover(con, cfg: Settings) -> None:
    """Bring the ledger up to what was written: an outbox whose ledger file is missing or indexed another
    size of it (a crash came between the two writes), and the old JSON ledger."""
    outboxes = sorted((notifications_dir(cfg) / "outbox").glob("*.jsonl"))
    ledgers = [ledger_dir(cfg) / f"{o.stem}.parquet" for o in outboxes]
    indexed: dict[str, int] = {}
    if any(p.exists() for p in ledgers):
        rows = con.execute(
            "SELECT file_name, CAST(value AS VARCHAR) FROM parquet_kv_metadata("
            f"{_list([p for p in ledgers if p.exists()])}) WHERE CAST(key AS VARCHAR) = 'outbox_bytes'"
        ).fetchall()
        indexed = {Path(name).stem: int(size) for name, size in rows}
    for outbox in outboxes:
        if indexed.get(outbox.stem) != outbox.stat().st_size:
            _index_outbox(con, outbox, cfg)
    legacy = notifications_dir(cfg) / LEGACY_LEDGER
    if legacy.exists():
        import pyarrow as pa

        sent = json.loads(legacy.read_text())
        con.register("legacy", pa.table({"notification_id": pa.array(list(sent), pa.string()),
                                         "dataset_version": pa.array(list(sent.values()), pa.string())}))
        copy_atomic(con, "SELECT * FROM legacy", ledger_dir(cfg) / "legacy-sent-json.parquet", "FORMAT parquet",
                    mode=PRIVATE)
        legacy.unlink()


def send_new_notifications(cfg: Settings | None = None) -> NotifyResult:
    import duckdb

    from zerodoc.transform.runner import duckdb_memory_limit

    cfg = cfg or load_settings()
    version = store.current(DATASET, cfg)
    as_of = version.metadata["as_of"]
    outbox = notifications_dir(cfg) / "outbox" / f"{as_of}.jsonl"
    with duckdb.connect(config={"memory_limit": duckdb_memory_limit()}) as con:
        _recover(con, cfg)
        con.execute(
            "CREATE TEMP TABLE candidates AS SELECT notification_id, subject_pseudonym, programme, rule_id, reason "
            f"FROM read_parquet({sql_literal(str(version.data_path))}) "
            f"WHERE CAST(eligible_on AS VARCHAR) = {sql_literal(as_of)}"
        )
        ledgers = sorted(ledger_dir(cfg).glob("*.parquet"))
        sent = (f"SELECT notification_id FROM read_parquet({_list(ledgers)})"
                if ledgers else "SELECT NULL::VARCHAR AS notification_id WHERE false")
        con.execute(
            f"CREATE TEMP TABLE fresh AS SELECT * FROM candidates c "
            f"WHERE NOT EXISTS (SELECT 1 FROM ({sent}) s WHERE s.notification_id = c.notification_id)"
        )
        (candidates,), (fresh,) = (con.execute(f"SELECT count(*) FROM {t}").fetchone() for t in ("candidates", "fresh"))
        if fresh or not outbox.exists():
            # The date's earlier lines first, as written, then today's new ones by id.
            previous = (f"SELECT 0 AS batch, {', '.join(OUTBOX_COLUMNS)} FROM {_read_outbox(outbox)}"
                        if outbox.exists() else None)
            new = (f"SELECT 1 AS batch, {sql_literal(version.version)} AS dataset_version, notification_id, "
                   "programme, reason, subject_pseudonym AS recipient_pseudonym, rule_id FROM fresh")
            lines = f"{previous} UNION ALL {new}" if previous else new
            copy_atomic(con, f"SELECT {', '.join(OUTBOX_COLUMNS)} FROM ({lines}) ORDER BY batch, notification_id",
                        outbox, "FORMAT json", mode=PRIVATE)
            _index_outbox(con, outbox, cfg)
    return NotifyResult(version.version, as_of, candidates, fresh, candidates - fresh, outbox)
