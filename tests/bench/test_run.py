"""bench/run.py's own bookkeeping: what the e2e figure is explained with."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def _airflow_db(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE dag_run (dag_id TEXT, run_id TEXT, logical_date TIMESTAMP)")
        con.execute("CREATE TABLE task_instance (dag_id TEXT, task_id TEXT, run_id TEXT, duration FLOAT, "
                    "end_date TIMESTAMP)")
        con.executemany("INSERT INTO dag_run VALUES (?, ?, ?)", [
            ("ingest_mois", "r1", f"{bench.BENCH_DS} 00:00:00"),
            ("ingest_mois", "r0", "2026-10-31 00:00:00"),
        ])
        con.executemany("INSERT INTO task_instance VALUES (?, ?, ?, ?, ?)", rows)


def test_breakdown_keeps_the_last_try_of_each_task_of_the_bench_date(tmp_path):
    _airflow_db(tmp_path / "airflow" / "airflow.db", [
        ("ingest_mois", "extract_residents", "r1", 12.345, "2026-12-07 10:05:00"),
        ("ingest_mois", "extract_residents", "r1", 30.0, "2026-12-07 10:00:00"),  # a failed first try, stored after
        ("ingest_mois", "validate_residents", "r1", 20.0, "2026-12-07 10:06:00"),
        ("ingest_mois", "validate_residents", "r0", 99.0, "2026-12-07 09:00:00"),  # another date
        ("ingest_mois", "never_ran", "r1", None, None),
    ])
    (tmp_path / "logs").mkdir()
    report = {"seconds": 9.0, "phases": {"extract": 2.0, "transform": 7.0},
              "phase_detail": {"transform/residence_v1": 3.0}}
    (tmp_path / "logs" / "bench-baseline.log").write_text(json.dumps(report))
    assert bench.e2e_breakdown(tmp_path) == {
        "pipeline_task_seconds": {"ingest_mois.extract_residents": 12.35, "ingest_mois.validate_residents": 20.0},
        "baseline_phase_seconds": {"extract": 2.0, "transform": 7.0, "transform/residence_v1": 3.0},
    }


def test_breakdown_leaves_out_what_is_missing(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "bench-baseline.log").write_text("Traceback (most recent call last): ...")
    assert bench.e2e_breakdown(tmp_path) == {}


def test_measured_counts_processes_side_by_side_and_returns_the_exit_code(tmp_path):
    """Two children holding ~150 MB each at the same time: the tree's peak is their sum, not one of them."""
    import sys

    child = "import time; b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2.5)"
    parent = (
        "import subprocess, sys\n"
        f"ps = [subprocess.Popen([sys.executable, '-c', {child!r}]) for _ in range(2)]\n"
        "sys.exit(sum(p.wait() for p in ps) + 3)\n"
    )
    seconds, peak_mb, rc = bench.measured([sys.executable, "-c", parent], {}, tmp_path / "log.txt")
    assert rc == 3
    assert seconds >= 2.5
    assert peak_mb >= 2 * 150  # one child alone (the largest member's RSS) would be ~160 MB
