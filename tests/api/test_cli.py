"""`zerodoc consumer rotate`, `zerodoc keys rotate|list` and `zerodoc evidence verify` for receiving agencies."""

from __future__ import annotations

import http.client
import json
import os

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from zerodoc.api.app import create_app
from zerodoc.api.cli import consumer_app, evidence_verify, keys_app
from zerodoc.api.consumers import add_consumer, authenticate, list_consumers, revoke_consumer, rotate_consumer

from .support import bearer, body, start_api_workers, stop_api_workers

runner = CliRunner()


def _verify_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(evidence_verify)
    return app


def test_rotate_issues_a_new_key_and_kills_the_old_one(cfg):
    old = add_consumer("welfare-portal", cfg)
    new = rotate_consumer("welfare-portal", cfg)
    assert authenticate(new, cfg).name == "welfare-portal"
    assert authenticate(old, cfg) is None
    assert list_consumers(cfg)[0].rotated_at is not None
    revoke_consumer("welfare-portal", cfg)
    out = runner.invoke(consumer_app, ["rotate", "welfare-portal"])
    assert out.exit_code == 1 and "revoked" in out.output


def test_cli_rotate_and_roles(cfg):
    added = runner.invoke(consumer_app, ["add", "citizen-portal", "--role", "citizen_service"])
    assert added.exit_code == 0, added.output
    first = added.stdout.strip().splitlines()[-1]
    rotated = runner.invoke(consumer_app, ["rotate", "citizen-portal"])
    assert rotated.exit_code == 0
    second = rotated.stdout.strip().splitlines()[-1]
    assert authenticate(first, cfg) is None and authenticate(second, cfg).role == "citizen_service"
    listed = runner.invoke(consumer_app, ["list"]).output
    assert "citizen_service" in listed and "key rotated" in listed and second not in listed
    assert runner.invoke(consumer_app, ["add", "x-y", "--role", "root"]).exit_code == 1
    assert runner.invoke(consumer_app, ["rotate", "ghost"]).exit_code == 1


def test_rotated_key_is_refused_by_a_running_server(client, keys, published):
    new = rotate_consumer("welfare-portal", published)
    assert client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).status_code == 401
    assert client.post("/v1/evidence", json=body(), headers=bearer(new)).status_code == 200


def test_signing_key_rotation_while_serving_and_evidence_verify(client, keys, published, tmp_path):
    h = bearer(keys["welfare-portal"])
    before = client.post("/v1/evidence", json=body(), headers=h).json()
    out = runner.invoke(keys_app, ["rotate"])
    assert out.exit_code == 0 and "signing with new key" in out.output
    after = client.post("/v1/evidence", json=body(), headers=h).json()
    assert after["kid"] != before["kid"]  # the running server switched without a restart
    listed = runner.invoke(keys_app, ["list"]).output
    assert f"{before['kid']}\t" in listed and "retired" in listed and f"{after['kid']}\t" in listed

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(client.get("/.well-known/jwks.json").text)
    for name, answer in (("before", before), ("after", after)):
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps(answer, ensure_ascii=False))
        res = runner.invoke(_verify_app(), [str(f), "--jwks", str(jwks_file)])
        assert res.exit_code == 0, res.output
        assert "VALID: residence from residence_v1 20250630T000000" in res.output

    forged = dict(
        before, evidence={**before["evidence"], "fields": {**before["evidence"]["fields"], "household_size": 9}}
    )
    f = tmp_path / "forged.json"
    f.write_text(json.dumps(forged))
    res = runner.invoke(_verify_app(), [str(f), "--jwks", str(jwks_file)])
    assert res.exit_code == 1 and "INVALID" in res.output
    res = runner.invoke(_verify_app(), [str(tmp_path / "missing.json"), "--jwks", str(jwks_file)])
    assert res.exit_code == 2


def test_evidence_verify_fetches_the_jwks_url(client, keys, tmp_path, monkeypatch):
    import httpx

    answer = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).json()
    jwks = client.get("/.well-known/jwks.json").json()
    f = tmp_path / "answer.json"
    f.write_text(json.dumps(answer))

    class _Resp:
        def raise_for_status(self):
            return None

        def json(self):
            return jwks

    monkeypatch.setattr(httpx, "get", lambda url, **kw: _Resp())
    res = runner.invoke(_verify_app(), [str(f), "--jwks", "https://zerodoc.example/.well-known/jwks.json"])
    assert res.exit_code == 0 and "VALID" in res.output


def test_old_answers_verify_with_a_fresh_server_after_rotation(published, keys, consents):
    from zerodoc.api.signing import rotate_signing_key, verify_evidence

    with TestClient(create_app(published, rate_per_sec=0)) as c:
        old = c.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"])).json()
    rotate_signing_key(published.state_dir)
    rotate_signing_key(published.state_dir)
    with TestClient(create_app(published, rate_per_sec=0)) as c:
        jwks = c.get("/.well-known/jwks.json").json()
    assert len(jwks["keys"]) == 3 and verify_evidence(old, jwks)


def _anonymous_statuses(port: int, forwarded_for: list[str]) -> list[int]:
    """One unauthenticated evidence request per entry, naming that client in X-Forwarded-For."""
    statuses = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for client in forwarded_for:
        conn.request("POST", "/v1/evidence", json.dumps(body()),
                     {"Content-Type": "application/json", "X-Forwarded-For": client})  # fmt: skip
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    return statuses


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        # The test client (127.0.0.1) is the trusted balancer: 10.0.0.1 spends its burst of 2, others have their own.
        ("127.0.0.1", [401, 401, 429, 401, 401]),
        # Not trusted: every request is 127.0.0.1's whatever the header says, so forging it buys no new bucket.
        (None, [401, 401, 429, 429, 429]),
    ],
)
def test_serve_trusts_x_forwarded_for_only_from_the_load_balancer(cfg, tmp_path, trusted, expected):
    """`zerodoc serve --forwarded-allow-ips` (compose passes the HAProxy address): unauthenticated callers behind
    the load balancer get a rate-limit bucket each instead of sharing the balancer's."""
    env = {**os.environ, "ZERODOC_HOME": str(cfg.home), "ZERODOC_API_RATE_PER_SEC": "0.001",
           "ZERODOC_API_RATE_BURST": "2"}  # fmt: skip
    for name in ("ZERODOC_API_RATE_REDIS_URL", "ZERODOC_API_FORWARDED_ALLOW_IPS"):
        env.pop(name, None)
    if trusted:
        env["ZERODOC_API_FORWARDED_ALLOW_IPS"] = trusted
    proc, port = start_api_workers(env, tmp_path / "serve.log", workers=1, cli=True)
    try:
        statuses = _anonymous_statuses(port, ["10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"])
    finally:
        stop_api_workers(proc)
    assert statuses == expected
