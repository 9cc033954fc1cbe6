import json

import pyarrow.parquet as pq
import pytest

from tests.servers import agency_servers, scratch_postgres
from zerodoc.catalog import agencies, entity
from zerodoc.config import settings
from zerodoc.sources.extract import SourceUnavailableError, extract
from zerodoc.sources.generate import generate
from zerodoc.sources.servers import load_servers

ENTITIES = {"mois.residents": "resident_id", "mois.households": "household_id", "nts.income": "income_id",
            "nts.business_registrations": "business_registration_id", "moj.foreign_residents": "foreign_resident_id"}


@pytest.fixture
def stand_ins(zerodoc_home, monkeypatch):
    for k in ("AIRFLOW_CONN_ZERODOC_MOIS", "AIRFLOW_CONN_ZERODOC_NTS", "AIRFLOW_CONN_ZERODOC_MOJ",
              "AIRFLOW_CONN_ZERODOC_MOHW", "AIRFLOW_CONN_ZERODOC_FSC"):
        monkeypatch.delenv(k, raising=False)
    cfg = settings()
    return cfg, generate(2000, 3, cfg.sources_dir)


def _source_table(cfg, qualified):
    agency, name = qualified.split(".")
    return pq.read_table(cfg.sources_dir / agency / f"{name}.parquet")


def test_file_stand_in_extract_writes_partition_and_manifest(stand_ins):
    cfg, expected = stand_ins
    r = extract("mois.residents", "2026-11-27", cfg)
    assert r.path == cfg.raw_dir / "mois/residents/ds=2026-11-27/part-0.parquet"
    manifest = json.loads(r.manifest_path.read_text())
    assert manifest["rows"] == r.rows == expected["mois.residents"]["extracted"]
    assert manifest["checksum"] == r.checksum
    assert manifest["schema"][0] == ["resident_id", "int64"]
    got = pq.read_table(r.path)
    # Residents declare a soft-delete column: each raw row carries its operation; nobody is deleted here.
    assert got.column_names[-1] == "_op"
    assert set(got["_op"].to_pylist()) == {"snapshot"}
    assert got.drop_columns(["_op"]).equals(_source_table(cfg, "mois.residents"))


def test_rerun_is_byte_identical(stand_ins):
    cfg, _ = stand_ins
    first = extract("nts.income", "2026-11-27", cfg)
    data, manifest = first.path.read_bytes(), first.manifest_path.read_bytes()
    second = extract("nts.income", "2026-11-27", cfg)
    assert second.path.read_bytes() == data
    assert second.manifest_path.read_bytes() == manifest
    assert sorted(p.name for p in first.path.parent.parent.iterdir()) == ["ds=2026-11-27"]


def test_missing_stand_in_says_what_to_do(zerodoc_home, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_ZERODOC_MOIS", raising=False)
    with pytest.raises(SourceUnavailableError, match="zerodoc generate"):
        extract("mois.residents", "2026-11-27", settings())
    assert not (settings().raw_dir / "mois/residents/ds=2026-11-27").exists()


@pytest.mark.services
def test_real_servers_give_the_same_rows_as_the_stand_ins(stand_ins, postgres_up, mariadb_up, monkeypatch):
    cfg, expected = stand_ins
    with agency_servers(), scratch_postgres() as moj:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOJ", moj)
        counts = load_servers(agencies(), cfg)
        assert counts == {q: expected[q]["extracted"] for q in ENTITIES}
        for qualified, key in ENTITIES.items():
            r = extract(qualified, "2026-11-28", cfg)
            got = pq.read_table(r.path).select(list(entity(qualified).columns))
            want = _source_table(cfg, qualified)
            assert got.num_rows == want.num_rows
            # NULLs, Hangul and timestamps survive COPY / the MariaDB cursor unchanged
            assert got.sort_by(key).equals(want.sort_by(key)), qualified
            manifest = json.loads(r.manifest_path.read_text())
            assert manifest["source"]["kind"] in {"postgres", "mysql"}


@pytest.mark.services
def test_unreachable_server_is_a_clear_retryable_error(stand_ins, monkeypatch):
    cfg, _ = stand_ins
    monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOIS", "postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(SourceUnavailableError, match="PostgreSQL source for mois.residents unavailable"):
        extract("mois.residents", "2026-11-27", cfg)
    assert not (cfg.raw_dir / "mois/residents/ds=2026-11-27").exists()


def _batches(n: int, log: list, fail_at: int | None = None):
    import pyarrow as pa

    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"source broke at batch {i}")
            log.append(i)
            yield pa.record_batch({"i": [i]})
    finally:
        log.append("closed")


def test_read_ahead_keeps_order_and_stops_the_source_with_its_consumer():
    from zerodoc.sources.extract import read_ahead

    log: list = []
    assert [b.column(0)[0].as_py() for b in read_ahead(_batches(50, log), 2, "t")] == list(range(50))
    assert log[-1] == "closed"

    log.clear()
    reader = read_ahead(_batches(10_000, log), 2, "t")
    assert next(reader).column(0)[0].as_py() == 0
    reader.close()  # the writer failed: the producer stops and the source is closed, not read to its end
    assert log[-1] == "closed" and len(log) < 10


def test_read_ahead_raises_the_sources_error_in_the_writer():
    from zerodoc.sources.extract import read_ahead

    log: list = []
    got = []
    with pytest.raises(ValueError, match="source broke at batch 3"):
        for b in read_ahead(_batches(10, log, fail_at=3), 2, "t"):
            got.append(b.column(0)[0].as_py())
    assert got == [0, 1, 2] and log[-1] == "closed"
