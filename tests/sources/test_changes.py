"""Soft deletes and late rows through extraction: tombstones in raw that validation passes, and a
cursor lookback that picks a late row up once, never twice, with reruns byte-identical."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.servers import scratch_postgres
from zerodoc.catalog import agencies, entity
from zerodoc.config import settings
from zerodoc.quality.validate import validate_partition
from zerodoc.sources.changes import apply_changes
from zerodoc.sources.extract import extract
from zerodoc.sources.generate import generate
from zerodoc.sources.servers import load_servers
from zerodoc.sources.watermarks import state_path

Q = "mois.residents"
SEED = 11
D1, D2, D3 = "2026-11-01", "2026-11-02", "2026-11-03"
PAYLOAD = ["rrn", "name", "sex", "birth_date", "household_id", "sigungu_code", "address", "moved_in_date"]


@pytest.fixture
def source(zerodoc_home, monkeypatch):
    for a in agencies().values():
        monkeypatch.delenv(f"AIRFLOW_CONN_{a.conn_id.upper()}", raising=False)
    cfg = settings()
    expected = generate(2000, SEED, cfg.sources_dir)
    return cfg, expected


def _pairs(path) -> list[tuple[int, dt.datetime]]:
    t = pq.read_table(path, columns=["resident_id", "updated_at"])
    return list(zip(t["resident_id"].to_pylist(), t["updated_at"].to_pylist(), strict=True))


def test_changes_are_seeded_and_exact(source, tmp_path):
    cfg, _ = source
    before = pq.read_table(cfg.sources_dir / "mois/residents.parquet")
    a = apply_changes(Q, D2, cfg, SEED, deletions=5, updates=10, late=4, late_by_hours=30)
    after = pq.read_table(cfg.sources_dir / "mois/residents.parquet")
    assert (len(a.deleted), len(a.updated), len(a.late)) == (5, 10, 4)
    assert len(set(a.deleted) | set(a.updated) | set(a.late)) == 19
    assert a.late_stamp == "2026-11-01T04:00:00"
    assert after.num_rows == before.num_rows
    rows = {r["resident_id"]: r for r in after.to_pylist()}
    assert {k for k, r in rows.items() if r["deleted_at"] is not None} == set(a.deleted)
    assert all(rows[k]["deleted_at"] == rows[k]["updated_at"] == dt.datetime(2026, 11, 2, 9) for k in a.deleted)
    assert all(rows[k]["updated_at"] == dt.datetime(2026, 11, 2, 10) for k in a.updated)
    assert all(rows[k]["updated_at"] == dt.datetime(2026, 11, 1, 4) for k in a.late)
    changed = after.filter(pc.not_equal(after["updated_at"], before["updated_at"]))
    assert changed.num_rows == 19  # nothing else moved
    # Same seed and day on the same data: the same rows, the same bytes.
    again = tmp_path / "again"
    generate(2000, SEED, again / "sources")
    from zerodoc.config import Settings

    b = apply_changes(Q, D2, Settings(home=again), SEED, deletions=5, updates=10, late=4, late_by_hours=30)
    assert b == a
    assert (again / "sources/mois/residents.parquet").read_bytes() == \
        (cfg.sources_dir / "mois/residents.parquet").read_bytes()
    with pytest.raises(ValueError, match="declares no deleted_column"):
        apply_changes("moj.foreign_residents", D2, cfg, SEED, deletions=1)


def test_full_snapshot_carries_soft_deletes_as_tombstones_that_validation_passes(source):
    cfg, expected = source
    clean = validate_partition("mois__residents", extract(Q, D1, cfg).path, D1, cfg)
    assert clean.quarantined == expected[Q]["quarantined"]
    bad = pq.read_table(clean.quarantine_path)["resident_id"].to_pylist()
    # A planted defect (a resident with no name) is cancelled: its tombstone has no payload to fail.
    nameless = next(k for k in bad if bad.count(k) == 1
                    and pq.read_table(clean.quarantine_path).filter(pc.equal(
                        pq.read_table(clean.quarantine_path)["resident_id"], k))["name"][0].as_py() is None)
    changes = apply_changes(Q, D2, cfg, SEED, deletions=6, delete_keys=[nameless])
    assert len(changes.deleted) == 7

    r = extract(Q, D2, cfg, mode="full")  # a full snapshot on a window day, as an operator can ask
    raw = pq.read_table(r.path)
    manifest = json.loads(r.manifest_path.read_text())
    assert raw.num_rows == r.rows == expected[Q]["extracted"]  # a soft delete is still a row
    assert manifest["tombstones"] == 7
    tombs = raw.filter(pc.equal(raw["_op"], "delete"))
    assert sorted(tombs["resident_id"].to_pylist()) == sorted(changes.deleted)
    assert set(raw.filter(pc.not_equal(raw["_op"], "delete"))["_op"].to_pylist()) == {"snapshot"}
    for col in PAYLOAD:  # a cancelled registration's personal data goes no further
        assert tombs[col].null_count == 7, col
    assert tombs["deleted_at"].null_count == 0 and tombs["updated_at"].null_count == 0

    out = validate_partition("mois__residents", r.path, D2, cfg)
    assert out.extracted == out.passed + out.quarantined == raw.num_rows
    quarantined = set(pq.read_table(out.quarantine_path)["resident_id"].to_pylist())
    assert quarantined == set(bad) - set(changes.deleted)
    assert out.quarantined == clean.quarantined - len(set(bad) & set(changes.deleted))
    assert {c.id: c.unexpected_count for c in out.checks}["tombstone_has_key"] == 0
    passed = pq.read_table(out.validated_path)
    assert pc.sum(pc.equal(passed["_op"], "delete")).as_py() == 7  # tombstones reach staging
    assert extract(Q, D2, cfg).path.read_bytes() == r.path.read_bytes()


def _scenario(cfg, reload=lambda: None) -> dict:
    """D1 takes everything; day 2 soft-deletes 5 and changes 10; day 3 changes 3, and 4 corrections
    are stamped 30 h back (into D2's window, already read), 1 stamped 90 h back (before the read range
    of D2 and D3 alike: beyond the lookback)."""
    reload()
    r1 = extract(Q, D1, cfg, mode="incremental")
    c2 = apply_changes(Q, D2, cfg, SEED, deletions=5, updates=10)
    reload()
    r2 = extract(Q, D2, cfg, mode="incremental")
    c3 = apply_changes(Q, D3, cfg, SEED, updates=3, late=4, late_by_hours=30,
                       exclude=c2.deleted + c2.updated)
    too_late = apply_changes(Q, D3, cfg, SEED + 1, late=1, late_by_hours=90,
                             exclude=c2.deleted + c2.updated + c3.updated + c3.late)
    reload()
    r3 = extract(Q, D3, cfg, mode="incremental")
    return {"r": (r1, r2, r3), "c2": c2, "c3": c3, "too_late": too_late}


def _assert_scenario(cfg, expected, s) -> None:
    r1, r2, r3 = s["r"]
    c2, c3, too_late = s["c2"], s["c3"], s["too_late"]
    assert r1.rows == expected[Q]["extracted"]
    assert r2.rows == 15
    t2 = pq.read_table(r2.path)
    assert sorted(t2["resident_id"].to_pylist()) == sorted(c2.deleted + c2.updated)
    assert sorted(t2.filter(pc.equal(t2["_op"], "delete"))["resident_id"].to_pylist()) == sorted(c2.deleted)
    assert json.loads(r2.manifest_path.read_text())["tombstones"] == 5
    # D3 reads back to 2026-11-01 00:00: the 4 late corrections (stamped inside D2's window) are
    # picked up here; the untouched originals and D2's rows in that range are not taken twice.
    t3 = pq.read_table(r3.path)
    assert r3.rows == 7
    assert sorted(t3["resident_id"].to_pylist()) == sorted(c3.updated + c3.late)
    late_rows = t3.filter(pc.is_in(t3["resident_id"], pc.cast(c3.late, "int64")))
    assert set(late_rows["updated_at"].to_pylist()) == {dt.datetime(2026, 11, 2, 4)}
    assert set(t3["_op"].to_pylist()) == {"upsert"}
    window = json.loads(r3.manifest_path.read_text())["window"]
    assert window == {"cursor": "updated_at", "low": "2026-11-03T00:00:00", "high": "2026-11-04T00:00:00",
                      "lookback_hours": 48, "read_low": "2026-11-01T00:00:00"}

    # Never duplicated: no row version is in two partitions (the source's own duplicate key aside,
    # which is two identical rows within D1 for validation to reject).
    parts = [_pairs(r.path) for r in (r1, r2, r3)]
    across = [p for part in parts for p in set(part)]
    assert len(across) == len(set(across))
    # Never lost within the lookback: every current version of every row is in some partition,
    # except the one stamped 90 h back, before any later read range (the documented limit).
    current = set(_pairs(cfg.sources_dir / "mois/residents.parquet"))
    missing = current - set(across)
    assert {k for k, _ in missing} == set(too_late.late)
    assert sum(r.rows for r in (r1, r2, r3)) == expected[Q]["extracted"] + 15 + 7

    # Reruns of the later dates read the same rows: byte-identical, manifest included.
    for r in (r2, r3):
        data, manifest = r.path.read_bytes(), r.manifest_path.read_bytes()
        again = extract(Q, r.logical_date, cfg, mode="incremental")
        assert (again.path.read_bytes(), again.manifest_path.read_bytes()) == (data, manifest)
    state = json.loads(state_path(entity(Q), cfg).read_text())
    assert state["windows"][D3]["read_low"] == "2026-11-01T00:00:00"

    # Accounting holds on each partition, tombstones included.
    for r in (r2, r3):
        out = validate_partition("mois__residents", r.path, r.logical_date, cfg)
        assert out.extracted == out.passed + out.quarantined == r.rows


def test_late_rows_are_picked_up_once_and_reruns_are_identical(source):
    cfg, expected = source
    _assert_scenario(cfg, expected, _scenario(cfg))


def test_a_full_snapshot_recovers_a_row_beyond_the_lookback(source):
    cfg, _ = source
    s = _scenario(cfg)
    full = pq.read_table(extract(Q, "2026-11-04", cfg, mode="full").path)
    assert set(s["too_late"].late) <= set(full["resident_id"].to_pylist())


@pytest.mark.services
def test_postgres_pushdown_gives_the_same_partitions(source, monkeypatch, postgres_up):
    cfg, expected = source
    with scratch_postgres() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOIS", uri)
        s = _scenario(cfg, reload=lambda: load_servers({"mois": agencies()["mois"]}, cfg))
        _assert_scenario(cfg, expected, s)
        assert json.loads(s["r"][2].manifest_path.read_text())["source"]["kind"] == "postgres"


@pytest.mark.parametrize(("patch", "message"), [
    ({"deleted_column": "name"}, "deleted_column 'name' must be a declared timestamp or bool column"),
    ({"deleted_column": "gone_at"}, "deleted_column 'gone_at' must be a declared timestamp or bool column"),
    ({"lookback_hours": -1}, "lookback_hours must be a whole number >= 0"),
    ({"lookback_hours": 12, "cursor": None, "mode": None, "snapshot_weekday": None},
     "lookback_hours must be a whole number >= 0 and needs a cursor"),
])
def test_config_rejects_a_bad_deletion_or_lookback_setting(patch, message, tmp_path):
    import yaml

    from zerodoc.catalog import agencies as load
    from zerodoc.config import REPO_ROOT, ConfigError

    doc = yaml.safe_load((REPO_ROOT / "config/sources.yml").read_text(encoding="utf-8"))
    residents = doc["agencies"]["mois"]["entities"]["residents"]
    residents.update(patch)
    for k in [k for k, v in residents.items() if v is None]:  # None: leave the setting out
        residents.pop(k)
    path = tmp_path / "sources.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"mois.residents: {message}"):
        load(path)


@pytest.mark.services
def test_mariadb_pushdown_of_the_lookback_equals_the_file_filter(zerodoc_home, tmp_path, monkeypatch, mariadb_up):
    """nts.business_registrations on MariaDB: the read range (low - 48 h, high] is pushed down and the
    late corrections land in the next partition, as with the file stand-in."""
    from tests.servers import scratch_mariadb
    from zerodoc.config import Settings

    q, days = "nts.business_registrations", ("2026-10-15", "2026-10-16")
    for a in agencies().values():
        monkeypatch.delenv(f"AIRFLOW_CONN_{a.conn_id.upper()}", raising=False)

    def run(cfg, reload) -> tuple[list, object]:
        generate(2000, SEED, cfg.sources_dir)
        reload()
        first = extract(q, days[0], cfg, mode="incremental")
        changes = apply_changes(q, days[1], cfg, SEED, updates=4, late=3, late_by_hours=30)
        reload()
        second = extract(q, days[1], cfg, mode="incremental")
        return [pq.read_table(r.path) for r in (first, second)], changes

    files, changes = run(settings(), lambda: None)
    with scratch_mariadb() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_NTS", uri)
        cfg = Settings(home=tmp_path / "mariadb_home")
        served, again = run(cfg, lambda: load_servers({"nts": agencies()["nts"]}, cfg))
    assert again == changes
    order = [("business_registration_id", "ascending"), ("updated_at", "ascending")]
    for f, m in zip(files, served, strict=True):  # the server sorts by key, the stand-in is file order
        assert m.num_rows == f.num_rows and m.sort_by(order).equals(f.sort_by(order))
    late = files[1].filter(pc.is_in(files[1]["business_registration_id"], pc.cast(changes.late, "int64")))
    assert late.num_rows == 3 and set(late["updated_at"].to_pylist()) == {dt.datetime(2026, 10, 15, 4)}
    assert not set(changes.late) & set(files[0].filter(
        pc.equal(files[0]["updated_at"], dt.datetime(2026, 10, 15, 4)))["business_registration_id"].to_pylist())
