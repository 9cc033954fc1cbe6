"""Proactive benefit notifications: write what would be sent, each notification exactly once.

Reads the CURRENT `benefit_notifications_v1` version, keeps the rows that became eligible on
that version's `as_of`, and appends those whose `notification_id` is not yet in the sent
ledger to the outbox. The outbox file for a date is rewritten whole and atomically, then the
ledger; a crash between the two is recovered on the retry, which counts every id already in
the outbox as sent (and records it in the ledger), so nothing is written to the outbox twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.fsutil import write_bytes_atomic, write_json_atomic
from zerodoc.publish import store

DATASET = "benefit_notifications_v1"


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


def _ledger(cfg: Settings) -> dict[str, str]:
    path = notifications_dir(cfg) / "sent.json"
    return json.loads(path.read_text()) if path.exists() else {}


def send_new_notifications(cfg: Settings | None = None) -> NotifyResult:
    import pyarrow.parquet as pq

    cfg = cfg or load_settings()
    version = store.current(DATASET, cfg)
    as_of = version.metadata["as_of"]
    table = pq.read_table(version.data_path,
                          columns=["notification_id", "subject_pseudonym", "programme", "rule_id", "reason",
                                   "eligible_on"])
    rows = [r for r in table.to_pylist() if str(r["eligible_on"]) == as_of]
    ledger = _ledger(cfg)
    outbox = notifications_dir(cfg) / "outbox" / f"{as_of}.jsonl"
    previous = [line for line in (outbox.read_text().splitlines() if outbox.exists() else []) if line]
    for line in previous:  # in the outbox but not the ledger: a crash came between the two writes
        sent = json.loads(line)
        ledger.setdefault(sent["notification_id"], sent["dataset_version"])
    fresh = [r for r in rows if r["notification_id"] not in ledger]
    lines = previous + [
        json.dumps({"notification_id": r["notification_id"], "recipient_pseudonym": r["subject_pseudonym"],
                    "programme": r["programme"], "rule_id": r["rule_id"], "reason": r["reason"],
                    "dataset_version": version.version}, ensure_ascii=False, sort_keys=True)
        for r in sorted(fresh, key=lambda r: r["notification_id"])
    ]
    write_bytes_atomic(outbox, ("\n".join(lines) + "\n").encode() if lines else b"")
    ledger.update({r["notification_id"]: version.version for r in fresh})
    write_json_atomic(notifications_dir(cfg) / "sent.json", ledger)
    return NotifyResult(version.version, as_of, len(rows), len(fresh), len(rows) - len(fresh), outbox)
