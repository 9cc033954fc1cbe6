"""The Redis rate limit: one bucket per holder for every replica, Redis's clock, per-host limits while Redis is down."""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from zerodoc.api.app import create_app
from zerodoc.api.ratelimit import REDIS_URL_ENV, SharedRateLimiter
from zerodoc.api.ratelimit_redis import RedisRateLimiter

from .support import audit_records, bearer, body, free_port, start_api_workers, stop_api_workers

# The shared test Redis (db 0 is the Celery broker's): every test uses holders of its own.
DB = 15
URL = f"redis://127.0.0.1:6379/{DB}"
LOGGER = "zerodoc.api.ratelimit_redis"


@pytest.fixture
def r(redis_up) -> redis.Redis:
    client = redis.Redis(db=DB)
    yield client
    client.close()


def _holder() -> str:
    return f"test-{uuid.uuid4()}"


def _replicas(tmp_path: Path, n: int, rate: float, burst: float, url: str = URL, **kw) -> list[SharedRateLimiter]:
    """n limiters as n replicas would build them: each on its own host's state directory."""
    return [
        SharedRateLimiter(tmp_path / f"replica{i}" / "buckets.bin", rate, burst, redis_url=url, **kw) for i in range(n)
    ]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [rec.getMessage() for rec in caplog.records if rec.name == LOGGER and rec.levelno == logging.WARNING]


def test_two_replicas_admit_exactly_the_burst_between_them(r, tmp_path):
    burst = 10
    replicas = _replicas(tmp_path, 2, rate=0.001, burst=burst)  # one token per 1000 s: the burst is all there is
    assert all(isinstance(x.backend, RedisRateLimiter) and x.remote for x in replicas)
    holder = _holder()
    results: list[float | None] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send(limiter: SharedRateLimiter) -> None:
        start.wait()
        for _ in range(10):
            wait = limiter.take(holder)
            with lock:
                results.append(wait)

    threads = [threading.Thread(target=send, args=(replicas[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(None) == burst and len(results) == 80
    # Every refusal says when the next token comes: about 1000 s at 0.001/s.
    assert all(w == pytest.approx(1000, abs=1) for w in results if w is not None)
    # The decisions were Redis's: each replica's own buckets were never touched (still full).
    for replica in replicas:
        assert [replica.host.take(holder) for _ in range(burst)] == [None] * burst
        replica.close()
    # Another holder has a bucket of its own.
    assert replicas[0].backend.bucket_key(holder) != replicas[0].backend.bucket_key(_holder())


def test_buckets_refill_by_redis_time_and_expire_once_full(r, tmp_path):
    a, b = _replicas(tmp_path, 2, rate=20, burst=2)  # 50 ms a token
    holder = _holder()
    key = a.backend.bucket_key(holder)
    assert a.take(holder) is None and b.take(holder) is None
    wait = a.take(holder)
    assert wait is not None and 0 < wait <= 0.05
    # The bucket is a time on Redis's clock: at most `burst` intervals after Redis's TIME now,
    # whatever this process's clock says; it expires when the bucket would be full again.
    seconds, micros = r.time()
    tat = float(r.get(key))
    now_us = seconds * 1_000_000 + micros
    assert now_us - 100_000 < tat <= now_us + 2 * 50_000
    assert 0 < r.pttl(key) <= 100
    time.sleep(wait + 0.01)
    assert b.take(holder) is None  # one token back
    second = b.take(holder)
    assert second is not None and 0 < second <= 0.05
    time.sleep(0.15)  # two intervals and more: full, and gone from Redis
    assert r.exists(key) == 0
    assert a.take(holder) is None and a.take(holder) is None and a.take(holder) is not None
    a.close()
    b.close()


def test_rates_beyond_the_clocks_resolution_still_answer_from_redis(r, tmp_path, caplog):
    # 1e9/s is a 0.001 us interval, below a double's resolution at today's microsecond times:
    # the bucket's expiry must still be a valid one (it was 0 ms, which Redis refuses).
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limiter = _replicas(tmp_path, 1, rate=1e9, burst=1e9)[0]
    assert [limiter.take(_holder()) for _ in range(3)] == [None] * 3
    assert _warnings(caplog) == []
    limiter.close()


def test_redis_unreachable_falls_back_to_the_hosts_buckets_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    limiter = _replicas(tmp_path, 1, rate=0.001, burst=3, url=f"redis://127.0.0.1:{free_port()}/0")[0]
    holder = "anonymous:10.20.30.40"  # a client address must not reach the log
    started = time.monotonic()
    results = [limiter.take(holder) for _ in range(5)]
    # Neither open (unlimited) nor closed (everything refused): the host's limit, same settings.
    assert results[:3] == [None, None, None]
    assert all(w == pytest.approx(1000, abs=1) for w in results[3:])
    assert time.monotonic() - started < 1.0  # a refused connection costs no timeout
    (message,) = _warnings(caplog)
    assert "no answer from Redis (ConnectionError" in message
    assert "10.20.30.40" not in message
    limiter.close()


def test_redis_that_never_answers_costs_one_short_timeout(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=0.2&socket_connect_timeout=0.2"
        limiter = _replicas(tmp_path, 1, rate=0.001, burst=2, url=url)[0]
        started = time.monotonic()
        first = limiter.take("a")
        first_took = time.monotonic() - started
        started = time.monotonic()
        rest = [limiter.take("a") for _ in range(20)]
        rest_took = time.monotonic() - started
    assert first is None and rest[0] is None and all(w is not None for w in rest[1:])
    # One attempt of 200 ms (a timeout is not retried; redis-py's default is ten retries of 5 s);
    # the requests after it go straight to the host's buckets until RETRY_AFTER has passed.
    assert 0.19 <= first_took < 0.35
    assert rest_took < 0.09
    assert len(_warnings(caplog)) == 1 and "TimeoutError" in _warnings(caplog)[0]
    limiter.close()


class OwnRedis:
    """A redis-server of this test's own on a free port (the shared one must not be stopped)."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


def test_outage_and_recovery_switch_backends_and_log_each_once(own_redis, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    limiter = SharedRateLimiter(tmp_path / "buckets.bin", 0.001, 2, redis_url=url)
    limiter.backend.retry_after = 0.05
    holder = _holder()
    # Down from the start: the host's buckets.
    assert [limiter.take(holder) for _ in range(3)][2] is not None
    assert len(_warnings(caplog)) == 1
    own_redis.start()
    time.sleep(0.06)
    # Back: a fresh bucket in Redis (the host's stays spent), and one line saying so.
    assert limiter.take(holder) is None and limiter.take(holder) is None and limiter.take(holder) is not None
    assert _warnings(caplog)[1:] == ["rate limit: Redis answers again; the limit is shared by every replica again"]
    # Restarted (with nothing saved) between two requests: the one retry reconnects, no outage.
    own_redis.stop()
    own_redis.start()
    other = _holder()
    assert limiter.take(other) is None
    assert len(_warnings(caplog)) == 2
    # Gone mid-service: the host's buckets again, one more warning.
    own_redis.stop()
    assert limiter.take(other) is None and limiter.take(other) is None and limiter.take(other) is not None
    assert len(_warnings(caplog)) == 3 and "no answer from Redis" in _warnings(caplog)[2]
    limiter.close()


def test_default_is_the_hosts_buckets_and_a_zero_rate_needs_no_redis(tmp_path, monkeypatch):
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    assert SharedRateLimiter(tmp_path / "a.bin", 1, 1).backend.__class__.__name__ == "HostRateLimiter"
    monkeypatch.setenv(REDIS_URL_ENV, f"redis://127.0.0.1:{free_port()}/0")
    off = SharedRateLimiter(tmp_path / "b.bin", 0, 1)
    assert off.backend is off.host and not off.remote and off.take("a") is None
    on = SharedRateLimiter(tmp_path / "c.bin", 1, 1)
    assert isinstance(on.backend, RedisRateLimiter)
    on.close()


def _evidence(client: TestClient, key: str, n: int) -> list[int]:
    return [client.post("/v1/evidence", json=body(), headers=bearer(key)).status_code for _ in range(n)]


def test_the_app_limits_through_redis_and_audits_every_429(r, published, keys, consents, audit_path, monkeypatch):
    monkeypatch.setenv(REDIS_URL_ENV, URL)
    bucket = RedisRateLimiter.bucket_key("welfare-portal")
    r.delete(bucket)  # a bucket left by an earlier run of this test would still be spent
    try:
        with TestClient(create_app(published, rate_per_sec=0.001, burst=3)) as client:
            assert _evidence(client, keys["welfare-portal"], 5) == [200, 200, 200, 429, 429]
            assert r.exists(bucket) == 1
            # take() waits on Redis: evidence must not run on the event loop, whatever is loaded.
            assert client.app.state.service.inline_ready() is False
    finally:
        r.delete(bucket)
    evidence = [(x["status"], x["reason"]) for x in audit_records(audit_path) if x["path"] == "/v1/evidence"]
    assert evidence == [(200, "granted")] * 3 + [(429, "rate_limited")] * 2


def test_the_app_with_redis_down_answers_within_the_hosts_limit_and_audits_it(
    published, keys, consents, audit_path, monkeypatch, caplog
):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    monkeypatch.setenv(REDIS_URL_ENV, f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(published, rate_per_sec=0.001, burst=3)) as client:
        assert _evidence(client, keys["welfare-portal"], 5) == [200, 200, 200, 429, 429]
    evidence = [(x["status"], x["reason"]) for x in audit_records(audit_path) if x["path"] == "/v1/evidence"]
    assert evidence == [(200, "granted")] * 3 + [(429, "rate_limited")] * 2
    assert len(_warnings(caplog)) == 1


def test_two_api_replicas_on_their_own_state_grant_one_burst_between_them(
    r, published, keys, consents, audit_path, tmp_path
):
    """Two servers as on two hosts (each its own state directory, host buckets and audit log)."""
    burst = 12
    homes = [published.home, tmp_path / "replica2-home"]
    shutil.copytree(published.home, homes[1])  # same datasets and consumers, separate state
    bucket = RedisRateLimiter.bucket_key("welfare-portal")
    r.delete(bucket)
    servers = []
    try:
        for i, home in enumerate(homes):
            env = {
                **os.environ,
                "ZERODOC_HOME": str(home),
                "ZERODOC_API_RATE_PER_SEC": "0.001",
                "ZERODOC_API_RATE_BURST": str(burst),
                REDIS_URL_ENV: URL,
            }
            env.pop("ZERODOC_AUDIT_DSN", None)
            servers.append(start_api_workers(env, tmp_path / f"server{i}.log", workers=1))
        statuses: list[int] = []
        lock = threading.Lock()

        def send(port: int) -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for _ in range(5):
                c.request("POST", "/v1/evidence", json.dumps(body()),
                          {**bearer(keys["welfare-portal"]), "Content-Type": "application/json"})  # fmt: skip
                response = c.getresponse()
                response.read()
                with lock:
                    statuses.append(response.status)
            c.close()

        threads = [threading.Thread(target=send, args=(servers[i % 2][1],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for proc, _port in servers:
            stop_api_workers(proc)
        r.delete(bucket)
    # Each replica enforcing its own limit would grant up to 2 x burst.
    assert (statuses.count(200), statuses.count(429)) == (burst, 40 - burst)
    audited = []
    for home in homes:
        log_path = audit_path if home == published.home else home / audit_path.relative_to(published.home)
        audited += [(x["status"], x["reason"]) for x in audit_records(log_path) if x["path"] == "/v1/evidence"]
    assert sorted(audited) == [(200, "granted")] * burst + [(429, "rate_limited")] * (40 - burst)
