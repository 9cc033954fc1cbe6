"""The rate limit holds per consumer across all uvicorn workers, and every 429 is audited.

These are the host's buckets (the default); tests/api/test_ratelimit_redis.py has the Redis ones.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

import pytest

from zerodoc.api import ratelimit
from zerodoc.api.ratelimit import REDIS_URL_ENV, SharedRateLimiter

from .support import audit_records, body, start_api_workers, stop_api_workers


@pytest.fixture(autouse=True)
def _host_buckets(monkeypatch):
    """A Redis URL in the developer's environment must not turn these into Redis tests."""
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)


def test_buckets_refill_and_are_shared_by_every_limiter_on_the_file(tmp_path):
    now = [100.0]
    path = tmp_path / "buckets.bin"
    first = SharedRateLimiter(path, rate=2, burst=2, clock=lambda: now[0])
    assert first.backend is first.host
    second = SharedRateLimiter(path, rate=2, burst=2, clock=lambda: now[0])  # another worker
    assert first.take("a") is None
    assert second.take("a") is None
    assert first.take("a") == pytest.approx(0.5)
    assert second.take("a") == pytest.approx(0.5)
    assert second.take("b") is None  # another holder, another bucket
    now[0] = 100.5
    assert second.take("a") is None
    assert first.take("a") == pytest.approx(0.5)
    now[0] = 50.0  # CLOCK_MONOTONIC restarted (reboot): stored times lie in the future
    assert first.take("a") is None and first.take("a") is None and first.take("a") is not None
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_full_probe_window_reuses_idle_then_least_recent_slots(tmp_path, monkeypatch):
    monkeypatch.setattr(ratelimit, "SLOTS", 1)
    monkeypatch.setattr(ratelimit, "PROBE", 1)
    monkeypatch.setattr(ratelimit, "FILE_SIZE", ratelimit.HEADER_SIZE + ratelimit.SLOT.size)
    now = [0.0]
    limiter = SharedRateLimiter(tmp_path / "b.bin", rate=1, burst=1, clock=lambda: now[0])
    assert limiter.take("a") is None and limiter.take("a") == pytest.approx(1.0)
    # One slot, held by an active holder: a newcomer takes it over with a full bucket.
    assert limiter.take("b") is None
    # "a" lost its slot; it comes back full (it can only ever gain, never lose, tokens this way).
    assert limiter.take("a") is None


def test_disabled_limiter_creates_nothing(tmp_path):
    limiter = SharedRateLimiter(tmp_path / "buckets.bin", rate=0, burst=1)
    assert limiter.take("a") is None
    assert not (tmp_path / "buckets.bin").exists()


def _workers(supervisor: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor and b"spawn_main" in cmdline:
            found.append(int(entry))
    return sorted(found)


def _sockets(pid: int) -> int:
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(fd_dir / fd).startswith("socket:")
        except OSError:
            continue
    return count


BURST = 20
CONNECTIONS = 24
MAX_CONNECTIONS = 240
ROUNDS = 3


def test_two_workers_enforce_one_limit_per_consumer(published, keys, consents, audit_path, tmp_path):
    env = {
        **os.environ,
        "ZERODOC_HOME": str(published.home),
        "ZERODOC_API_RATE_PER_SEC": "0.01",  # refills one token per 100 s: the burst is all there is
        "ZERODOC_API_RATE_BURST": str(BURST),
    }
    env.pop("ZERODOC_AUDIT_DSN", None)
    proc, port = start_api_workers(env, tmp_path / "server.log")
    try:
        workers = _workers(proc.pid)
        assert len(workers) == 2, workers
        before = {pid: _sockets(pid) for pid in workers}
        conns: list[http.client.HTTPConnection] = []

        def accepted() -> dict[int, int]:
            return {pid: _sockets(pid) - before[pid] for pid in workers}

        # Open connections until both workers hold some (on a loaded machine one worker can win
        # many accepts in a row), every one of them accepted by a worker.
        deadline = time.monotonic() + 60
        while True:
            while len(conns) < CONNECTIONS or min(accepted().values()) == 0:
                assert len(conns) < MAX_CONNECTIONS and time.monotonic() < deadline, accepted()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.connect()
                conns.append(c)
                time.sleep(0.02)  # let either worker's accept win this one
            if sum(accepted().values()) == len(conns):
                break
            assert time.monotonic() < deadline, (accepted(), len(conns))
            time.sleep(0.1)
        # Both workers hold connections: a per-process limit would let up to 2 x BURST through.
        assert all(n > 0 for n in accepted().values())

        statuses: list[int] = []
        lock = threading.Lock()

        def send(c: http.client.HTTPConnection) -> None:
            for _ in range(ROUNDS):
                c.request(
                    "POST",
                    "/v1/evidence",
                    json.dumps(body()),
                    {"Authorization": f"Bearer {keys['welfare-portal']}", "Content-Type": "application/json"},
                )
                r = c.getresponse()
                r.read()
                with lock:
                    statuses.append(r.status)

        threads = [threading.Thread(target=send, args=(c,)) for c in conns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in conns:
            c.close()
    finally:
        stop_api_workers(proc)

    total = len(conns) * ROUNDS
    assert (statuses.count(200), statuses.count(429)) == (BURST, total - BURST)
    evidence = [r for r in audit_records(audit_path) if r["path"] == "/v1/evidence"]
    summary = sorted((r["status"], r["reason"], r["consumer"]) for r in evidence)
    assert summary == sorted(
        [(200, "granted", "welfare-portal")] * BURST + [(429, "rate_limited", "welfare-portal")] * (total - BURST)
    )
