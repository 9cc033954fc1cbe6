"""End to end through dbt: marts from a tiny validated zone, pseudonyms, no raw IDs, contracts, export."""

from __future__ import annotations

import json
import re
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest

from zerodoc.config import Settings
from zerodoc.privacy import contains_rrn, hmac_pads, normalize_id, pseudonymize
from zerodoc.transform.runner import (
    DAILY_BUILD_ARGS,
    DbtRunError,
    content_digest,
    contract_columns,
    contract_hash,
    export_mart,
    run_dbt,
    warehouse_needs_full_refresh,
)

from .conftest import DS, INCOME, RESIDENTS, write_validated_zone

MARTS = ("residence_v1", "income_v1")
PSEUDONYM = re.compile(r"[0-9a-f]{64}")
RESIDENCE_COLUMNS = [
    ("subject_pseudonym", "VARCHAR"), ("sido_code", "VARCHAR"), ("sido_name", "VARCHAR"),
    ("sigungu_code", "VARCHAR"), ("sigungu_name", "VARCHAR"), ("household_id", "BIGINT"),
    ("household_size", "BIGINT"), ("is_household_head", "BOOLEAN"), ("moved_in_on", "DATE"),
    ("as_of", "DATE"),
]  # fmt: skip
INCOME_COLUMNS = [
    ("subject_pseudonym", "VARCHAR"), ("tax_year", "INTEGER"), ("earned_income_krw", "BIGINT"),
    ("business_income_krw", "BIGINT"), ("other_income_krw", "BIGINT"), ("total_income_krw", "BIGINT"),
    ("filed_on", "DATE"), ("as_of", "DATE"),
]  # fmt: skip


def _rows(cfg: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def _columns(cfg: Settings, schema: str, table: str) -> list[tuple[str, str]]:
    return _rows(
        cfg,
        "select column_name, data_type from information_schema.columns "
        f"where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position",
    )


def test_build_succeeds_and_reports_every_node(built):
    _, summary = built
    assert summary.success and not summary.failed
    ids = {n.unique_id for n in summary.nodes}
    assert {"model.zerodoc.residence_v1", "model.zerodoc.income_v1", "seed.zerodoc.regions"} <= ids
    assert any(i.startswith("unit_test.zerodoc.int_households_sized.") for i in ids)
    assert all(n.execution_time >= 0 for n in summary.nodes)
    assert json.loads(json.dumps(summary.as_dict()))["failed"] == []


def test_marts_have_the_contracted_columns(built):
    cfg, _ = built
    # Mart rows do not repeat the run's as_of: it is one row of shared.build_as_of, stamped on publish.
    assert _columns(cfg, "shared", "residence_v1") == RESIDENCE_COLUMNS[:-1]
    assert _columns(cfg, "shared", "income_v1") == INCOME_COLUMNS[:-1]
    assert _rows(cfg, "select cast(as_of as varchar) from shared.build_as_of") == [(DS,)]


def test_residence_one_row_per_person_with_household_and_region(built, pseudonym_key):
    cfg, _ = built
    rows = {
        r[0]: r[1:]
        for r in _rows(
            cfg,
            "select subject_pseudonym, sido_code, sido_name, sigungu_code, sigungu_name, household_id, "
            "household_size, is_household_head, cast(moved_in_on as varchar), "
            "(select cast(as_of as varchar) from shared.build_as_of) from shared.residence_v1",
        )
    }
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    # 이영희's two registry rows collapse into one person; her newer row (moved in 2015) wins.
    assert rows == {
        p("800101-1234567"): ("11", "서울특별시", "11110", "종로구", 100, 3, True, "2015-01-01", DS),
        p("820202-2345678"): ("11", "서울특별시", "11110", "종로구", 100, 3, False, "2015-01-01", DS),
        p("100303-3456789"): ("11", "서울특별시", "11110", "종로구", 100, 3, False, "2015-01-01", DS),
        p("900404-1111111"): ("26", "부산광역시", "26350", "해운대구", 200, 1, True, "2020-06-01", DS),
    }


def test_income_one_row_per_person_and_year_latest_filing_wins(built, pseudonym_key):
    cfg, _ = built
    rows = _rows(
        cfg,
        "select subject_pseudonym, tax_year, earned_income_krw, business_income_krw, other_income_krw, "
        "total_income_krw, cast(filed_on as varchar), (select cast(as_of as varchar) from shared.build_as_of) "
        "from shared.income_v1 order by subject_pseudonym, tax_year",
    )
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    expected = [
        (p("800101-1234567"), 2023, 30_000_000, 0, 0, 30_000_000, "2024-05-31", DS),
        (p("800101-1234567"), 2024, 31_000_000, 0, 100, 31_000_100, "2025-05-31", DS),
        (p("900404-1111111"), 2024, 0, 13_500_000, 250_000, 13_750_000, "2025-07-15", DS),
    ]
    assert rows == sorted(expected)


def test_no_model_carries_a_raw_national_id(built):
    cfg, _ = built
    schemas = ("staging", "intermediate", "shared")
    named_rrn = _rows(
        cfg,
        "select table_schema, table_name from information_schema.columns "
        f"where column_name ilike '%rrn%' and table_schema in {schemas}",
    )
    assert named_rrn == []
    tables = _rows(
        cfg, f"select table_schema, table_name from information_schema.tables where table_schema in {schemas}"
    )
    assert {("shared", m) for m in MARTS} <= set(tables)
    # Staging views read the validated zone and need the temp macro, so scan them through dbt's
    # own plugin; marts and intermediate views are scanned as stored.
    from zerodoc.transform.dbt_plugin import Plugin

    raw_ids = {normalize_id(r[1]) for r in RESIDENTS} | {normalize_id(i[1]) for i in INCOME}
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        Plugin(name="dbt_plugin", plugin_config={}).configure_connection(con)
        for schema, table in tables:
            for row in con.execute(f"select * from {schema}.{table}").fetchall():
                for value in map(str, row):
                    leaked = any(raw in normalize_id(value) for raw in raw_ids)
                    assert not leaked, f"raw ID in {schema}.{table}"
                    # ~1.4% of hex HMACs contain 13 digits in a row, which contains_rrn reads as an
                    # RRN; a pseudonym is recognised by its shape and checked by the line above.
                    if not PSEUDONYM.fullmatch(value):
                        assert not contains_rrn(value), f"{schema}.{table} holds an RRN-shaped value"


def test_pseudonym_equals_python_hmac(built, pseudonym_key):
    cfg, _ = built
    got = {r[0] for r in _rows(cfg, "select subject_pseudonym from shared.income_v1")}
    # NTS writes one ID without the hyphen: the digits-only normalisation must still join it.
    assert got == {
        pseudonymize("800101-1234567", pseudonym_key),
        pseudonymize("9004041111111", pseudonym_key),
    }


def test_secret_pads_appear_in_no_dbt_artifact_or_log(built, pseudonym_key):
    cfg, _ = built
    secrets = [*hmac_pads(pseudonym_key), pseudonym_key.decode()]
    from zerodoc.transform.runner import log_dir, target_dir

    roots = [target_dir(cfg), log_dir(cfg)]
    scanned = 0
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                scanned += 1
                for s in secrets:
                    assert s.encode() not in data, f"pseudonym secret leaked into {path}"
    assert scanned > 0
    compiled = target_dir(cfg) / "compiled" / "zerodoc" / "models" / "staging" / "mois"
    assert "zd_pseudonym(" in (compiled / "stg_mois__residents.sql").read_text()


def test_contract_hash_is_stable_and_follows_the_manifest(built):
    cfg, _ = built
    assert contract_columns("income_v1", cfg) == [(c, t.lower()) for c, t in INCOME_COLUMNS]
    h = contract_hash("income_v1", cfg)
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == contract_hash("income_v1", cfg) != contract_hash("residence_v1", cfg)
    with pytest.raises(ValueError, match="no enforced contract"):
        contract_hash("stg_nts__incomes", cfg)


def test_export_mart_writes_zstd_parquet_with_a_stable_content_digest(built, tmp_path):
    cfg, _ = built
    first, second = tmp_path / "a" / "data.parquet", tmp_path / "b" / "data.parquet"
    assert export_mart("income_v1", first, cfg) == 3
    assert export_mart("income_v1", second, cfg) == 3
    assert content_digest(first) == content_digest(second)
    meta = pq.ParquetFile(first).metadata
    assert meta.num_rows == 3
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert [f.name for f in pq.read_schema(first)] == [c for c, _ in INCOME_COLUMNS]
    # The build's as_of is stamped on every published row; another date is refused, nothing written.
    assert {str(d) for d in pq.read_table(first, columns=["as_of"])["as_of"].to_pylist()} == {DS}
    third = tmp_path / "c" / "data.parquet"
    with pytest.raises(ValueError, match=f"built as of {DS}, not 2025-03-02"):
        export_mart("income_v1", third, cfg, as_of="2025-03-02")
    assert not third.exists() and not list(third.parent.glob(".*.tmp"))
    assert export_mart("income_v1", third, cfg, as_of=DS) == 3
    assert content_digest(third) == content_digest(first)
    assert not list(first.parent.glob(".*.tmp"))
    with pytest.raises(ValueError, match="not a model name"):
        export_mart("income_v1; drop table x", first, cfg)


def test_run_for_a_date_without_a_partition_names_the_failing_nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    write_validated_zone(tmp_path, ds=DS)
    with pytest.raises(DbtRunError, match=r"model\.zerodoc\.stg_mois__residents") as err:
        run_dbt(["run", "--select", "stg_mois__residents"], ds="2025-03-02", cfg=Settings(home=tmp_path))
    assert err.value.summary is not None and err.value.summary.failed


def test_bad_logical_date_is_rejected_before_dbt_runs(tmp_path):
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        run_dbt(["build"], ds="2025/03/01", cfg=Settings(home=tmp_path))
    with pytest.raises(ValueError, match="--vars"):
        run_dbt(["build", "--vars", "{ds: 2025-03-01}"], ds=DS, cfg=Settings(home=tmp_path))


def test_a_warehouse_built_before_the_run_stamps_asks_for_one_full_refresh(tmp_path, monkeypatch):
    """A daily run would stop at on_schema_change='fail'; the runner says what to do before dbt starts."""
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    cfg = Settings(home=tmp_path)
    cfg.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(cfg.warehouse_path)) as con:
        con.execute("create schema staging")
        con.execute("create table staging.stg_mois__residents (resident_id bigint, updated_at timestamp)")
    assert warehouse_needs_full_refresh(cfg) == "staging's run stamps"
    with pytest.raises(DbtRunError, match=r"built before staging's run stamps: .*--full-refresh"):
        run_dbt(list(DAILY_BUILD_ARGS), ds=DS, cfg=cfg)
    with duckdb.connect(str(cfg.warehouse_path)) as con:
        con.execute("alter table staging.stg_mois__residents add column loaded_at timestamp")
    assert warehouse_needs_full_refresh(cfg) is None


def test_contract_is_enforced_when_a_mart_column_type_changes(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    shutil.copytree(
        Settings(home=tmp_path).dbt_project_dir,
        repo / "dbt_project",
        ignore=shutil.ignore_patterns("target", "logs"),
    )
    model = repo / "dbt_project" / "models" / "marts" / "shared" / "income_v1.sql"
    sql = model.read_text().replace("        tax_year,\n", "        cast(tax_year as varchar) as tax_year,\n")
    model.write_text(sql)
    home = tmp_path / "home"
    write_validated_zone(home)
    monkeypatch.setenv("ZERODOC_HOME", str(home))
    with pytest.raises(DbtRunError, match=r"model\.zerodoc\.income_v1") as err:
        run_dbt(["run", "--select", "+income_v1"], ds=DS, cfg=Settings(home=home, repo=repo))
    (failed,) = err.value.summary.failed
    assert "contract" in (failed.message or "").lower()


def test_content_digest_follows_the_rows_not_their_order(tmp_path):
    """Published versions are named by content: any row order gives the same name, any change another."""
    import pyarrow as pa

    def digest(name: str, table: pa.Table) -> str:
        path = tmp_path / f"{name}.parquet"
        pq.write_table(table, path)
        return content_digest(path)

    rows = {"subject_pseudonym": ["a" * 64, "b" * 64, "c" * 64], "tax_year": [2023, 2024, None]}
    base = digest("base", pa.table(rows))  # tax_year is int64 here
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert digest("reordered", pa.table(rows).take([2, 0, 1])) == base
    assert digest("changed", pa.table({**rows, "tax_year": [2023, 2024, 2025]})) != base
    assert digest("row_added", pa.table({k: v + v[:1] for k, v in rows.items()})) != base
    assert digest("row_dropped", pa.table({k: v[:2] for k, v in rows.items()})) != base
    renamed = {"subject_pseudonym": rows["subject_pseudonym"], "year": rows["tax_year"]}
    assert digest("renamed", pa.table(renamed)) != base
    assert digest("retyped", pa.table({**rows, "tax_year": pa.array(rows["tax_year"], pa.int32())})) != base
    # Values swapped between rows are a different multiset of rows, not the same one.
    swapped = {"subject_pseudonym": rows["subject_pseudonym"], "tax_year": [2024, 2023, None]}
    assert digest("swapped", pa.table(swapped)) != base
    assert digest("empty", pa.table({k: v[:0] for k, v in rows.items()})) != base


def test_unique_tests_report_every_duplicate_and_nothing_else(built, tmp_path):
    """The project's `unique` and `unique_combination_of_columns` (hash first, then exact) run on a copy
    of the built warehouse: clean tables pass; copied rows are reported with their count."""
    from zerodoc.transform.runner import target_dir

    cfg, _ = built
    run = json.loads((target_dir(cfg) / "run_results.json").read_text())
    compiled = {r["unique_id"].rsplit(".", 1)[0]: r["compiled_code"] for r in run["results"]}
    single = compiled["test.zerodoc.unique_residence_v1_subject_pseudonym"]
    composite = compiled[
        "test.zerodoc.unique_combination_of_columns_int_incomes_latest_filing_subject_pseudonym__tax_year"]
    assert "hash(" in single and "hash(" in composite  # the project's tests, not dbt's built-in one

    copy = tmp_path / cfg.warehouse_path.name  # same file name: the SQL names the catalog after it
    shutil.copyfile(cfg.warehouse_path, copy)
    with duckdb.connect(str(copy)) as con:
        assert con.execute(single).fetchall() == []
        assert con.execute(composite).fetchall() == []
        (first,) = con.execute("select subject_pseudonym from shared.residence_v1 order by 1 limit 1").fetchone()
        copy_rows = f"insert into shared.residence_v1 from shared.residence_v1 where subject_pseudonym = '{first}'"
        con.execute(copy_rows)
        con.execute(copy_rows)
        assert con.execute(single).fetchall() == [(first, 4)]

        table = "intermediate.int_incomes_latest_filing"
        person, year = con.execute(f"select subject_pseudonym, tax_year from {table} order by 1, 2 limit 1").fetchone()
        row = f"from {table} where subject_pseudonym = '{person}' and tax_year = {year}"
        con.execute(f"insert into {table} select * {row}")
        # The same person in a year of their own is no duplicate.
        con.execute(f"insert into {table} select * replace (1999 as tax_year) {row} limit 1")
        assert con.execute(composite).fetchall() == [(person, year, 2)]


def test_dbt_docs_after_a_build_carry_the_catalog_and_the_compiled_sql(built, monkeypatch):
    """docs generate --no-compile keeps the build's manifest (compiled SQL included) and adds the catalog."""
    from zerodoc.ui.dbt_docs import docs_dir, generate

    cfg, _ = built
    monkeypatch.setenv("ZERODOC_HOME", str(cfg.home))
    out = generate(DS, cfg)
    assert out == docs_dir(cfg) and (out / "index.html").stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    catalog = json.loads((out / "catalog.json").read_text())
    assert "select" in manifest["nodes"]["model.zerodoc.residence_v1"]["compiled_code"].lower()
    columns = catalog["nodes"]["model.zerodoc.residence_v1"]["columns"]
    assert {"subject_pseudonym", "sigungu_code"} <= {c.lower() for c in columns}
