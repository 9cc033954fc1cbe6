"""docker-compose.yaml's evidence-api replicas and evidence-lb, natively: two `zerodoc serve` on loopback sharing
one data root, one Redis rate limit and one PostgreSQL audit chain, behind Debian's HAProxy running
deploy/haproxy/haproxy.cfg (its bind and server lines rewritten for loopback, one thread)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import redis
import yaml

from tests.api.support import body, start_api_workers, stop_api_workers
from tests.conftest import REPO
from tests.deploy.lb import running_lb
from tests.servers import scratch_postgres
from zerodoc.api.app import MAX_BODY_BYTES
from zerodoc.api.ratelimit import REDIS_URL_ENV, HostRateLimiter
from zerodoc.api.ratelimit_redis import RedisRateLimiter
from zerodoc.audit.pg import TABLE

REDIS_DB = 13  # this test's own (Celery 0, cluster test 7, rate-limit tests 15); flushed before and after
BURST = 300  # per consumer, with a refill of one token per 1000 s: the burst is all there is
PHASE_A = (8, 90)  # threads x requests of one consumer: 720, more than two bursts
PHASE_B = (4, 70)  # another consumer, paced: 280, within its burst, so every answer is a 200 unless failover fails
ACCESS_LINE = re.compile(r'"POST /v1/evidence HTTP/1\.1" (\d{3})')
# HAProxy's httplog: backend/server, timers, status, ..., retries ("+N": redispatched), ..., request line.
LB_LINE = re.compile(
    r" evidence_api/(?P<server>\S+) \S+ (?P<status>\d{3}) .* \d+/\d+/\d+/\d+/(?P<retries>\+?\d+) \d+/\d+ "
    r'"(?P<method>\S+) (?P<path>\S+)'
)


@dataclass
class Topology:
    lb_port: int
    lb_log: Path
    replicas: list[tuple[subprocess.Popen, int]]
    logs: list[Path]
    env: dict[str, str]
    dsn: str
    figures: dict = field(default_factory=dict)

    def served(self, i: int) -> Counter:
        """Evidence answers by status, from replica i's own access log."""
        return Counter(int(s) for s in ACCESS_LINE.findall(self.logs[i].read_text(errors="replace")))

    def lb_lines(self) -> list[re.Match]:
        return [m for m in map(LB_LINE.search, self.lb_log.read_text(errors="replace").splitlines()) if m]

    def lb_settled(self, answered: int, timeout: float = 10.0) -> list[re.Match]:
        """The LB's lines once it has logged `answered` replica answers: HAProxy writes a request's line when
        its stream closes, which can be just after the client has read the answer (a CI run read 164 of 165)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lb_lines()
            if sum(m["server"] in ("api1", "api2") for m in lines) >= answered or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


class Client:
    """One keep-alive connection to the LB, reopened when a response closes it; errors are results."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, data=None, headers: dict | None = None) -> tuple[int | None, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.conn.request(method, path, data, headers or {})
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            return None, type(exc).__name__.encode()
        if resp.will_close:
            self.close()
        return resp.status, payload

    def evidence(self, key: str, **over) -> int | str:
        """The status, or the name of the error when no answer came."""
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        status, payload = self.request("POST", "/v1/evidence", json.dumps(body(**over)), headers)
        return payload.decode() if status is None else status

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture
def audit_dsn(postgres_up):
    with scratch_postgres() as dsn:
        yield dsn


@pytest.fixture
def rate_redis_url(redis_up):
    client = redis.Redis(db=REDIS_DB)
    client.flushdb()
    yield f"redis://127.0.0.1:6379/{REDIS_DB}"
    client.flushdb()
    client.close()


@pytest.fixture
def topology(published, keys, consents, audit_dsn, rate_redis_url, haproxy_bin, tmp_path):
    env = {
        **os.environ,
        "ZERODOC_HOME": str(published.home),  # one data root for both, as compose's zerodoc-data volume
        "ZERODOC_AUDIT_DSN": audit_dsn,
        REDIS_URL_ENV: rate_redis_url,
        "ZERODOC_API_RATE_PER_SEC": "0.001",
        "ZERODOC_API_RATE_BURST": str(BURST),
    }
    logs = [tmp_path / "replica1.log", tmp_path / "replica2.log"]
    replicas: list[tuple[subprocess.Popen, int]] = []
    try:
        for log in logs:  # as compose runs them: `zerodoc serve ... --workers 2`
            replicas.append(start_api_workers(env, log, workers=2, cli=True))
        with running_lb(haproxy_bin, [port for _, port in replicas], tmp_path) as (lb_port, lb_log):
            deadline = time.monotonic() + 20
            while Client(lb_port).request("GET", "/lbz")[0] != 200:
                assert time.monotonic() < deadline, lb_log.read_text(errors="replace")
                time.sleep(0.1)
            yield Topology(lb_port, lb_log, replicas, logs, env, audit_dsn)
    finally:
        for proc, _port in replicas:
            if proc.poll() is None:
                stop_api_workers(proc)


def _rows(dsn: str) -> list[dict]:
    with psycopg.connect(dsn) as conn:
        return [json.loads(r[0]) for r in conn.execute(f"SELECT record FROM {TABLE} ORDER BY seq")]


def _lb_front_door(top: Topology) -> None:
    """The LB's own routes and limits: monitor URI, compose's healthcheck command, the API's body limit."""
    client = Client(top.lb_port)
    assert client.request("GET", "/lbz")[0] == 200
    # evidence-lb's healthcheck in docker-compose.yaml, as written there, aimed at this LB's port.
    (script,) = [a for a in yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]["evidence-lb"]
                 ["healthcheck"]["test"] if "/dev/tcp/" in a]  # fmt: skip
    assert "/dev/tcp/127.0.0.1/8000" in script
    probe = subprocess.run(["bash", "-c", script.replace("/8000", f"/{top.lb_port}")], capture_output=True, timeout=10)
    assert probe.returncode == 0, probe.stderr
    # One byte over the API's limit: refused at the LB with the API's error body, declared or chunked.
    headers = {"Content-Type": "application/json"}
    over = b" " * (MAX_BODY_BYTES + 1)
    for data in (over, iter([over[:1000], over[1000:]])):  # http.client sends an iterator chunked
        status, payload = client.request("POST", "/v1/evidence", data, headers)
        assert status == 413, (status, payload)
        assert json.loads(payload)["error"]["code"] == "body_too_large"
    # At the limit it goes through to a replica, which answers (no key: 401) and audits it.
    status, payload = client.request("POST", "/v1/evidence", b" " * MAX_BODY_BYTES, headers)
    assert status == 401 and json.loads(payload)["error"]["code"] == "unauthorized"
    client.close()


def _run(threads: int, work) -> None:
    started = threading.Barrier(threads)

    def go(i: int) -> None:
        started.wait()
        work(i)

    pool = [threading.Thread(target=go, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


@pytest.mark.services
def test_two_replicas_behind_haproxy_share_limit_and_audit_chain_and_survive_a_kill(topology, published, keys):
    top = topology
    _lb_front_door(top)

    # -- A: one consumer as fast as 8 connections go; both replicas answer, one burst between them.
    statuses_a: list[int | None] = []
    lock = threading.Lock()

    def phase_a(_i: int) -> None:
        client = Client(top.lb_port)
        for _ in range(PHASE_A[1]):
            status = client.evidence(keys["welfare-portal"])
            with lock:
                statuses_a.append(status)
        client.close()

    _run(PHASE_A[0], phase_a)
    sent_a = PHASE_A[0] * PHASE_A[1]
    assert Counter(statuses_a) == {200: BURST, 429: sent_a - BURST}, Counter(statuses_a)
    per_replica = [top.served(0), top.served(1)]
    assert all(c[200] + c[429] > 0 for c in per_replica), per_replica  # both took part
    # ... and nothing else reached them (the 401 is the at-the-limit body of _lb_front_door).
    assert per_replica[0] + per_replica[1] == {200: BURST, 429: sent_a - BURST, 401: 1}, per_replica
    # HAProxy's log says the same, server by server (the 401 at the limit above is in one of them).
    lb_lines = top.lb_settled(sum((per_replica[0] + per_replica[1]).values()))
    for i, server in enumerate(("api1", "api2")):
        lb_said = Counter(int(m["status"]) for m in lb_lines if m["server"] == server)
        assert lb_said == top.served(i), (server, lb_said, top.served(i))
    # Shared through Redis, not through the host buckets in the data root the two also share here (as
    # replicas on one host would): the consumer's bucket is in Redis and its host bucket is still full.
    assert redis.Redis(db=REDIS_DB).exists(RedisRateLimiter.bucket_key("welfare-portal")) == 1
    host = HostRateLimiter(published.state_dir / "ratelimit" / "buckets.bin", 0.001, BURST)
    assert host.take("welfare-portal") is None
    host.close()
    assert not any("no answer from Redis" in log.read_text(errors="replace") for log in top.logs)
    top.figures["phase_a"] = {"sent": sent_a, "admitted": BURST, "refused_429": sent_a - BURST,
                              "replica1": dict(per_replica[0]), "replica2": dict(per_replica[1])}  # fmt: skip

    # -- B: another consumer, paced; replica 1 is SIGKILLed (server and workers) a quarter of the way in.
    results: list[tuple[float, float, int | str]] = []  # sent, done, status or error
    killed_at: list[float] = []
    down_at: list[float] = []
    before = [top.served(0), top.served(1)]

    def phase_b(_i: int) -> None:
        client = Client(top.lb_port)
        for _ in range(PHASE_B[1]):
            sent = time.monotonic()
            status = client.evidence(
                keys["youth-account-service"], evidence_type="income", purpose="youth_leap_account_eligibility"
            )
            with lock:
                results.append((sent, time.monotonic(), status))
            time.sleep(0.02)
        client.close()

    def killer() -> None:
        while len(results) < PHASE_B[0] * PHASE_B[1] // 4:
            time.sleep(0.005)
        proc = top.replicas[0][0]
        os.killpg(proc.pid, signal.SIGKILL)
        killed_at.append(time.monotonic())
        proc.wait()
        while time.monotonic() - killed_at[0] < 10:  # until HAProxy's checks take it out
            if "Server evidence_api/api1 is DOWN" in top.lb_log.read_text(errors="replace"):
                down_at.append(time.monotonic())
                return
            time.sleep(0.01)

    k = threading.Thread(target=killer)
    k.start()
    _run(PHASE_B[0], phase_b)
    k.join()
    assert down_at, "HAProxy never took the killed replica out"
    kill, down = killed_at[0], down_at[0]
    statuses_b = Counter(str(s) for _, _, s in results)
    failed = [(sent, s) for sent, _, s in results if s != 200]
    # What the config allows: a request already handed to the replica that died is never replayed, so
    # those in flight on it, or sent over an open connection to it before HAProxy noticed, fail (502, or
    # a keep-alive client connection closed without an answer so that the client may retry): at most
    # one per client connection, as a new one never starts on a reused server connection. A request
    # that cannot connect to it is retried on the other replica (retry-on conn-failure).
    assert all(s in (502, 503, 504) or isinstance(s, str) for _, s in failed), statuses_b
    assert len(failed) <= PHASE_B[0], statuses_b
    assert all(sent < down for sent, _ in failed), (failed, kill, down)  # none once it was out
    lines = top.lb_log.read_text(errors="replace").splitlines()
    cut = next(i for i, line in enumerate(lines) if "Server evidence_api/api1 is DOWN" in line)
    after_down = [m["server"] for m in map(LB_LINE.search, lines[cut:]) if m]
    assert after_down and set(after_down) == {"api2"}, Counter(after_down)
    assert top.served(0)[200] > 0 and top.served(1)[200] > 0  # evidence answered by both, over A and B
    phase_b_lines = [m for m in top.lb_lines() if m["path"] == "/v1/evidence"][sent_a + 1 :]
    top.figures["phase_b"] = {
        "sent": len(results), "statuses": dict(statuses_b),
        "failed_sent_ms_after_kill": [round((sent - kill) * 1000) for sent, _ in failed],
        "replica1": dict(top.served(0) - before[0]), "replica2": dict(top.served(1) - before[1]),
        "redispatched_by_lb": sum(1 for m in phase_b_lines if m["retries"].startswith("+")),
        "down_after_kill_s": round(down - kill, 2), "answered_after_down_by_api2": len(after_down),
    }  # fmt: skip

    # -- The PostgreSQL chain: intact, one record per request that reached a replica, from both.
    rows = _rows(top.dsn)
    by_consumer = Counter((r.get("consumer"), r["status"]) for r in rows if r["path"] == "/v1/evidence")
    assert by_consumer[("welfare-portal", 200)] == BURST
    assert by_consumer[("welfare-portal", 429)] == sent_a - BURST
    assert by_consumer[(None, 401)] == 1
    youth = by_consumer[("youth-account-service", 200)]
    # A killed request may have been recorded before the replica died (the record comes first).
    assert statuses_b["200"] <= youth <= statuses_b["200"] + len(failed), (statuses_b, youth)
    assert sum(by_consumer.values()) == len(rows) == sent_a + 1 + youth
    verify = subprocess.run([str(Path(sys.executable).with_name("zerodoc")), "audit", "verify"], env=top.env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"chain intact: {len(rows)} records" in verify.stdout, verify.stdout
    top.figures["audit"] = {"records": len(rows), "verify": verify.stdout.splitlines()[0][:200]}
    print("\nreplica topology:", json.dumps(top.figures, indent=1))
