"""The MOIS PostgreSQL source goes down in the middle of an extract: the task retries with backoff and
then fails clearly, the previous version stays current and reads as stale, and once the source is
back the next run catches up with every row once.

The outage is confined to a scratch database (sessions cut, new ones refused) so the shared server
keeps serving Airflow metadata and the other tests.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from urllib.parse import urlsplit

import psycopg
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.servers import scratch_postgres
from zerodoc.catalog import agencies, datasets, entity
from zerodoc.config import settings
from zerodoc.orchestration.faults import (
    STAGES,
    airflow_retry_delays,
    database_outage,
    run_stage,
    run_with_retries,
)
from zerodoc.sources.extract import SourceUnavailableError, raw_partition

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# D2 is a Sunday: the weekly full snapshot of mois.residents, so the outage hits a whole-table COPY.
D1, D2 = "2026-11-21", "2026-11-22"
Q = "mois.residents"
SCALE = 1 / 30  # Airflow's retry waits, 30x faster


def _extract_task():
    from zerodoc.orchestration.factory import build_ingest_dag

    dag = build_ingest_dag(agencies()["mois"])
    return dag.get_task("extract_residents")


def _wait_for_lock_wait(source: str, database: str, timeout: float = 30.0) -> int:
    """The pid of the extract's session once its COPY is under way and blocked on our table lock."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                "AND query ILIKE 'COPY%%'", (database,)).fetchone()
            if row:
                return row[0]
            time.sleep(0.05)
    raise AssertionError(f"the extract never reached its COPY on {source}")


@pytest.mark.services
def test_source_outage_mid_extract(zerodoc_home, monkeypatch, postgres_up):
    from zerodoc.alerts import stale_datasets
    from zerodoc.publish import store
    from zerodoc.sources.generate import generate
    from zerodoc.sources.servers import load_servers

    for a in agencies().values():
        monkeypatch.delenv(f"AIRFLOW_CONN_{a.conn_id.upper()}", raising=False)
    cfg = settings()
    generate(2000, 21, cfg.sources_dir)
    with scratch_postgres() as source:
        database = urlsplit(source).path.lstrip("/")
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOIS", source)
        load_servers(agencies(), cfg)
        for stage in STAGES:
            run_stage(stage, D1)
        before = {name: store.current(name, cfg).version for name in datasets()}

        # Rows that reach the agency system while ours is down must arrive once, after it returns.
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("""INSERT INTO mois.residents SELECT resident_id + 10000000, rrn, name, sex, birth_date,
                            household_id, sigungu_code, address, moved_in_date, timestamp '2026-11-22 09:00'
                            FROM mois.residents ORDER BY resident_id LIMIT 3""")

        task = _extract_task()
        delays = airflow_retry_delays(task)
        assert task.retries >= 2 and delays == sorted(delays) and delays[-1] > delays[0], delays

        # Mid-extract: the COPY has started and waits on a lock we hold when the database goes away.
        outcome: dict = {}
        from zerodoc.orchestration import steps

        def extract_with_retries() -> None:
            try:
                outcome["result"] = run_with_retries(lambda: steps.extract_step(Q, D2), delays, SCALE)
            except Exception as exc:  # noqa: BLE001 - inspected below
                outcome["error"] = exc

        locker = psycopg.connect(source)
        locker.execute("LOCK TABLE mois.residents IN ACCESS EXCLUSIVE MODE")
        worker = threading.Thread(target=extract_with_retries)
        worker.start()
        _wait_for_lock_wait(source, database)
        with database_outage(ADMIN, database):
            worker.join(timeout=120)
            assert not worker.is_alive()
            down_since = dt.datetime(2026, 11, 24, 6, tzinfo=dt.UTC)  # D1's data is 54 h old by then
            stale = {f.dataset: f for f in stale_datasets(cfg, down_since)}
            current_during = {name: store.current(name, cfg).version for name in datasets()}
        locker.close()

        err = outcome.get("error")
        assert isinstance(err, SourceUnavailableError), outcome
        attempts = err.attempts
        assert len(attempts) == task.retries + 1
        assert all(a.error and "unavailable" in a.error and Q in a.error for a in attempts), attempts
        assert "terminat" in attempts[0].error  # the first attempt lost its session mid-COPY
        assert "not currently accepting connections" in attempts[-1].error  # the rest were refused
        gaps = [b.started - a.started for a, b in zip(attempts, attempts[1:], strict=False)]
        assert all(g >= d * SCALE for g, d in zip(gaps, delays, strict=True)), (gaps, delays)
        assert gaps[-1] > gaps[0]  # backoff, not a constant wait

        assert not raw_partition(entity(Q), D2, cfg).exists()  # nothing half-extracted is visible
        assert current_during == before  # the previous versions stay current...
        for name in datasets():  # ...and are reported stale by their age
            f = stale[name]
            assert f.version == before[name] and f.as_of == D1
            assert f.age_hours == pytest.approx(54.0) and f.age_hours > f.freshness_hours

        # The source is back: the next run catches up.
        for stage in STAGES:
            run_stage(stage, D2)
        with psycopg.connect(source) as conn:
            source_keys = sorted(r[0] for r in conn.execute("SELECT resident_id FROM mois.residents"))
    assert json.loads((raw_partition(entity(Q), D2, cfg) / "_manifest.json").read_text())["mode"] == "full"
    raw = pq.read_table(raw_partition(entity(Q), D2, cfg) / "part-0.parquet")
    keys = raw["resident_id"].to_pylist()
    # Every source row exactly as often as the source holds it (the generator plants duplicate keys,
    # which validation quarantines): nothing lost, nothing twice; the rows added meanwhile once each.
    assert sorted(keys) == source_keys
    assert pc.sum(pc.greater_equal(raw["resident_id"], 10_000_000)).as_py() == 3
    for name in datasets():
        pv = store.current(name, cfg)
        assert pv.metadata["as_of"] == D2 and pv.version != before[name]
    assert not stale_datasets(cfg, dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC))
