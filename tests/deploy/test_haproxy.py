"""deploy/haproxy/haproxy.cfg: valid for HAProxy and in step with the API it balances (routes, body limit, timeouts)."""

import re
import subprocess

from fastapi.testclient import TestClient

from tests.api.support import audit_records
from tests.deploy.lb import HAPROXY_CFG, SERVER_TEMPLATE, loopback_config
from zerodoc.api.app import MAX_BODY_BYTES, create_app

CFG = HAPROXY_CFG.read_text()


def _directive(name: str) -> list[str]:
    """The arguments of every line starting with `name` (comments dropped)."""
    return [line.strip()[len(name) :].strip() for line in CFG.splitlines() if line.strip().startswith(name + " ")]


def test_config_is_valid_for_haproxy(haproxy_bin, tmp_path):
    # As committed (replicas found by DNS at run time) and as the native test rewrites it.
    loopback = tmp_path / "loopback.cfg"
    loopback.write_text(loopback_config(18000, [18001, 18002]))
    for path in (HAPROXY_CFG, loopback):
        out = subprocess.run([haproxy_bin, "-c", "-f", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_health_check_asks_a_route_the_api_serves_without_auditing_it(published, keys):
    (send,) = _directive("http-check send")
    method, path = re.search(r"meth (\S+) uri (\S+)", send).groups()
    app = create_app(published, rate_per_sec=0)
    assert any(path == getattr(r, "path", None) and method in r.methods for r in app.routes), path
    audit = published.state_dir / "audit" / "evidence.log"
    with TestClient(app) as client:
        assert client.request(method, path).status_code == 200  # no key needed
        # A check every 2 s per replica must not land in the audit chain; /v1/health would.
        assert not audit.exists() or audit_records(audit) == []
        assert client.get("/v1/health").status_code == 200
    assert [r["path"] for r in audit_records(audit)] == ["/v1/health"]


def test_body_limit_and_its_answer_are_the_apis():
    (rule,) = [r for r in _directive("http-request return") if "req.body_size" in r]
    assert int(re.search(r"req\.body_size gt (\d+)", rule).group(1)) == MAX_BODY_BYTES
    body = re.search(r"string '(\{.*\})'", rule).group(1)
    # The same envelope and message the API's own 413 carries (zerodoc.api.app, ApiError body_too_large).
    assert body == (
        '{"error":{"code":"body_too_large","message":"request body larger than ' + str(MAX_BODY_BYTES) + ' bytes"}}'
    )
    assert "option http-buffer-request" in CFG  # without it a chunked body is not counted


def test_client_address_headers_are_set_not_appended():
    set_headers = dict(h.split(" ", 1) for h in _directive("http-request set-header"))
    assert set_headers["X-Forwarded-For"] == "%[src]" and set_headers["X-Real-IP"] == "%[src]"
    assert "Forwarded" in _directive("http-request del-header")
    # `option forwardfor` appends to what the client sent, which the client controls.
    assert "option forwardfor" not in CFG


def test_requests_already_sent_are_never_replayed():
    (retry_on,) = _directive("retry-on")
    assert retry_on.split() == ["conn-failure"]  # not empty-response / response-timeout: POSTs are not idempotent


def test_keep_alive_ends_at_the_lb_before_uvicorn_closes_it():
    from uvicorn.config import Config

    (keep_alive,) = _directive("timeout http-keep-alive")
    assert float(keep_alive.rstrip("s")) < Config(app="zerodoc.api.app:create_app").timeout_keep_alive


def test_replicas_come_from_one_server_template():
    (m,) = SERVER_TEMPLATE.finditer(CFG)
    assert m["host"] == "evidence-api" and int(m["slots"]) >= 2
