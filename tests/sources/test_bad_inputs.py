"""The bad-input corpus (bad_inputs/cases.yml): each case ends in its exact reason or message."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from tests.servers import scratch_mariadb, scratch_postgres
from zerodoc.catalog import agencies, entity
from zerodoc.config import settings
from zerodoc.sources import agency_server
from zerodoc.sources import extract as ex
from zerodoc.sources.agency_server import Fault, serve
from zerodoc.sources.extract import SourceDataError, SourceUnavailableError, extract
from zerodoc.sources.generate import generate
from zerodoc.sources.servers import load_servers

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yml").read_text(encoding="utf-8"))
DS = "2026-11-20"


def test_corpus_has_at_least_25_cases():
    # +1: database down mid-extract below
    assert len(CASES["csv"]) + len(CASES["http"]) + len(CASES["rest_records"]) + 1 >= 25


def _drop(home: Path, case: dict, monkeypatch) -> str:
    q = case["entity"]
    agency, name = q.split(".")
    folder = home / "drop" / agency / name / "2026-11-01"
    folder.mkdir(parents=True)
    shutil.copy(CORPUS / "files" / case["file"], folder / case["file"])
    monkeypatch.setenv(f"AIRFLOW_CONN_{agencies()[agency].conn_id.upper()}", f"file://{home / 'drop'}")
    return q


@pytest.mark.parametrize("name", sorted(CASES["csv"]))
def test_csv_case(name, zerodoc_home, monkeypatch):
    case = CASES["csv"][name]
    q = _drop(zerodoc_home, case, monkeypatch)
    cfg = settings()
    if "fails" in case:
        with pytest.raises(SourceDataError) as err:
            extract(q, DS, cfg)
        assert case["fails"] in str(err.value)
        assert case["file"] in str(err.value)
        assert not (cfg.raw_dir / q.replace(".", "/") / f"ds={DS}").exists()  # nothing half-written
        return
    r = extract(q, DS, cfg)
    table = pq.read_table(r.path)
    manifest = json.loads(r.manifest_path.read_text())
    # Row accounting: every data record of the file is one raw row, parse errors included.
    assert r.rows == manifest["rows"] == table.num_rows == case["rows"]
    errors = {row["_line_number"]: row["_parse_error"]
              for row in table.filter(pc.is_valid(table["_parse_error"])).to_pylist()}
    assert errors == case.get("errors", {})
    assert manifest["parse_errors"] == len(errors)
    for row in table.filter(pc.is_valid(table["_parse_error"])).to_pylist():
        assert row["_raw_line"], "a rejected line keeps its source text"
        assert row["_source_file"].endswith(case["file"])
    flags = {row["_line_number"]: row["_flags"] for row in table.filter(pc.is_valid(table["_flags"])).to_pylist()}
    assert flags == case.get("flags", {})
    by_line = {row["_line_number"]: row for row in table.to_pylist()}
    for line, values in case.get("verbatim", {}).items():
        for col, value in values.items():
            assert by_line[line][col] == value
    if "lines" in case:
        assert table["_line_number"].to_pylist() == case["lines"]
    if "encoding" in case:
        assert manifest["source"]["files"][0]["encoding"] == case["encoding"]
    # Rerun of the same logical date: byte-identical partition.
    data = r.path.read_bytes()
    assert extract(q, DS, cfg).path.read_bytes() == data


@pytest.mark.parametrize("name", sorted(n for n, c in CASES["csv"].items() if "fails" not in c))
def test_fast_and_exact_csv_readers_write_the_same_bytes(name, zerodoc_home, monkeypatch):
    q = _drop(zerodoc_home, CASES["csv"][name], monkeypatch)
    cfg = settings()
    fast = extract(q, DS, cfg)
    data, manifest = fast.path.read_bytes(), fast.manifest_path.read_bytes()
    monkeypatch.setattr(ex, "CSV_FAST_PATH", False)
    exact = extract(q, DS, cfg)
    assert (exact.path.read_bytes(), exact.manifest_path.read_bytes()) == (data, manifest)


# One GX run per case costs seconds: a representative set, every outcome kind covered.
VALIDATED = ["duplicate_keys", "formula_text", "fullwidth_digits", "impossible_dates", "invalid_resident_number",
             "truncated_last_line"]


@pytest.mark.parametrize("name", VALIDATED)
def test_validation_quarantines_exactly_the_bad_rows(name, zerodoc_home, monkeypatch):
    from zerodoc.quality.validate import validate_partition

    case = CASES["csv"][name]
    q = _drop(zerodoc_home, case, monkeypatch)
    cfg = settings()
    r = extract(q, DS, cfg)
    out = validate_partition(entity(q).suite, r.path, DS, cfg)
    want = len(case.get("errors", {})) + sum(case.get("quarantined", {}).values())
    assert out.extracted == r.rows == out.passed + out.quarantined
    assert out.quarantined == want
    if want:
        reasons = pq.read_table(out.quarantine_path)["_reasons"].to_pylist()
        ids = {x["expectation_id"] for row in reasons for x in row}
        assert ids >= set(case.get("quarantined", {})) | ({"line_parsed"} if case.get("errors") else set())


# ---- REST ---------------------------------------------------------------------------------------


@pytest.fixture
def rest_source(zerodoc_home, monkeypatch):
    cfg = settings()
    generate(1500, 5, cfg.sources_dir)
    monkeypatch.setattr(ex, "REST_ATTEMPTS", 3)
    monkeypatch.setattr(ex, "REST_BACKOFF_S", 0.01)
    monkeypatch.setattr(ex, "REST_TIMEOUT_S", 0.5)
    monkeypatch.setattr(ex, "REST_PAGE_SIZE", 50)
    monkeypatch.setattr(agency_server, "SLOW_SECONDS", 1.5)
    return cfg


@pytest.mark.parametrize("name", sorted(CASES["http"]))
def test_http_case(name, rest_source, monkeypatch):
    cfg = rest_source
    case = CASES["http"][name]
    q = "mohw.disability_registry"
    faults = {q: [Fault(str(f["kind"]), f["request"], f["times"]) for f in case["faults"]]}
    want = pq.read_table(cfg.sources_dir / "mohw/disability_registry.parquet")
    declared = list(entity(q).columns)
    with serve(cfg.sources_dir, faults) as url:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOHW", url)
        if "fails" in case:
            kind = SourceUnavailableError if case.get("retryable") else SourceDataError
            with pytest.raises(kind) as err:
                extract(q, DS, cfg)
            assert case["fails"].replace("%URL%", f"{url}/v1/mohw/disability_registry") in str(err.value)
            assert not (cfg.raw_dir / "mohw/disability_registry" / f"ds={DS}").exists()
            return
        r = extract(q, DS, cfg)
    got = pq.read_table(r.path)
    assert got.num_rows == want.num_rows
    assert got["_parse_error"].null_count == got.num_rows  # page faults never become record defects
    got = got.select(declared)
    assert got.sort_by([("registration_id", "ascending"), ("updated_at", "ascending")]).equals(
        want.sort_by([("registration_id", "ascending"), ("updated_at", "ascending")]))


@pytest.mark.parametrize("name", sorted(CASES["rest_records"]))
def test_rest_record_case(name, rest_source, monkeypatch):
    """A bad record inside a good page is quarantined with its exact reason; its page neighbours pass."""
    import json as _json

    from zerodoc.quality.validate import validate_partition

    cfg = rest_source
    case = CASES["rest_records"][name]
    q = "mohw.disability_registry"
    faults = {q: [Fault(f["kind"], key=f["key"], field=f.get("field"), value=f.get("value"))
                  for f in case["faults"]]}
    source = pq.read_table(cfg.sources_dir / "mohw/disability_registry.parquet").sort_by("registration_id")
    with serve(cfg.sources_dir) as url:  # the clean source first: what its planted defects reject
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOHW", url)
        clean = validate_partition(entity(q).suite, extract(q, DS, cfg).path, DS, cfg)
        baseline = {row["_record_number"]: {x["expectation_id"] for x in row["_reasons"]} for row in
                    pq.read_table(clean.quarantine_path).select(["_record_number", "_reasons"]).to_pylist()}
    with serve(cfg.sources_dir, faults) as url:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOHW", url)
        r = extract(q, DS, cfg)
        data = r.path.read_bytes()
        assert extract(q, DS, cfg).path.read_bytes() == data  # rerun: same bytes, same reasons
    table = pq.read_table(r.path)
    assert r.rows == table.num_rows == source.num_rows  # every record is one raw row, bad ones too
    assert table["_record_number"].to_pylist() == list(range(1, source.num_rows + 1))
    bad = table.filter(pc.is_valid(table["_parse_error"])).to_pylist()
    assert {row["_record_number"]: row["_parse_error"] for row in bad} == case["errors"]
    for row in bad:
        # The record's JSON text as served: the damaged record, not the source row.
        served = _json.loads(row["_raw_record"])  # whole: a truncated text would not parse
        original = source.slice(row["_record_number"] - 1, 1).to_pylist()[0]
        assert served != {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in original.items()}
        assert row["_source_page"] == (row["_record_number"] - 1) // 50 + 1
    good = table.filter(pc.is_null(table["_parse_error"]))
    assert good["_raw_record"].null_count == good.num_rows
    untouched = [i for i in range(source.num_rows) if i + 1 not in case["errors"]]
    assert good.select(list(entity(q).columns)).equals(source.take(untouched))

    out = validate_partition(entity(q).suite, r.path, DS, cfg)
    assert out.extracted == out.passed + out.quarantined == source.num_rows
    quarantined = pq.read_table(out.quarantine_path)
    reasons = {row["_record_number"]: {x["expectation_id"] for x in row["_reasons"]}
               for row in quarantined.select(["_record_number", "_reasons"]).to_pylist()}
    # Exactly the damaged records are added to what the clean source's planted defects reject
    # (a duplicate key, invalid numbers and dates), each of those for the same reasons as before.
    assert len(baseline) == clean.quarantined == 5
    assert set(reasons) == set(case["errors"]) | set(baseline)
    assert out.quarantined == len(set(case["errors"]) | set(baseline))
    assert all("record_parsed" in reasons[n] for n in case["errors"])
    assert all(reasons[n] == baseline[n] for n in set(baseline) - set(case["errors"]))


def test_rest_rerun_is_byte_identical_and_offset_paging_agrees(rest_source, monkeypatch):
    import httpx

    cfg = rest_source
    with serve(cfg.sources_dir) as url:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_FSC", url)
        first = extract("fsc.youth_leap_accounts", DS, cfg)
        data = first.path.read_bytes()
        assert extract("fsc.youth_leap_accounts", DS, cfg).path.read_bytes() == data
        pages = [httpx.get(f"{url}/v1/fsc/youth_leap_accounts", params={"page": p, "page_size": 20}).json()
                 for p in (1, 2)]
    assert pages[0]["total"] == first.rows
    assert [r["account_id"] for r in pages[0]["data"] + pages[1]["data"]] == \
        pq.read_table(first.path)["account_id"].to_pylist()[:40]


# ---- database down mid-extract -----------------------------------------------------------------


@pytest.mark.services
def test_postgres_going_down_mid_extract_fails_clearly_and_writes_nothing(zerodoc_home, monkeypatch, postgres_up):
    import psycopg

    cfg = settings()
    generate(1000, 3, cfg.sources_dir)
    with scratch_postgres() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOJ", uri)
        load_servers({"moj": agencies()["moj"]}, cfg)
        with psycopg.connect(uri, autocommit=True) as conn:
            # The table becomes a slow view so the COPY is still streaming when the server kills it.
            conn.execute("ALTER TABLE moj.foreign_residents RENAME TO foreign_residents_base")
            conn.execute("CREATE VIEW moj.foreign_residents AS SELECT b.* FROM moj.foreign_residents_base b "
                         "CROSS JOIN LATERAL (SELECT pg_sleep(0.05 + 0 * b.foreign_resident_id)) s")

        def kill_copy():
            time.sleep(0.5)
            with psycopg.connect(uri, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND query LIKE 'COPY%' AND pid <> pg_backend_pid()")

        killer = threading.Thread(target=kill_copy)
        killer.start()
        with pytest.raises(SourceUnavailableError, match="PostgreSQL source for moj.foreign_residents unavailable: "
                                                         "terminating connection due to administrator command"):
            extract("moj.foreign_residents", DS, cfg)
        killer.join()
    assert not (cfg.raw_dir / "moj/foreign_residents" / f"ds={DS}").exists()


@pytest.mark.parametrize(("name", "flag", "summary"), [
    ("schema_drift_new_column", "schema_drift: new column(s) memo", "피해 진술 접수"),
    ("schema_drift_missing_column", "schema_drift: missing column(s) summary", None),
])
def test_schema_drift_under_the_evolve_policy_keeps_rows_and_flags_them(name, flag, summary, zerodoc_home,
                                                                        monkeypatch):
    import dataclasses

    ents = agencies()["police"].entities
    monkeypatch.setitem(ents, "crime_victim_cases",
                        dataclasses.replace(ents["crime_victim_cases"], on_schema_drift="evolve"))
    q = _drop(zerodoc_home, CASES["csv"][name], monkeypatch)
    r = extract(q, DS, settings())
    rows = pq.read_table(r.path).to_pylist()
    assert [(x["case_id"], x["summary"], x["_flags"], x["_parse_error"]) for x in rows] == [(1, summary, flag, None)]


# ---- database schema drift ---------------------------------------------------------------------


@pytest.mark.services
def test_postgres_schema_drift_is_named_and_follows_the_policy(zerodoc_home, monkeypatch, postgres_up):
    import dataclasses

    import psycopg

    cfg = settings()
    generate(1000, 3, cfg.sources_dir)
    q = "moj.foreign_residents"
    with scratch_postgres() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_MOJ", uri)
        load_servers({"moj": agencies()["moj"]}, cfg)
        clean = extract(q, DS, cfg).path.read_bytes()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER TABLE moj.foreign_residents ADD COLUMN memo text")
        with pytest.raises(SourceDataError, match=r"^moj\.foreign_residents: schema drift against config/sources\.yml "
                                                  r"in moj\.foreign_residents: new column\(s\) memo \(policy: fail\)$"):
            extract(q, DS, cfg)
        ents = agencies()["moj"].entities
        monkeypatch.setitem(ents, "foreign_residents", dataclasses.replace(ents["foreign_residents"],
                                                                           on_schema_drift="evolve"))
        # Under evolve a new column is left out: the partition is the declared contract, unchanged.
        assert extract(q, DS, cfg).path.read_bytes() == clean
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER TABLE moj.foreign_residents ALTER COLUMN foreign_resident_id TYPE text")
            conn.execute("ALTER TABLE moj.foreign_residents DROP COLUMN visa_type")
        with pytest.raises(SourceDataError, match=r"missing column\(s\) visa_type; retyped column\(s\) "
                                                  r"foreign_resident_id \(declared int64, source text\) "
                                                  r"\(policy: evolve\)$"):
            extract(q, DS, cfg)


@pytest.mark.services
def test_mariadb_schema_drift_is_named(zerodoc_home, monkeypatch, mariadb_up):
    import pymysql

    cfg = settings()
    generate(1000, 3, cfg.sources_dir)
    q = "nts.business_registrations"
    with scratch_mariadb() as uri:
        monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_NTS", uri)
        load_servers({"nts": agencies()["nts"]}, cfg)
        assert extract(q, DS, cfg).rows > 0
        db = uri.rsplit("/", 1)[1]
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("ALTER TABLE business_registrations ADD COLUMN memo TEXT")
            cur.execute("ALTER TABLE business_registrations MODIFY business_registration_id VARCHAR(20)")
            cur.execute("ALTER TABLE business_registrations DROP COLUMN trade_name")
        conn.close()
        with pytest.raises(SourceDataError, match=r"^nts\.business_registrations: schema drift against config/sources"
                                                  r"\.yml in nts\.business_registrations: missing column\(s\) "
                                                  r"trade_name; retyped column\(s\) business_registration_id "
                                                  r"\(declared int64, source varchar\); new column\(s\) memo "
                                                  r"\(policy: fail\)$"):
            extract(q, DS, cfg)
