"""Read-only views for the auditor pages over $ZERODOC_HOME and the configured audit log: no writes, IDs masked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from zerodoc.audit.log import GroupCommitLog
from zerodoc.audit.reader import Browse, browse, configured_log
from zerodoc.config import Settings
from zerodoc.privacy import RRN_PATTERN

MASK = "[masked]"


def mask_text(text: str) -> str:
    """Anything shaped like a resident registration number keeps its birth date and sex digit only."""
    return RRN_PATTERN.sub(lambda m: m.group(0)[:6] + "-" + m.group(0).replace("-", "")[6] + "******", text)


def mask_token(value: str | None, keep: int = 6) -> str:
    """Pseudonyms and consent references: enough to correlate two rows, not enough to look one up."""
    if not value:
        return ""
    return value[:keep] + "…" if len(value) > keep else MASK


def validation_runs(cfg: Settings) -> list[dict[str, Any]]:
    """Every validation run's summary, newest logical date first."""
    runs = []
    for path in sorted((cfg.reports_dir / "validation").glob("*/summary.json")):
        try:
            s = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        s["_dir"] = path.parent.name
        s["_has_data_docs"] = (path.parent / "data_docs" / "index.html").is_file()
        runs.append(s)
    runs.sort(key=lambda s: (s.get("logical_date", ""), s.get("suite", "")), reverse=True)
    return runs


@dataclass(frozen=True)
class DatasetHistory:
    dataset: str
    current: str | None
    switches: list[dict[str, Any]]  # HISTORY.jsonl, oldest first; reason "rollback ..." marks a rollback
    versions: list[dict[str, Any]]  # metadata.json of every retained version, newest first


def publish_history(cfg: Settings) -> list[DatasetHistory]:
    out = []
    root = cfg.published_dir
    if not root.is_dir():
        return out
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            current = json.loads((ds_dir / "CURRENT.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            current = None
        switches = []
        hist = ds_dir / "HISTORY.jsonl"
        if hist.is_file():
            for line in hist.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        switches.append(json.loads(line))
                    except ValueError:
                        continue
        versions = []
        for meta in sorted((ds_dir / "versions").glob("*/metadata.json"), reverse=True):
            try:
                versions.append(json.loads(meta.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        out.append(DatasetHistory(ds_dir.name, current, switches, versions))
    return out


def evidence_log(cfg: Settings) -> GroupCommitLog:
    """The evidence audit log the API writes: PostgreSQL when configured, else $ZERODOC_HOME's file."""
    return configured_log(cfg.state_dir)


def access_records(
    cfg: Settings,
    consumer: str | None = None,
    purpose: str | None = None,
    dataset: str | None = None,
    date: str | None = None,
    limit: int = 500,
    log: GroupCommitLog | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """(newest matching records first, masked; total matching). Filters are exact; date is YYYY-MM-DD (UTC).

    Raises AuditError when the configured log cannot be read.
    """
    found, total = browse(log or evidence_log(cfg), Browse(consumer, purpose, dataset, date, limit))
    shown = []
    for rec in found:
        r = {k: (mask_text(v) if isinstance(v, str) else v) for k, v in rec.items()}
        r["subject_pseudonym"] = mask_token(rec.get("subject_pseudonym"))
        r["consent_id"] = mask_token(rec.get("consent_id"), keep=3)
        shown.append(r)
    return shown, total
