"""Test data: a tiny published residence_v1 / income_v1 and request helpers."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from zerodoc.config import REPO_ROOT, Settings
from zerodoc.privacy import pseudonymize
from zerodoc.publish.store import switch_current

ALICE = "900101-1234567"  # residence + two tax years
BOB = "850505-2345678"  # income only
NOBODY = "010203-3456789"


def publish(cfg: Settings, dataset: str, version: str, table: pa.Table, as_of: str = "2025-06-30") -> None:
    vdir = cfg.published_dir / dataset / "versions" / version
    vdir.mkdir(parents=True)
    pq.write_table(table, vdir / "data.parquet")
    meta = {
        "dataset": dataset,
        "version": version,
        "as_of": as_of,
        "row_count": table.num_rows,
        "checksum": hashlib.sha256((vdir / "data.parquet").read_bytes()).hexdigest(),
        "contract_hash": "test",
        "columns": table.column_names,
        "source_manifests": [],
        "validation_runs": [f"run-{dataset}-{version}"],
        "published_for": as_of,
    }
    (vdir / "metadata.json").write_text(json.dumps(meta))
    switch_current(dataset, version, reason="test fixture", cfg=cfg)


def residence_table(key: bytes, sigungu: str = "강남구") -> pa.Table:
    p = pseudonymize(ALICE, key)
    return pa.table(
        {
            "subject_pseudonym": [p, pseudonymize("770707-1111111", key)],
            "sido_code": ["11", "26"],
            "sido_name": ["서울특별시", "부산광역시"],
            "sigungu_code": ["11680", "26350"],
            "sigungu_name": [sigungu, "해운대구"],
            "household_id": pa.array([10, 11], pa.int64()),
            "household_size": pa.array([3, 1], pa.int32()),
            "is_household_head": [True, True],
            "moved_in_on": [date(2019, 3, 2), date(2020, 1, 1)],
            "as_of": [date(2025, 6, 30)] * 2,
        }
    )


def income_table(key: bytes) -> pa.Table:
    a, b = pseudonymize(ALICE, key), pseudonymize(BOB, key)
    return pa.table(
        {
            "subject_pseudonym": [a, a, b],
            "tax_year": pa.array([2023, 2024, 2024], pa.int32()),
            "earned_income_krw": pa.array([30_000_000, 32_000_000, 18_000_000], pa.int64()),
            "business_income_krw": pa.array([0, 1_000_000, 0], pa.int64()),
            "other_income_krw": pa.array([0, 0, 500_000], pa.int64()),
            "total_income_krw": pa.array([30_000_000, 33_000_000, 18_500_000], pa.int64()),
            "filed_on": [date(2024, 5, 31), date(2025, 5, 31), date(2025, 5, 30)],
            "as_of": [date(2025, 6, 30)] * 3,
        }
    )


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# (subject_id, purpose) -> consent_id, filled by the `consents` fixture for the default
# consumer of each purpose; body() picks the matching one unless a test names another.
CONSENTS: dict[tuple[str, str], str] = {}
NO_CONSENT = "cns_never-recorded"


def body(**over) -> dict:
    subject = over.get("subject_id", ALICE)
    purpose = over.get("purpose", "basic_livelihood_application")
    consent = CONSENTS.get((subject, purpose), NO_CONSENT) if isinstance(subject, str) else NO_CONSENT
    return {
        "evidence_type": "residence",
        "subject_id": ALICE,
        "purpose": "basic_livelihood_application",
        "consent_id": consent,
        **over,
    }


def victim_table(key: bytes, as_of: date = date(2025, 6, 30)) -> pa.Table:
    """A tiny stand-in for the shared victim_support_eligibility_v1 (same columns as the dbt mart)."""
    a = pseudonymize(ALICE, key)
    inputs = json.dumps({"victim_case_id": "VC-2025-0001", "household_income_ratio": 0.42})
    cols: dict = {"subject_pseudonym": [a]}
    for area, eligible in (
        ("legal_aid", True),
        ("relief_fund", True),
        ("emergency_livelihood", False),
        ("employment_support", True),
        ("financial_support", False),
    ):
        cols[f"{area}_eligible"] = [eligible]
        cols[f"{area}_rule_id"] = [f"{area}.r1"]
        cols[f"{area}_reason"] = [None if eligible else "household_income_above_ceiling"]
    cols["inputs"] = [inputs]
    cols["as_of"] = [as_of]
    return pa.table(cols)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api_workers(
    env: dict[str, str], log_path: Path, workers: int = 2, *, cli: bool = False
) -> tuple[subprocess.Popen, int]:
    """uvicorn serving the API with `workers` processes in its own session; returns once all started.

    cli=True starts it as operators and docker-compose.yaml do, with `zerodoc serve` (access log on)."""
    port = free_port()
    if cli:
        argv = [str(Path(sys.executable).with_name("zerodoc")), "serve", "--port", str(port), "--workers", str(workers)]
    else:
        argv = [sys.executable, "-m", "uvicorn", "zerodoc.api.app:create_app", "--factory", "--port", str(port),
                "--workers", str(workers), "--no-access-log"]  # fmt: skip
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 120
    # Started = every worker logged "Application startup complete" and the port accepts a connection:
    # one worker (no supervisor) binds its socket only after that line, so a request right after it
    # would race the bind.
    while log_path.read_text(errors="replace").count("Application startup complete") < workers or not _listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise AssertionError(f"the API did not start on {port}:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc, port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def stop_api_workers(proc: subprocess.Popen) -> None:
    """Stop a server from start_api_workers: SIGTERM to its session, SIGKILL if it is not gone in 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_mid_load(proc: subprocess.Popen, port: int, key: str, workers: int = 8, seconds: float = 3.0) -> list:
    """Load the server from `workers` connections (load_until_killed), SIGKILL its whole session after
    `seconds` (every worker, and an audit process started in it), and return what was answered:
    (status, consent reference) per request that got an answer."""
    answered: list[tuple[int, str]] = []
    stop = threading.Event()
    loaders = [threading.Thread(target=load_until_killed, args=(port, key, w, answered, stop)) for w in range(workers)]
    try:
        for t in loaders:
            t.start()
        time.sleep(seconds)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        stop.set()
        for t in loaders:
            t.join()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return answered


def load_until_killed(port: int, key: str, worker: int, answered: list, stop: threading.Event) -> None:
    """Requests on one keep-alive connection until the server dies; every 4th one with a valid consent.

    The others carry a consent reference no one recorded: refused (403) and audited with that
    reference, so each answered one can be matched to its own record.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    n = 0
    while not stop.is_set():
        n += 1
        req = body() if n % 4 == 0 else body(consent_id=f"cns_k9-{worker}-{n}")
        try:
            conn.request(
                "POST",
                "/v1/evidence",
                json.dumps(req),
                {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            return  # the server is gone; this request got no answer
        answered.append((resp.status, req["consent_id"]))
