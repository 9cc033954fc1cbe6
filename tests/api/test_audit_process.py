"""Two uvicorn workers and their one audit process: kill -9 of the server loses no answered request's
record, and while the audit process is gone the API refuses with 503 instead of answering."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time

from zerodoc.audit.log import read_records, verify_chain

from .support import bearer, body, kill_mid_load, start_api_workers, stop_api_workers

UNAVAILABLE = {"error": {"code": "audit_unavailable", "message": "the request could not be recorded; try again later"}}


def _audit_pids(state) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            argv = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0") if entry.isdigit() else []
        except OSError:
            continue
        if b"zerodoc.audit.service" in argv and os.fsencode(state) in argv:
            found.append(int(entry))
    return found


def _env(published, **extra) -> dict[str, str]:
    env = {**os.environ, "ZERODOC_HOME": str(published.home), "ZERODOC_API_RATE_PER_SEC": "0", **extra}
    env.pop("ZERODOC_AUDIT_DSN", None)
    env.pop("AIRFLOW_CONN_ZERODOC_AUDIT", None)
    return env


def _post(port: int, key: str, **over) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {**bearer(key), "Content-Type": "application/json"}
        conn.request("POST", "/v1/evidence", json.dumps(body(**over)), headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_kill9_mid_load_loses_no_answered_request(published, keys, consents, audit_path, tmp_path):
    proc, port = start_api_workers(_env(published), tmp_path / "server.log")
    started = _audit_pids(published.state_dir)
    answered = kill_mid_load(proc, port, keys["welfare-portal"])  # the whole server, its audit process with it
    assert len(started) == 1  # started by a worker, shared by both

    time.sleep(0.2)
    assert _audit_pids(published.state_dir) == []  # it was in the server's process group
    assert {s for s, _ in answered} == {200, 403}
    assert len(answered) >= 100, f"only {len(answered)} answers before the kill"
    records = [r for r in read_records(audit_path) if r["path"] == "/v1/evidence"]
    recorded_refs = {r["consent_id"] for r in records if r["reason"] == "consent_missing"}
    lost = [ref for s, ref in answered if s == 403 and ref not in recorded_refs]
    print(f"kill -9 mid-load: answered {len(answered)}, audit records {len(records)}, lost {len(lost)}")
    assert lost == []  # matched request by request
    assert sum(1 for r in records if r["reason"] == "granted") >= sum(1 for s, _ in answered if s == 200)
    assert verify_chain(audit_path).ok


def test_the_api_refuses_while_a_supervised_audit_process_is_gone(published, keys, consents, audit_path, tmp_path):
    """ZERODOC_AUDIT_PROCESS=external: a supervisor runs it; the workers never start one themselves."""
    state = published.state_dir

    def start_audit() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "zerodoc.audit.service", "--state-dir", str(state)])
        deadline = time.monotonic() + 30
        while not (state / "audit" / "audit.sock").exists():
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        return p

    audit = start_audit()
    proc, port = start_api_workers(_env(published, ZERODOC_AUDIT_PROCESS="external"), tmp_path / "server.log")
    try:
        key = keys["welfare-portal"]
        assert _post(port, key)[0] == 200
        audit.kill()
        audit.wait()
        for _ in range(6):  # both workers, several times: refused, and nobody starts a new one
            assert _post(port, key) == (503, UNAVAILABLE)
        assert _audit_pids(state) == []
        audit = start_audit()
        deadline = time.monotonic() + 10
        while (status := _post(port, key)[0]) != 200:
            assert status == 503 and time.monotonic() < deadline
            time.sleep(0.1)
        answered = sum(1 for _ in range(20) if _post(port, key)[0] == 200)
        assert answered == 20
    finally:
        stop_api_workers(proc)
        audit.send_signal(signal.SIGTERM)
        audit.wait(timeout=30)
    granted = [r for r in read_records(audit_path) if r["reason"] == "granted"]
    refused = [r for r in read_records(audit_path) if r["reason"] == "audit_unavailable"]
    assert len(granted) == 1 + 1 + 20 and refused == []  # every 200 recorded; a 503 was never an answer
    assert verify_chain(audit_path).ok


def test_a_worker_starts_a_new_audit_process_after_a_kill(published, keys, consents, audit_path, tmp_path):
    state = published.state_dir
    proc, port = start_api_workers(_env(published), tmp_path / "server.log")
    try:
        key = keys["welfare-portal"]
        assert _post(port, key)[0] == 200
        (first,) = _audit_pids(state)
        os.kill(first, signal.SIGKILL)
        statuses = []  # a worker restarts it at most once a second (a crash loop must not fork-bomb)
        deadline = time.monotonic() + 15
        while statuses[-10:] != [200] * 10:
            status, answer = _post(port, key)
            assert status == 200 or answer == UNAVAILABLE
            statuses.append(status)
            assert time.monotonic() < deadline, statuses
            time.sleep(0.01)
        (second,) = _audit_pids(state)
        assert second != first
    finally:
        stop_api_workers(proc)
    assert sum(1 for r in read_records(audit_path) if r["reason"] == "granted") == 1 + statuses.count(200)
    assert verify_chain(audit_path).ok
