"""Incremental windows: fixed per logical date, contiguous, never overlapping; backfill and reruns by checksum."""

import datetime as dt
import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.servers import scratch_postgres
from zerodoc.catalog import agencies
from zerodoc.config import settings
from zerodoc.sources.agency_server import serve
from zerodoc.sources.extract import extract
from zerodoc.sources.generate import generate
from zerodoc.sources.servers import load_servers
from zerodoc.sources.watermarks import backfill, state_path

Q = "moj.foreign_residents"


@pytest.fixture
def source(zerodoc_home, monkeypatch):
    for a in agencies().values():
        monkeypatch.delenv(f"AIRFLOW_CONN_{a.conn_id.upper()}", raising=False)
    cfg = settings()
    generate(2000, 4, cfg.sources_dir)
    return cfg


def _keys(path):
    t = pq.read_table(path)
    return sorted(zip(t["foreign_resident_id"].to_pylist(), t["updated_at"].to_pylist(), strict=True))


def _partition_rows(cfg, q, start, end):
    out = []
    for r in backfill(q, start, end, cfg, mode="incremental"):
        out.append(r)
    return out


def test_backfill_partitions_the_cursor_range_exactly_once(source):
    cfg = source
    full = pq.read_table(cfg.sources_dir / "moj/foreign_residents.parquet")
    results = _partition_rows(cfg, Q, "2026-10-01", "2026-10-31")
    assert len(results) == 31
    assert sum(r.rows for r in results) == full.num_rows  # every row once: October holds all changes
    for r in results:
        t = pq.read_table(r.path)
        day = dt.datetime.fromisoformat(r.logical_date)
        if t.num_rows:
            assert pc.min(t["updated_at"]).as_py() > day if r.logical_date != "2026-10-01" else True
            assert pc.max(t["updated_at"]).as_py() <= day + dt.timedelta(days=1)
    state = json.loads(state_path(agencies()["moj"].entities["foreign_residents"], cfg).read_text())
    assert len(state["windows"]) == 31


def test_rerun_and_rebackfill_are_byte_identical(source):
    cfg = source
    first = {r.logical_date: r.checksum for r in _partition_rows(cfg, Q, "2026-10-10", "2026-10-14")}
    manifests = {d: (cfg.raw_dir / f"moj/foreign_residents/ds={d}/_manifest.json").read_bytes() for d in first}
    again = {r.logical_date: r.checksum for r in _partition_rows(cfg, Q, "2026-10-10", "2026-10-14")}
    assert again == first
    for d, m in manifests.items():
        assert (cfg.raw_dir / f"moj/foreign_residents/ds={d}/_manifest.json").read_bytes() == m
    # A single rerun in the middle, after later dates exist, still reads its own window.
    assert extract(Q, "2026-10-12", cfg, mode="incremental").checksum == first["2026-10-12"]


def test_a_date_backfilled_between_recorded_ones_does_not_duplicate(source):
    cfg = source
    a = extract(Q, "2026-10-10", cfg, mode="incremental")
    c = extract(Q, "2026-10-12", cfg, mode="incremental")  # takes (10-11 00:00, 10-13 00:00]
    b = extract(Q, "2026-10-11", cfg, mode="incremental")  # late backfill: nothing left between them
    assert b.rows == 0
    ka, kc = set(_keys(a.path)), set(_keys(c.path))
    assert not ka & kc


@pytest.mark.services
def test_incremental_pushdown_on_postgres_and_rest_equals_the_file_filter(source, monkeypatch, postgres_up):
    cfg = source
    want = {d: _keys(extract(Q, d, cfg, mode="incremental").path) for d in ("2026-10-05", "2026-10-06")}
    with scratch_postgres() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOJ", uri)
        load_servers({"moj": agencies()["moj"]}, cfg)
        for d, keys in want.items():
            assert _keys(extract(Q, d, cfg, mode="incremental").path) == keys
    monkeypatch.delenv("AIRFLOW_CONN_ZERODOC_MOJ")
    q = "fsc.youth_leap_accounts"
    declared = list(agencies()["fsc"].entities["youth_leap_accounts"].columns)
    local = {d: pq.read_table(extract(q, d, cfg, mode="incremental").path, columns=declared)
             for d in ("2026-10-07", "2026-10-08")}
    with serve(cfg.sources_dir) as url:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_FSC", url)
        for d, t in local.items():  # the file stand-in has no pages: compare the declared columns
            assert pq.read_table(extract(q, d, cfg, mode="incremental").path, columns=declared).equals(t)


def test_a_window_says_it_is_one_even_without_a_soft_delete_column(source):
    """Staging deletes keys absent from a snapshot, never from a window: a window of an entity without
    `deleted_column` must still mark its rows `_op = 'upsert'`; a full extract stays as before (no _op)."""
    cfg = source
    assert agencies()["moj"].entities["foreign_residents"].deleted_column is None
    window = pq.read_table(extract(Q, "2026-10-15", cfg, mode="incremental").path)
    assert window.num_rows and set(window["_op"].to_pylist()) == {"upsert"}
    full = pq.read_table(extract(Q, "2026-10-16", cfg, mode="full").path)
    assert "_op" not in full.schema.names
