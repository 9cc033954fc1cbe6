"""Incremental entities as configured: a full snapshot on the first extraction and on the configured
weekday, windows in between; and who is quarantined *now* when a day's partition holds only what
changed (a record rejected on Sunday and untouched since is in no later partition)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerodoc.catalog import agencies, entity
from zerodoc.config import ConfigError, settings
from zerodoc.privacy import pseudonymize
from zerodoc.quality.identifiers import rrn_reason
from zerodoc.quality.validate import validate_partition
from zerodoc.sources.current import chain
from zerodoc.sources.extract import extract
from zerodoc.sources.generate import generate
from zerodoc.sources.watermarks import state_path

Q = "mois.residents"
SUN, MON, TUE, SUN2, MON2 = "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-08", "2026-11-09"


@pytest.fixture
def source(zerodoc_home, monkeypatch):
    for a in agencies().values():
        monkeypatch.delenv(f"AIRFLOW_CONN_{a.conn_id.upper()}", raising=False)
    cfg = settings()
    generate(2000, 5, cfg.sources_dir)
    return cfg


def _edit(cfg, name: str, key: str, changes: dict[int, dict], stamp: dt.datetime) -> None:
    """Change rows of a file stand-in in place, bumping updated_at as the agency system would."""
    path = cfg.sources_dir / "mois" / f"{name}.parquet"
    t = pq.read_table(path)
    rows = t.to_pylist()
    for r in rows:
        if r[key] in changes:
            r.update(changes[r[key]], updated_at=stamp)
    pq.write_table(pa.Table.from_pylist(rows, schema=t.schema), path)


def _extract_and_validate(cfg, qualified: str, ds: str):
    r = extract(qualified, ds, cfg)
    out = validate_partition(entity(qualified).suite, r.path, ds, cfg)
    return r, out


def test_configured_entities_take_a_weekly_snapshot_and_windows_between(source):
    cfg = source
    assert (entity(Q).mode, entity(Q).snapshot_weekday) == ("incremental", "sunday")
    first = extract(Q, MON, cfg)  # the first extraction has nothing to continue from
    assert first.mode == "full" and first.mode_reason.startswith("first extraction")
    assert json.loads(first.manifest_path.read_text())["mode"] == "full"
    _edit(cfg, "residents", "resident_id", {3: {"name": "김변경"}}, dt.datetime(2026, 11, 3, 10))
    tue = extract(Q, TUE, cfg)
    assert tue.mode == "incremental" and tue.rows == 1
    tue_bytes, tue_manifest = tue.path.read_bytes(), tue.manifest_path.read_bytes()
    manifest = json.loads(tue_manifest)
    # The window starts where Monday's snapshot ended, reading back the 48 h lookback.
    assert manifest["window"]["low"] == "2026-11-03T00:00:00" and manifest["mode"] == "incremental"
    sun = extract(Q, SUN2, cfg)
    assert (sun.mode, sun.mode_reason) == ("full", "weekly full snapshot (sunday)")
    assert sun.rows == first.rows
    mon = extract(Q, MON2, cfg)
    assert mon.mode == "incremental" and mon.rows == 0  # Sunday's snapshot holds every change so far
    # Reruns repeat what the date's first extraction took, whatever the weekday rule says: a window
    # the same recorded range (same bytes), a snapshot the whole table as it is now.
    again = extract(Q, TUE, cfg)
    assert (again.path.read_bytes(), again.manifest_path.read_bytes()) == (tue_bytes, tue_manifest)
    again = extract(Q, MON, cfg)
    assert (again.mode, again.mode_reason) == (first.mode, first.mode_reason)
    state = json.loads(state_path(entity(Q), cfg).read_text())["windows"]
    assert {d: w.get("mode", "incremental") for d, w in state.items()} == {
        MON: "full", TUE: "incremental", SUN2: "full", MON2: "incremental"}
    assert chain(entity(Q), TUE, cfg) == [MON, TUE]
    assert chain(entity(Q), MON2, cfg) == [SUN2, MON2]
    # Entities configured full are untouched by the schedule.
    assert extract("moj.foreign_residents", TUE, cfg).mode == "full"


@pytest.mark.parametrize(("extra", "message"), [
    ({"mode": "incremental"}, "incremental mode needs snapshot_weekday"),
    ({"mode": "incremental", "snapshot_weekday": "sun"}, "snapshot_weekday must be one of"),
    ({"snapshot_weekday": "sunday"}, "applies to mode: incremental only"),
])
def test_a_schedule_that_cannot_work_is_refused_at_load(tmp_path: Path, extra, message):
    spec = {"agencies": {"x": {"name": "X", "owner": "o", "sensitivity": "s", "conn_id": "zerodoc_x",
                               "kind": "postgres", "entities": {"e": {
                                   "table": "x.e", "key": "id", "cursor": "updated_at", "suite": "x__e",
                                   "columns": {"id": "int64", "updated_at": "timestamp"}, **extra}}}}}
    path = tmp_path / "sources.yml"
    path.write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match=message):
        agencies(path)


def _keys(found) -> set[bytes]:
    """The 32-byte keys of an S32 array: numpy's items drop trailing NUL bytes, which a digest can end with."""
    return {bytes(k).ljust(32, b"\0") for k in found.tolist()}


def _pseudonyms(rrns) -> set[bytes]:
    key = os.environ["ZERODOC_PSEUDONYM_KEY"].encode()
    return {bytes.fromhex(pseudonymize(r, key)) for r in rrns}


def test_quarantine_carries_across_windows_until_a_valid_version_or_a_delete(source):
    from zerodoc.api.index import quarantined_pseudonyms

    cfg = source
    _, sunday = _extract_and_validate(cfg, Q, SUN)
    bad = pq.read_table(sunday.quarantine_path)
    source_ids = pq.read_table(cfg.sources_dir / "mois/residents.parquet")["resident_id"].to_pylist()
    # Rejects with a well-formed number and a key of their own (a duplicated key stays rejected).
    candidates = [k for k, rrn in zip(bad["resident_id"].to_pylist(), bad["rrn"].to_pylist(), strict=True)
                  if rrn is not None and rrn_reason(rrn) is None and k is not None and source_ids.count(k) == 1]
    assert len(candidates) >= 3, "the generator plants quarantined residents"
    fixed, deleted, kept = candidates[:3]
    rows = {r["resident_id"]: r for r in pq.read_table(cfg.sources_dir / "mois/residents.parquet").to_pylist()}
    good = next(k for k, r in rows.items() if k not in set(bad["resident_id"].to_pylist()) and r["deleted_at"] is None)
    monday = dt.datetime(2026, 11, 2, 10)
    _edit(cfg, "residents", "resident_id", {
        fixed: {c: rows[good][c] for c in ("name", "sex", "birth_date", "household_id", "sigungu_code",
                                           "moved_in_date")},
        deleted: {"deleted_at": monday},
        good: {"sex": "X"},  # now fails sex_in_set
    }, monday)
    r, out = _extract_and_validate(cfg, Q, MON)
    assert r.mode == "incremental" and out.extracted == 3
    assert pq.read_table(out.quarantine_path)["resident_id"].to_pylist() == [good]
    # The auditor's report says what was checked: only the rows changed in the window.
    assert "Checked: an incremental window" in out.report_path.read_text(encoding="utf-8")
    assert "Checked: a full snapshot" in sunday.report_path.read_text(encoding="utf-8")

    got = _keys(quarantined_pseudonyms("residence_v1", MON, cfg))
    by_key = {k: rows[k]["rrn"] for k in (fixed, deleted, kept, good)}
    # Still quarantined: Sunday's rejects untouched since, and Monday's new reject.
    assert _pseudonyms([by_key[kept], by_key[good]]) <= got
    # No longer: the one that arrived valid, the one cancelled (a tombstone).
    assert not _pseudonyms([by_key[fixed], by_key[deleted]]) & got
    sunday_rrns = [x for x in bad["rrn"].to_pylist() if x is not None]
    assert got == _pseudonyms([x for x, k in zip(bad["rrn"].to_pylist(), bad["resident_id"].to_pylist(), strict=True)
                               if x is not None and k not in (fixed, deleted)] + [by_key[good]])
    # Monday's partition alone would have named only Monday's reject: the carry is what keeps the rest.
    assert _keys(quarantined_pseudonyms("residence_v1", SUN, cfg)) == _pseudonyms(sunday_rrns)


def test_a_quarantined_household_marks_the_members_it_has_now(source):
    from zerodoc.api.index import quarantined_pseudonyms

    cfg = source
    _extract_and_validate(cfg, Q, SUN)
    _extract_and_validate(cfg, "mois.households", SUN)
    residents = pq.read_table(cfg.sources_dir / "mois/residents.parquet").to_pylist()
    live = [r for r in residents if r["deleted_at"] is None]
    sizes: dict[int, list[dict]] = {}
    for r in live:
        sizes.setdefault(r["household_id"], []).append(r)
    hid, members = next((h, m) for h, m in sizes.items() if len(m) >= 2)
    other = next(h for h in sizes if h != hid)
    stays, leaves = members[0], members[1]
    monday = dt.datetime(2026, 11, 2, 10)
    _edit(cfg, "households", "household_id", {hid: {"registered_date": "20261340"}}, monday)  # no such day
    _edit(cfg, "residents", "resident_id", {leaves["resident_id"]: {"household_id": other}}, monday)
    _, hh = _extract_and_validate(cfg, "mois.households", MON)
    assert pq.read_table(hh.quarantine_path)["household_id"].to_pylist() == [hid]
    r, _ = _extract_and_validate(cfg, Q, MON)
    assert r.mode == "incremental" and r.rows == 1

    got = _keys(quarantined_pseudonyms("residence_v1", MON, cfg))
    assert _pseudonyms([stays["rrn"]]) <= got
    assert not _pseudonyms([leaves["rrn"]]) & got  # moved out on Monday: its own household is fine
    # Tuesday: nothing changes, and the household is still quarantined, its member still marked.
    _extract_and_validate(cfg, "mois.households", TUE)
    _extract_and_validate(cfg, Q, TUE)
    assert _pseudonyms([stays["rrn"]]) <= _keys(quarantined_pseudonyms("residence_v1", TUE, cfg))


def test_every_copy_of_a_duplicated_key_stays_a_member(zerodoc_home):
    import duckdb

    from zerodoc.sources.current import current_rows_sql

    cfg = settings()
    # Both copies of resident 5 were rejected (a duplicated key): each names a person of household 10.
    for zone, rows in ((cfg.quarantine_dir, {"resident_id": [5, 5], "rrn": ["a", "b"], "household_id": [10, 10]}),
                       (cfg.validated_dir, {"resident_id": [6], "rrn": ["c"], "household_id": [11]})):
        path = zone / "mois" / "residents" / f"ds={SUN}" / "part-0.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table(rows), path)
    sql = current_rows_sql(entity(Q), SUN, cfg, ["rrn", "household_id"], where="household_id IN (10)")
    assert sorted(r[0] for r in duckdb.sql(sql).fetchall()) == ["a", "b"]
