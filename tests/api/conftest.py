"""Fixtures: a data root with published datasets, registered consumers and a running app."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.consent import ConsentRegistry
from zerodoc.api.consumers import add_consumer
from zerodoc.config import REPO_ROOT, Settings
from zerodoc.privacy import pseudonymize

from .support import ALICE, BOB, CONSENTS, NOBODY, income_table, publish, residence_table

# The default consumer per purpose and the datasets its consents cover.
CONSENT_SCOPES = {
    "basic_livelihood_application": ("welfare-portal", ["residence_v1", "income_v1"]),
    "youth_leap_account_eligibility": ("youth-account-service", ["income_v1"]),
    "crime_victim_support": ("victim-support-center", ["victim_support_eligibility_v1"]),
}


@pytest.fixture
def cfg(zerodoc_home: Path, monkeypatch: pytest.MonkeyPatch):
    """A data root on tmpfs when there is one: every audited request fsyncs, and a disk fsync
    costs milliseconds; the code path is the same, only the test run is faster."""
    monkeypatch.setenv("ZERODOC_ACCESS_POLICY", str(REPO_ROOT / "config" / "access_policy.yml"))
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield Settings(home=zerodoc_home)
        return
    home = Path(tempfile.mkdtemp(prefix="zerodoc-api-test-", dir=shm))
    monkeypatch.setenv("ZERODOC_HOME", str(home))
    try:
        yield Settings(home=home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def published(cfg: Settings) -> Settings:
    publish(cfg, "residence_v1", "20250630T000000", residence_table(cfg.pseudonym_key))
    publish(cfg, "income_v1", "20250630T000000", income_table(cfg.pseudonym_key))
    return cfg


@pytest.fixture
def keys(cfg: Settings) -> dict[str, str]:
    out = {
        name: add_consumer(name, cfg) for name in ("welfare-portal", "youth-account-service", "victim-support-center")
    }
    out["citizen-portal"] = add_consumer("citizen-portal", cfg, role="citizen_service")
    out["audit-office"] = add_consumer("audit-office", cfg, role="auditor")
    return out


@pytest.fixture
def consents(cfg: Settings):
    """Valid consents of ALICE, BOB and NOBODY for each purpose's default consumer."""
    registry = ConsentRegistry(cfg)
    now = datetime.now(UTC)
    CONSENTS.clear()
    for subject in (ALICE, BOB, NOBODY):
        for purpose, (consumer, datasets) in CONSENT_SCOPES.items():
            c = registry.record(
                subject_pseudonym=pseudonymize(subject, cfg.pseudonym_key),
                consumer=consumer,
                purpose=purpose,
                datasets=datasets,
                valid_from=now - timedelta(days=1),
                valid_to=now + timedelta(days=30),
                recorded_by="test",
            )
            CONSENTS[(subject, purpose)] = c.consent_id
    yield registry
    CONSENTS.clear()


@pytest.fixture
def client(published: Settings, keys: dict[str, str], consents):
    # Rate limit off here: tests/api/test_abuse.py checks it with its own app.
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        yield c


@pytest.fixture
def audit_path(cfg: Settings) -> Path:
    return cfg.state_dir / "audit" / "evidence.log"
