"""Runtime settings, read from the environment only (never from code constants)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(RuntimeError):
    """A required setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    home: Path
    repo: Path = REPO_ROOT

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("ZERODOC_HOME", REPO_ROOT / "var")).resolve()
        return cls(home=home)

    # ---- zones -------------------------------------------------------------
    @property
    def sources_dir(self) -> Path:
        """File-based stand-ins for agency systems (the embedded default)."""
        return self.home / "sources"

    @property
    def raw_dir(self) -> Path:
        return self.home / "raw"

    @property
    def validated_dir(self) -> Path:
        return self.home / "validated"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse" / "zerodoc.duckdb"

    @property
    def published_dir(self) -> Path:
        return self.home / "published"

    @property
    def state_dir(self) -> Path:
        """API keys, audit log, signing keys: operational state, never in git."""
        return self.home / "state"

    # ---- repository files --------------------------------------------------
    @property
    def expectations_dir(self) -> Path:
        return self.repo / "expectations"

    @property
    def dbt_project_dir(self) -> Path:
        return self.repo / "dbt_project"

    @property
    def config_dir(self) -> Path:
        return self.repo / "config"

    @cached_property
    def pseudonym_key(self) -> bytes:
        return pseudonym_key_from_env()


def pseudonym_key_from_env() -> bytes:
    key = os.environ.get("ZERODOC_PSEUDONYM_KEY", "")
    if len(key) < 16:
        raise ConfigError(
            "ZERODOC_PSEUDONYM_KEY is missing or shorter than 16 characters. "
            "Set it in the environment (see .env.example); `make run` creates a local .env with a random key."
        )
    return key.encode()


def settings() -> Settings:
    return Settings.from_env()


@contextmanager
def restored_environ(*keys: str) -> Iterator[None]:
    """Put `keys` of os.environ back as they were (set or unset) when the block ends."""
    saved = {k: os.environ.get(k) for k in keys}
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
