"""A replica that cannot reach the audit database leaves HAProxy's rotation (deploy/haproxy/haproxy.cfg
checks /readyz): every evidence request is answered by the replica that can audit, none is refused."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time

import pytest

from tests.api.support import body, start_api_workers, stop_api_workers
from tests.deploy.lb import running_lb
from tests.servers import scratch_postgres

ACCESS_LINE = '"POST /v1/evidence HTTP/1.1"'


def _dead_dsn() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere"  # nothing listens there any more


def _get(port: int, method: str, path: str, data=None, headers=None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, data, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.services
def test_a_replica_that_cannot_audit_leaves_rotation(published, keys, consents, postgres_up, haproxy_bin, tmp_path):
    base = {**os.environ, "ZERODOC_HOME": str(published.home), "ZERODOC_API_RATE_PER_SEC": "0"}
    replicas = []
    with scratch_postgres() as dsn:
        try:
            logs = [tmp_path / "can-audit.log", tmp_path / "cannot-audit.log"]
            for log, audit in zip(logs, (dsn, _dead_dsn()), strict=True):
                replicas.append(start_api_workers({**base, "ZERODOC_AUDIT_DSN": audit}, log, workers=1, cli=True))
            status, answer = _get(replicas[1][1], "GET", "/readyz")
            assert status == 503 and "cannot be reached" in json.loads(answer)["reason"]
            assert _get(replicas[0][1], "GET", "/readyz")[0] == 200

            with running_lb(haproxy_bin, [port for _, port in replicas], tmp_path) as (lb_port, lb_log):
                deadline = time.monotonic() + 30  # 2 failed checks, 2 s apart
                while "api2 is DOWN" not in lb_log.read_text(errors="replace"):
                    assert time.monotonic() < deadline, lb_log.read_text(errors="replace")
                    time.sleep(0.2)
                assert "api1 is DOWN" not in lb_log.read_text(errors="replace")
                headers = {"Authorization": f"Bearer {keys['welfare-portal']}", "Content-Type": "application/json"}
                statuses = [_get(lb_port, "POST", "/v1/evidence", json.dumps(body()), headers)[0] for _ in range(40)]
            assert statuses == [200] * 40
            assert logs[0].read_text(errors="replace").count(ACCESS_LINE) == 40
            assert logs[1].read_text(errors="replace").count(ACCESS_LINE) == 0
        finally:
            for proc, _port in replicas:
                if proc.poll() is None:
                    stop_api_workers(proc)
