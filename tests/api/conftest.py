"""Fixtures: a data root with published datasets, registered consumers and a running app."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.consumers import add_consumer
from zerodoc.config import REPO_ROOT, Settings

from .support import income_table, publish, residence_table


@pytest.fixture
def cfg(zerodoc_home: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("ZERODOC_ACCESS_POLICY", str(REPO_ROOT / "config" / "access_policy.yml"))
    return Settings(home=zerodoc_home)


@pytest.fixture
def published(cfg: Settings) -> Settings:
    publish(cfg, "residence_v1", "20250630T000000", residence_table(cfg.pseudonym_key))
    publish(cfg, "income_v1", "20250630T000000", income_table(cfg.pseudonym_key))
    return cfg


@pytest.fixture
def keys(cfg: Settings) -> dict[str, str]:
    return {name: add_consumer(name, cfg) for name in ("welfare-portal", "youth-account-service")}


@pytest.fixture
def client(published: Settings, keys: dict[str, str]):
    with TestClient(create_app(published)) as c:
        yield c


@pytest.fixture
def audit_path(cfg: Settings) -> Path:
    return cfg.state_dir / "audit" / "evidence.log"
