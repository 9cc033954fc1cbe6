"""The consent registry: which citizen allowed which consumer to see which datasets, why, and until when.

Stored in SQLite under ``state/consent.sqlite`` (WAL, synchronous=FULL: a recorded or revoked
consent survives a crash once the call returns). Subjects appear only as pseudonyms. Every API
worker process opens its own connection per thread; reads do not block each other.

Consents read by a connection are kept in memory for as long as SQLite's ``data_version`` of
that connection says nobody else committed (one cheap pragma per check instead of a query and
a JSON parse); a revocation by any process or thread empties the cache on the next check.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zerodoc.config import Settings

CONSENT_PREFIX = "cns_"
CACHE_MAX = 100_000  # consents kept per connection; the cache is emptied when full

SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    consent_id TEXT PRIMARY KEY,
    subject_pseudonym TEXT NOT NULL,
    consumer TEXT NOT NULL,
    purpose TEXT NOT NULL,
    datasets TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_to TEXT NOT NULL,
    revoked_at TEXT,
    recorded_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_subject ON consents (subject_pseudonym);
"""


class ConsentError(ValueError):
    """A consent cannot be recorded or revoked as asked; the message says why."""


@dataclass(frozen=True)
class Consent:
    consent_id: str
    subject_pseudonym: str
    consumer: str
    purpose: str
    datasets: tuple[str, ...]
    valid_from: str
    valid_to: str
    revoked_at: str | None
    recorded_by: str
    created_at: str


def consent_path(cfg: Settings) -> Path:
    return cfg.state_dir / "consent.sqlite"


def utc_iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """ISO 8601 with an explicit offset (or Z); naive times are refused rather than guessed."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None
    if ts is None or ts.tzinfo is None:
        raise ConsentError("timestamps must be ISO 8601 with a UTC offset, e.g. 2026-01-31T00:00:00Z")
    return ts.astimezone(UTC)


class ConsentRegistry:
    def __init__(self, cfg: Settings, watch: Any = None):
        self.path = consent_path(cfg)
        # A ChangeWatch covering the database's directory (zerodoc.api.watch): a commit by anyone
        # writes the -wal (or the database) file there, so no pragma is needed while nothing moved.
        self.watch = None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if watch is not None and watch.covers(self.path.parent):  # else: the pragma on every check
            self.watch = watch
        self._local = threading.local()
        con = self._con()
        con.executescript(SCHEMA)
        self.path.chmod(0o600)

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            self._local.con = con
            self._local.cache = {}
            self._local.version = None
            self._local.seen = None
        return con

    def _cache(self, con: sqlite3.Connection) -> dict[str, Consent]:
        """This connection's consent cache, emptied when another connection committed since."""
        local = self._local
        if self.watch is not None:
            generation = self.watch.generation()
            if generation == local.seen and len(local.cache) <= CACHE_MAX:
                return local.cache
            local.seen = generation  # read before the pragma: a commit after it moves the generation again
        version = con.execute("PRAGMA data_version").fetchone()[0]
        cache = self._local.cache
        if version != self._local.version or len(cache) > CACHE_MAX:
            cache.clear()
            self._local.version = version
        return cache

    def record(
        self,
        *,
        subject_pseudonym: str,
        consumer: str,
        purpose: str,
        datasets: list[str] | tuple[str, ...],
        valid_from: datetime,
        valid_to: datetime,
        recorded_by: str,
    ) -> Consent:
        consent = self._new(subject_pseudonym, consumer, purpose, datasets, valid_from, valid_to, recorded_by)
        self._insert(self._con(), consent)
        return consent

    def record_many(self, items: list[dict]) -> list[Consent]:
        """Record several consents in one transaction (one fsync); items take record()'s arguments."""
        consents = [self._new(**item) for item in items]
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            for c in consents:
                self._insert(con, c)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        return consents

    @staticmethod
    def _new(
        subject_pseudonym: str,
        consumer: str,
        purpose: str,
        datasets: list[str] | tuple[str, ...],
        valid_from: datetime,
        valid_to: datetime,
        recorded_by: str,
    ) -> Consent:
        if valid_to <= valid_from:
            raise ConsentError("valid_to must be after valid_from")
        if not datasets:
            raise ConsentError("datasets must name at least one dataset")
        return Consent(
            consent_id=CONSENT_PREFIX + secrets.token_urlsafe(18),
            subject_pseudonym=subject_pseudonym,
            consumer=consumer,
            purpose=purpose,
            datasets=tuple(sorted(set(datasets))),
            valid_from=utc_iso(valid_from),
            valid_to=utc_iso(valid_to),
            revoked_at=None,
            recorded_by=recorded_by,
            created_at=utc_iso(datetime.now(UTC)),
        )

    @staticmethod
    def _insert(con: sqlite3.Connection, consent: Consent) -> None:
        con.execute(
            "INSERT INTO consents VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            (
                consent.consent_id,
                consent.subject_pseudonym,
                consent.consumer,
                consent.purpose,
                json.dumps(list(consent.datasets)),
                consent.valid_from,
                consent.valid_to,
                consent.recorded_by,
                consent.created_at,
            ),
        )

    def get(self, consent_id: str) -> Consent | None:
        con = self._con()
        cache = self._cache(con)
        consent = cache.get(consent_id)
        if consent is None:
            consent = self._select(con, consent_id)
            if consent is not None:
                cache[consent_id] = consent
        return consent

    @staticmethod
    def _select(con: sqlite3.Connection, consent_id: str) -> Consent | None:
        row = con.execute(
            "SELECT consent_id, subject_pseudonym, consumer, purpose, datasets, valid_from, valid_to, "
            "revoked_at, recorded_by, created_at FROM consents WHERE consent_id = ?",
            (consent_id,),
        ).fetchone()
        if row is None:
            return None
        return Consent(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), *row[5:])

    def revoke(self, consent_id: str, subject_pseudonym: str) -> Consent:
        """Revoke a consent of this subject. Unknown and someone else's consents look the same."""
        consent = self.get(consent_id)
        if consent is None or not secrets.compare_digest(consent.subject_pseudonym, subject_pseudonym):
            raise ConsentError("no such consent for this subject")
        if consent.revoked_at is None:
            now = utc_iso(datetime.now(UTC))
            self._con().execute(
                "UPDATE consents SET revoked_at = ? WHERE consent_id = ? AND revoked_at IS NULL",
                (now, consent_id),
            )
            self._local.cache.clear()  # data_version only counts other connections' commits
            consent = self.get(consent_id)
            assert consent is not None
        return consent

    def check(
        self,
        consent_id: str,
        *,
        subject_pseudonym: str,
        consumer: str,
        purpose: str,
        dataset: str,
        now: datetime | None = None,
        stamp: str | None = None,
    ) -> str | None:
        """None when the consent covers this request; else the denial reason code.

        A consent that exists but belongs to another subject, consumer or purpose is reported
        as missing: the caller learns nothing about consents that are not theirs.
        """
        consent = self.get(consent_id)
        if (
            consent is None
            or consent.subject_pseudonym != subject_pseudonym
            or consent.consumer != consumer
            or consent.purpose != purpose
        ):
            return "consent_missing"
        if consent.revoked_at is not None:
            return "consent_revoked"
        if stamp is None:  # now as utc_iso text (to the second); the API passes its once-a-second text
            if now is None:
                raise TypeError("check() needs now or stamp")
            stamp = utc_iso(now)
        if not (consent.valid_from <= stamp < consent.valid_to):
            return "consent_expired"
        if dataset not in consent.datasets:
            return "consent_scope"
        return None
