"""API keys of consuming services: only a SHA-256 of each key is stored, in state/consumers.json.

Each key holder has a role: ``consumer`` (asks for evidence), ``citizen_service`` (the
citizen-facing service: records and revokes consent, reads a citizen's access log) or
``auditor`` (reads the whole access log and checks the chain). A key works for its role only.

Why SHA-256 and not scrypt/argon2: keys are 256-bit random tokens we generate, so a stolen
hash cannot be brute-forced whatever the hash speed; slow KDFs protect low-entropy
passwords and would add tens of milliseconds of CPU to every request.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.fsutil import write_json_atomic

KEY_PREFIX = "zdk_"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
ROLES = ("consumer", "citizen_service", "auditor")


class ConsumerError(ValueError):
    """Bad consumer name, duplicate, or unknown consumer; the message says which."""


@dataclass(frozen=True)
class Consumer:
    name: str
    created_at: str
    revoked_at: str | None = None
    role: str = "consumer"
    rotated_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def consumers_path(cfg: Settings | None = None) -> Path:
    return (cfg or load_settings()).state_dir / "consumers.json"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"consumers": {}}
    return doc


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of consumers.json between CLI invocations."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_consumer(name: str, cfg: Settings | None = None, role: str = "consumer") -> str:
    """Register a consuming service; return its API key. The key is shown once and not stored.

    Adding a revoked consumer again issues it a new key (the old one stays dead).
    """
    if role not in ROLES:
        raise ConsumerError(f"role {role!r} must be one of {list(ROLES)}")
    if not NAME_PATTERN.match(name):
        raise ConsumerError(f"consumer name {name!r} must be 2-63 characters of lowercase letters, digits and '-'")
    path = consumers_path(cfg)
    with _locked(path):
        doc = _read(path)
        existing = doc["consumers"].get(name)
        if existing and existing.get("revoked_at") is None:
            raise ConsumerError(f"consumer {name!r} already exists; revoke it first to issue a new key")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        doc["consumers"][name] = {
            "key_sha256": hash_key(key),
            "created_at": _now(),
            "revoked_at": None,
            "role": role,
        }
        write_json_atomic(path, doc)
    return key


def rotate_consumer(name: str, cfg: Settings | None = None) -> str:
    """Issue an active consumer a new key; the old key stops working at once. Return the new key."""
    path = consumers_path(cfg)
    with _locked(path):
        doc = _read(path)
        entry = doc["consumers"].get(name)
        if entry is None:
            raise ConsumerError(f"no consumer named {name!r}")
        if entry.get("revoked_at") is not None:
            raise ConsumerError(f"consumer {name!r} is revoked; add it again to issue a new key")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        entry["key_sha256"] = hash_key(key)
        entry["rotated_at"] = _now()
        write_json_atomic(path, doc)
    return key


def revoke_consumer(name: str, cfg: Settings | None = None) -> None:
    path = consumers_path(cfg)
    with _locked(path):
        doc = _read(path)
        entry = doc["consumers"].get(name)
        if entry is None:
            raise ConsumerError(f"no consumer named {name!r}")
        if entry.get("revoked_at") is None:
            entry["revoked_at"] = _now()
            write_json_atomic(path, doc)


def list_consumers(cfg: Settings | None = None) -> list[Consumer]:
    doc = _read(consumers_path(cfg))
    return [_consumer(name, e) for name, e in sorted(doc["consumers"].items())]


def _consumer(name: str, e: dict[str, Any]) -> Consumer:
    return Consumer(name, e["created_at"], e.get("revoked_at"), e.get("role", "consumer"), e.get("rotated_at"))


class ConsumerRegistry:
    """Authenticates keys against consumers.json, re-reading it whenever the file changes.

    A stat per request is the whole cost of noticing a revocation made by the CLI while
    the server runs (write_json_atomic replaces the file, so the inode changes).
    """

    def __init__(self, cfg: Settings | None = None, watch: Any = None):
        self.path = consumers_path(cfg)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[tuple[str, str, Consumer]] = []
        self._active: dict[str, Consumer] = {}  # key hash -> its active holder, rebuilt with _entries
        # A ChangeWatch over the file's directory (zerodoc.api.watch): no stat while nothing changed there.
        self._watch = watch if watch is not None and watch.covers(self.path.parent) else None
        self._seen: int | None = None

    def _refresh(self) -> dict[str, Consumer]:
        if self._watch is not None:
            generation = self._watch.generation()
            if generation == self._seen:
                return self._active
            self._restat()
            self._seen = generation  # read before the stat: a change after it moves the generation again
            return self._active
        self._restat()
        return self._active

    def _restat(self) -> list[tuple[str, str, Consumer]]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                doc = _read(self.path)
                entries = [(name, e["key_sha256"], _consumer(name, e)) for name, e in doc["consumers"].items()]
                self._active = {stored: consumer for _name, stored, consumer in entries if consumer.active}
                self._entries = entries
                self._stamp = stamp
            return self._entries

    def authenticate(self, key: str | None) -> Consumer | None:
        """The active holder of key: its SHA-256 looked up among the active keys' hashes.

        A dict lookup, not a constant-time compare against each entry: what its timing could tell
        depends on the SHA-256 of the presented key, which a caller cannot steer towards a stored one.
        """
        if not key:
            return None
        return self._refresh().get(hash_key(key))


def authenticate(key: str | None, cfg: Settings | None = None) -> Consumer | None:
    """The active consumer holding this API key, or None (unknown, wrong or revoked key)."""
    return ConsumerRegistry(cfg).authenticate(key)
