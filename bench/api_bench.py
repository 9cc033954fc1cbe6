"""Evidence API under load: signed, consent-checked, durably audited answers vs a constant route, same run.

Serves the CURRENT published snapshot under a data root with uvicorn (2 workers on uvloop and
httptools, no access log); when nothing is published there yet (the api section run on its
own), it generates the sources and runs the pipeline first. It issues a bench consumer key and consents for
a sample of subjects, and drives loopback load with wrk (a Lua script cycles POST bodies
through the sample; one wrk thread, so the load generator takes as little of the two cores
as it can). Measures evidence rps and p99 against GET /livez on the same server,
the server's memory (proportional set size of all its processes, i.e. shared pages
counted once; summed RSS beside it), and audit records lost: answered requests without an
audit record, after a normal run and after a kill -9 of the server in the middle of one.

    ZERODOC_PSEUDONYM_KEY=... python bench/api_bench.py /tmp/benchhome/p10000000 --seconds 15
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSUMER = "api-bench"
PURPOSE = "basic_livelihood_application"
DATASET = "residence_v1"
WORKERS = int(os.environ.get("ZERODOC_API_BENCH_WORKERS", "2"))  # uvicorn workers; 2 on this 2-core machine
WRK_THREADS = 1  # one epoll loop drives 64 connections easily; a second would only take CPU from the server
WRK_CONNECTIONS = 64
SAMPLE_SUBJECTS = 2000
TARGETS = {
    "api.evidence_rps": (">=", 3000.0),
    "api.evidence_p99_ms": ("<=", 50.0),
    "api.evidence_vs_baseline_ratio": (">=", 0.35),
    "api.server_rss_mb": ("<=", 6000.0),
    "api.audit_lost": ("==", 0.0),
}

# The requests are formatted once, at start: wrk shares the two cores with the server, and a
# wrk.format per request (Lua string building) would bill the load generator's work to evidence.
LUA = """
local requests = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
for line in io.lines("%(bodies)s") do
  requests[#requests + 1] = wrk.format(nil, "/v1/evidence", nil, line)
end
local i = 0
function init(args)
  i = math.random(#requests)
end
function request()
  i = i %% #requests + 1
  return requests[i]
end
"""


def log(msg: str) -> None:
    print(f"[api-bench {datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk not found; installing it from Debian (apt-get install -y wrk)")
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get did not provide it")
    return found


def ensure_published(home: Path, persons: int | None, seed: int = 42) -> None:
    """Generate and run the pipeline under home unless DATASET is already published there."""
    from zerodoc.config import Settings
    from zerodoc.publish import store

    try:
        store.current(DATASET, Settings(home=home))
        return
    except store.NotPublishedError:
        pass
    if persons is None:
        raise RuntimeError(f"nothing published under {home}; pass --persons to generate and run the pipeline")
    sys.path.insert(0, str(REPO / "bench"))
    import run as bench_run  # the e2e section's own generate + pipeline steps

    log(f"no {DATASET} published under {home}: generating {persons:,} persons and running the pipeline")
    bench_run.ensure_sources(home, persons, seed)
    bench_run.run_pipeline(home, persons, seed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bench_policy(tmp: Path) -> Path:
    """The repository policy plus one grant for the bench consumer (same fields as welfare-portal)."""
    text = (REPO / "config" / "access_policy.yml").read_text(encoding="utf-8")
    text += (
        f"\n  - consumer: {CONSUMER}\n    dataset: {DATASET}\n    purpose: {PURPOSE}\n"
        "    fields: [sido_name, sigungu_name, household_size, moved_in_on]\n"
    )
    path = tmp / "access_policy.yml"
    path.write_text(text, encoding="utf-8")
    return path


def _sample_subjects(cfg, n: int) -> list[str]:
    import duckdb

    from zerodoc.publish import store

    meta = store.current(DATASET, cfg).metadata
    ds = meta.get("published_for") or meta.get("as_of")
    path = cfg.validated_dir / "mois" / "residents" / f"ds={ds}" / "part-0.parquet"
    if not path.exists():  # some runs validate through a view over raw: sample raw then
        path = cfg.raw_dir / "mois" / "residents" / f"ds={ds}" / "part-0.parquet"
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        rows = con.execute(
            f"SELECT rrn FROM read_parquet(?) WHERE rrn IS NOT NULL USING SAMPLE {int(n)} ROWS (reservoir, 42)",
            [str(path)],
        ).fetchall()
    finally:
        con.close()
    return [r[0] if "-" in r[0] else f"{r[0][:6]}-{r[0][6:]}" for r in rows]


def _prepare(home: Path, tmp: Path, subjects: int) -> tuple[str, Path, int]:
    """Bench consumer key, consents for a sample of subjects, and the wrk bodies file."""
    from zerodoc.api.consent import ConsentRegistry
    from zerodoc.api.consumers import ConsumerError, add_consumer, revoke_consumer
    from zerodoc.config import Settings
    from zerodoc.privacy import pseudonymize
    from zerodoc.publish import store

    cfg = Settings(home=home)
    try:
        revoke_consumer(CONSUMER, cfg)
    except ConsumerError:
        pass
    key = add_consumer(CONSUMER, cfg)
    ids = _sample_subjects(cfg, subjects)
    now = datetime.now(UTC)
    consents = ConsentRegistry(cfg).record_many(
        [
            {
                "subject_pseudonym": pseudonymize(i, cfg.pseudonym_key),
                "consumer": CONSUMER,
                "purpose": PURPOSE,
                "datasets": [DATASET],
                "valid_from": now - timedelta(minutes=5),
                "valid_to": now + timedelta(days=1),
                "recorded_by": "api-bench",
            }
            for i in ids
        ]
    )
    bodies = tmp / "bodies.jsonl"
    with open(bodies, "w", encoding="utf-8") as fh:
        for subject, consent in zip(ids, consents, strict=True):
            fh.write(
                json.dumps(
                    {
                        "evidence_type": "residence",
                        "subject_id": subject,
                        "purpose": PURPOSE,
                        "consent_id": consent.consent_id,
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )
    bodies.chmod(0o600)  # raw IDs: readable by this user only, deleted with tmp
    rows = int(store.current(DATASET, cfg).metadata.get("row_count") or 0)
    return key, bodies, rows


class Server:
    """uvicorn with WORKERS workers in its own process group; RSS sampled over its whole life."""

    def __init__(self, home: Path, policy: Path, port: int, log_path: Path):
        env = {
            **os.environ,
            "ZERODOC_HOME": str(home),
            "ZERODOC_ACCESS_POLICY": str(policy),
            "ZERODOC_API_RATE_PER_SEC": "0",  # the bench measures throughput, not the limiter
        }
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "zerodoc.api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(WORKERS),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "info",
            ],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.peak_rss_mb = 0.0
        self.peak_pss_mb = 0.0
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def pids(self) -> list[int]:
        family = {self.proc.pid}
        changed = True
        while changed:
            changed = False
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in family:
                    continue
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid in family:
                    family.add(int(entry))
                    changed = True
        return sorted(family)

    def _sum_kb(self, path: str, field: str) -> float:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
                    if line.startswith(field):
                        total += int(line.split()[1])
                        break
            except OSError:
                continue
        return total / 1024

    def rss_mb(self) -> float:
        """Summed VmRSS: counts a page mapped by both workers (the shared index file) twice."""
        return self._sum_kb("status", "VmRSS:")

    def pss_mb(self) -> float:
        """Summed Pss: each shared page split between the processes mapping it, so the sum is the real cost."""
        return self._sum_kb("smaps_rollup", "Pss:")

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the live server processes (master, workers and the audit
        process a worker started: everything an answer costs the server, whichever process spends it)."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while self._sampling and self.proc.poll() is None:
            self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb())
            self.peak_pss_mb = max(self.peak_pss_mb, self.pss_mb())
            time.sleep(0.5)

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Every worker has loaded its indexes (lifespan done) when each logged startup complete."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); see {self.log_path}")
            if self.log_path.read_text(errors="replace").count("Application startup complete") >= WORKERS:
                return
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout:.0f}s; see {self.log_path}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        self._sampling = False
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._log.close()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(wrk: str, url: str, seconds: float, script: Path | None = None) -> dict:
    cmd = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{max(1, int(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if script is not None:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "requests": requests,
        "rps": rps,
        "p99_ms": p99,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else "",
        "raw": out,
    }


def _evidence_records(audit_path: Path) -> int:
    from zerodoc.audit.log import read_records

    return sum(1 for r in read_records(audit_path) if r.get("path") == "/v1/evidence")


def _metric(name: str, value: float, unit: str, scale: int, baseline=None, ratio=None) -> dict:
    target = TARGETS.get(name)
    meets = None
    if target is not None:
        op, bound = target
        meets = {">=": value >= bound, "<=": value <= bound, "==": value == bound}[op]
    return {
        "name": name,
        "value": round(value, 3),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 3),
        "ratio": None if ratio is None else round(ratio, 3),
        "scale": scale,
        "target": None if target is None else f"{target[0]} {target[1]:g}",
        "meets_target": meets,
    }


def run_api_bench(
    home: Path, seconds: int = 15, subjects: int = SAMPLE_SUBJECTS, persons: int | None = None
) -> list[dict]:
    """Serve the current publish under `home` and measure it; return the api.* metric dicts.

    With `persons`, a home with nothing published gets the sources and a pipeline run first.
    """
    from zerodoc.config import restored_environ

    with restored_environ("ZERODOC_HOME", "ZERODOC_ACCESS_POLICY"):
        ensure_published(Path(home).resolve(), persons)
        return _run(Path(home).resolve(), seconds, subjects)


def _run(home: Path, seconds: int, subjects: int) -> list[dict]:
    os.environ["ZERODOC_HOME"] = str(home)
    wrk = ensure_wrk()
    audit_path = home / "state" / "audit" / "evidence.log"
    with tempfile.TemporaryDirectory(prefix="zerodoc-api-bench-") as tmp_name:
        tmp = Path(tmp_name)
        policy = _bench_policy(tmp)
        os.environ["ZERODOC_ACCESS_POLICY"] = str(policy)
        key, bodies, rows = _prepare(home, tmp, subjects)
        script = tmp / "evidence.lua"
        script.write_text(LUA % {"bodies": bodies, "key": key}, encoding="utf-8")
        port = _free_port()
        base = f"http://127.0.0.1:{port}"

        log(f"starting {WORKERS} workers on {base} over {home}")
        t0 = time.monotonic()
        server = Server(home, policy, port, tmp / "server.log")
        try:
            server.wait_ready()
            log(
                f"ready in {time.monotonic() - t0:.1f}s, PSS {server.pss_mb():.0f} MB, RSS sum {server.rss_mb():.0f} MB"
            )
            run_wrk(wrk, f"{base}/livez", 2)  # warm-up: connections, CPU caches
            run_wrk(wrk, f"{base}/v1/evidence", 2, script)
            cpu0 = server.cpu_seconds()
            baseline = run_wrk(wrk, f"{base}/livez", seconds)
            cpu1 = server.cpu_seconds()
            baseline_cpu_us = 1e6 * (cpu1 - cpu0) / max(1, baseline["requests"])
            log(
                f"baseline /livez: {baseline['rps']:.0f}/s, p99 {baseline['p99_ms']:.1f} ms, "
                f"server CPU {baseline_cpu_us:.0f} us/request"
            )
            before = _evidence_records(audit_path)
            cpu0 = server.cpu_seconds()
            evidence = run_wrk(wrk, f"{base}/v1/evidence", seconds, script)
            cpu1 = server.cpu_seconds()
            evidence_cpu_us = 1e6 * (cpu1 - cpu0) / max(1, evidence["requests"])
            recorded = _evidence_records(audit_path) - before
            lost_run = max(0, evidence["requests"] - recorded)
            log(
                f"evidence: {evidence['rps']:.0f}/s, p99 {evidence['p99_ms']:.1f} ms, "
                f"non-2xx {evidence['non_2xx']}, answered {evidence['requests']}, audited {recorded}, "
                f"server CPU {evidence_cpu_us:.0f} us/request"
            )
            steady_rss, steady_pss = server.rss_mb(), server.pss_mb()
            # Where the PSS is: file-backed (the mapped index cache, once for all workers) vs anonymous (per worker).
            pss_file = server._sum_kb("smaps_rollup", "Pss_File:")
            pss_anon = server._sum_kb("smaps_rollup", "Pss_Anon:")

            # The same load again, and kill -9 the whole server half-way through it.
            before = _evidence_records(audit_path)
            result: dict = {}
            loader = threading.Thread(
                target=lambda: result.update(run_wrk(wrk, f"{base}/v1/evidence", seconds, script))
            )
            loader.start()
            time.sleep(seconds / 2)
            server.kill9()
            loader.join()
            recorded_kill = _evidence_records(audit_path) - before
            lost_kill = max(0, result["requests"] - recorded_kill)
            log(f"kill -9 mid-load: answered {result['requests']}, audited {recorded_kill}, lost {lost_kill}")
        finally:
            server.stop()
        peak_rss, peak_pss = server.peak_rss_mb, server.peak_pss_mb
        log(
            f"server memory: PSS steady {steady_pss:.0f} MB, peak incl. index load {peak_pss:.0f} MB; "
            f"RSS sum steady {steady_rss:.0f} MB, peak {peak_rss:.0f} MB; "
            f"steady PSS file-backed {pss_file:.0f} MB, anonymous {pss_anon:.0f} MB"
        )

    ratio = evidence["rps"] / baseline["rps"] if baseline["rps"] else 0.0
    return [
        _metric("api.evidence_rps", evidence["rps"], "req/s", rows, baseline["rps"], ratio),
        _metric(
            "api.evidence_p99_ms",
            evidence["p99_ms"],
            "ms",
            rows,
            baseline["p99_ms"],
            evidence["p99_ms"] / baseline["p99_ms"] if baseline["p99_ms"] else None,
        ),
        _metric("api.baseline_rps", baseline["rps"], "req/s", rows),
        # CPU per answer (all server processes): far less sensitive to a busy machine than req/s.
        _metric(
            "api.evidence_server_cpu_us",
            evidence_cpu_us,
            "us/req",
            rows,
            baseline_cpu_us,
            evidence_cpu_us / baseline_cpu_us if baseline_cpu_us else None,
        ),
        _metric("api.evidence_vs_baseline_ratio", ratio, "ratio", rows, baseline["rps"], ratio),
        # The target: peak proportional set size of all server processes (shared pages counted once).
        _metric("api.server_rss_mb", peak_pss, "MB", rows),
        # Informational: peak of summed VmRSS, which counts the workers' shared index pages once per worker.
        _metric("api.server_rss_sum_mb", peak_rss, "MB", rows),
        _metric("api.audit_lost", float(lost_run + lost_kill), "requests", rows),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path, help="data root with a current publish (ZERODOC_HOME)")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--subjects", type=int, default=SAMPLE_SUBJECTS)
    parser.add_argument("--persons", type=int, help="generate and run the pipeline first if nothing is published")
    args = parser.parse_args()
    print(json.dumps(run_api_bench(args.home, args.seconds, args.subjects, args.persons), indent=2))


if __name__ == "__main__":
    main()
