"""API keys: hashed at rest, shown once, revocable; and the `zerodoc consumer` commands."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from zerodoc.api.cli import consumer_app
from zerodoc.api.consumers import (
    ConsumerError,
    ConsumerRegistry,
    add_consumer,
    authenticate,
    consumers_path,
    list_consumers,
    revoke_consumer,
    rotate_consumer,
)
from zerodoc.api.watch import ChangeWatch


def test_only_a_hash_of_the_key_is_stored(cfg):
    key = add_consumer("welfare-portal", cfg)
    text = consumers_path(cfg).read_text()
    assert key not in text
    assert key.startswith("zdk_") and len(key) > 40
    assert json.loads(text)["consumers"]["welfare-portal"]["revoked_at"] is None
    assert oct(consumers_path(cfg).stat().st_mode & 0o777) == "0o600"


def test_authenticate_and_revoke(cfg):
    key = add_consumer("welfare-portal", cfg)
    other = add_consumer("youth-account-service", cfg)
    assert authenticate(key, cfg).name == "welfare-portal"
    assert authenticate(other, cfg).name == "youth-account-service"
    assert authenticate(key + "x", cfg) is None
    assert authenticate("", cfg) is None and authenticate(None, cfg) is None
    revoke_consumer("welfare-portal", cfg)
    assert authenticate(key, cfg) is None
    assert authenticate(other, cfg) is not None
    # Re-adding a revoked consumer issues a new key; the old one stays dead.
    new = add_consumer("welfare-portal", cfg)
    assert authenticate(new, cfg).name == "welfare-portal" and authenticate(key, cfg) is None


@pytest.mark.parametrize("watched", [True, False])
def test_one_registry_sees_revocations_and_rotations_at_once(cfg, watched):
    """The server's registry (one per worker, kept for its life): what the CLI changes applies to the next request."""
    key = add_consumer("welfare-portal", cfg)
    auditor = add_consumer("audit-office", cfg, role="auditor")
    registry = ConsumerRegistry(cfg, watch=ChangeWatch([cfg.state_dir]) if watched else None)
    assert registry.authenticate(key).name == "welfare-portal"
    assert registry.authenticate(auditor).role == "auditor"
    assert registry.authenticate(key[:-1]) is None and registry.authenticate("") is None
    new = rotate_consumer("welfare-portal", cfg)
    assert registry.authenticate(key) is None and registry.authenticate(new).name == "welfare-portal"
    revoke_consumer("welfare-portal", cfg)
    assert registry.authenticate(new) is None
    assert registry.authenticate(auditor).name == "audit-office"


def test_bad_names_duplicates_and_unknowns(cfg):
    with pytest.raises(ConsumerError, match="lowercase"):
        add_consumer("Welfare Portal", cfg)
    add_consumer("welfare-portal", cfg)
    with pytest.raises(ConsumerError, match="already exists"):
        add_consumer("welfare-portal", cfg)
    with pytest.raises(ConsumerError, match="no consumer named 'ghost'"):
        revoke_consumer("ghost", cfg)


def test_cli_add_list_revoke(cfg):
    runner = CliRunner()
    added = runner.invoke(consumer_app, ["add", "welfare-portal"])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    assert authenticate(key, cfg).name == "welfare-portal"
    listed = runner.invoke(consumer_app, ["list"])
    assert "welfare-portal" in listed.output and "active" in listed.output and key not in listed.output
    assert runner.invoke(consumer_app, ["revoke", "welfare-portal"]).exit_code == 0
    assert "revoked" in runner.invoke(consumer_app, ["list"]).output
    assert authenticate(key, cfg) is None
    assert runner.invoke(consumer_app, ["revoke", "ghost"]).exit_code == 1
    assert [c.name for c in list_consumers(cfg)] == ["welfare-portal"]
