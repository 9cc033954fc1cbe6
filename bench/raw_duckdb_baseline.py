"""Hand-written raw-DuckDB baseline: the pipeline's work (extract, validate, marts) with no framework.

The benchmark sets this against Airflow + GX + dbt on the same sources in the same run. It does
the same work a good engineer would write by hand, on one in-memory DuckDB connection:

1. extract: copy each source stand-in to a "raw" Parquet file (zstd, row group 122,880), as
   `zerodoc.sources.extract` does;
2. validate: the `fail` checks of `expectations/*.yml` as SQL predicates (the `warn` ones are
   counted, their rows pass); per-check unexpected counts; each entity split into validated and
   quarantine Parquet, a quarantined row once with every check it fails (`_reasons`, check ids);
   extracted == passed + quarantined is asserted. Uniqueness rejects every copy of a duplicated key;
3. transform: the dbt models (staging -> int_residents_deduplicated / int_households_sized ->
   residence_v1, income_v1) from the validated files, written straight to Parquet.

Everything streams through `COPY ... TO`; only the duplicate keys and the few failing rows'
verdicts are materialised. No rows are ever pulled into Python.

    PYTHONPATH=plugins ZERODOC_PSEUDONYM_KEY=... python bench/raw_duckdb_baseline.py \
        --sources /tmp/src --out /tmp/out
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import duckdb

from zerodoc.privacy import duckdb_macro_sql

REPO = Path(__file__).resolve().parents[1]


def _identifier_macros() -> list[str]:
    """`zd_valid_yyyymmdd` / `zd_rrn_valid` from zerodoc/quality/identifiers.py, loaded by path.

    Importing it as `zerodoc.quality.identifiers` runs the package __init__, which imports and patches
    Great Expectations (~10 s); the baseline uses no GX, so it takes the one stdlib-only module alone.
    """
    import importlib.util

    import zerodoc

    path = Path(zerodoc.__file__).parent / "quality" / "identifiers.py"
    spec = importlib.util.spec_from_file_location("_zd_identifiers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.duckdb_macros_sql()


REGIONS_CSV = REPO / "dbt_project" / "seeds" / "regions.csv"
ROW_GROUP_SIZE = 122_880
MEMORY_LIMIT = "8GB"
PARQUET = f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_SIZE})"

ENTITIES = ("mois.residents", "mois.households", "nts.income")

def _region_pattern() -> str:
    """One anchored alternation of the existing sigungu codes (the dbt project's region seed)."""
    import csv

    seed = Path(__file__).resolve().parents[1] / "dbt_project" / "seeds" / "regions.csv"
    with open(seed, encoding="utf-8") as fh:
        codes = sorted({row["sigungu_code"] for row in csv.DictReader(fh)})
    return "^(" + "|".join(codes) + ")$"


REGION_PATTERN = _region_pattern()

# Hand-written copies of expectations/<agency>__<entity>.yml: (id, severity, SQL true for an
# unexpected row). As in GX, map checks ignore NULLs (not_null's business) and the regex checks are
# searches (the patterns are anchored). `{dups}` is the entity's table of duplicated keys.
CHECKS: dict[str, list[tuple[str, str, str]]] = {
    "mois.residents": [
        ("resident_id_not_null", "fail", "resident_id IS NULL"),
        ("resident_id_unique", "fail", "resident_id IN (SELECT k FROM {dups})"),
        ("rrn_not_null", "fail", "rrn IS NULL"),
        ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
        ("name_not_null", "fail", "name IS NULL"),
        ("name_hangul", "warn", "NOT regexp_matches(name, '^[가-힣]{2,5}$')"),
        ("sex_in_set", "fail", "sex NOT IN ('M', 'F')"),
        ("birth_date_valid", "fail", "NOT zd_valid_yyyymmdd(birth_date)"),
        ("sigungu_code_format", "fail", "NOT regexp_matches(sigungu_code, '^[0-9]{5}$')"),
        ("sigungu_code_exists", "fail", f"NOT regexp_matches(sigungu_code, '{REGION_PATTERN}')"),
        ("household_id_not_null", "fail", "household_id IS NULL"),
        ("moved_in_date_valid", "warn", "NOT zd_valid_yyyymmdd(moved_in_date)"),
    ],
    "mois.households": [
        ("household_id_not_null", "fail", "household_id IS NULL"),
        ("household_id_unique", "fail", "household_id IN (SELECT k FROM {dups})"),
        ("head_resident_id_not_null", "fail", "head_resident_id IS NULL"),
        ("registered_date_valid", "fail", "NOT zd_valid_yyyymmdd(registered_date)"),
        ("sigungu_code_format", "warn", "NOT regexp_matches(sigungu_code, '^[0-9]{5}$')"),
        ("sigungu_code_exists", "warn", f"NOT regexp_matches(sigungu_code, '{REGION_PATTERN}')"),
    ],
    "nts.income": [
        ("income_id_not_null", "fail", "income_id IS NULL"),
        ("income_id_unique", "fail", "income_id IN (SELECT k FROM {dups})"),
        ("rrn_not_null", "fail", "rrn IS NULL"),
        ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
        ("tax_year_range", "fail", "NOT (tax_year >= 2000 AND tax_year <= 2100)"),
        ("tax_year_not_null", "fail", "tax_year IS NULL"),
        ("earned_income_not_null", "fail", "earned_income IS NULL"),
        ("earned_income_non_negative", "fail", "NOT (earned_income >= 0)"),
        ("business_income_not_null", "fail", "business_income IS NULL"),
        ("business_income_non_negative", "fail", "NOT (business_income >= 0)"),
        ("other_income_not_null", "fail", "other_income IS NULL"),
        ("other_income_non_negative", "fail", "NOT (other_income >= 0)"),
        ("filed_date_valid", "fail", "NOT zd_valid_yyyymmdd(filed_date)"),
    ],
}
KEYS = {"mois.residents": "resident_id", "mois.households": "household_id", "nts.income": "income_id"}


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _parse(col: str) -> str:
    # dbt's parse_yyyymmdd: strict, so an impossible date that slipped through fails loudly.
    return f"CAST(strptime(nullif(trim({col}), ''), '%Y%m%d') AS DATE)"


class _Clock:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.detail: dict[str, float] = {}

    def add(self, phase: str, step: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self.detail[f"{phase}/{step}"] = round(seconds, 3)


def _count(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({_lit(path)})").fetchone()[0]


def _validate(con: duckdb.DuckDBPyConnection, entity: str, raw: Path, valid: Path, quarantine: Path) -> dict:
    """One scan flags each row; failing rows' verdicts (a few percent) are kept; two COPYs split."""
    tag = entity.replace(".", "_")
    key, checks = KEYS[entity], CHECKS[entity]
    src = f"read_parquet({_lit(raw)}, file_row_number = true)"
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_lit(raw)})").fetchall()]
    dups = f"dups_{tag}"
    con.execute(
        f"CREATE TEMP TABLE {dups} AS SELECT {key} AS k FROM read_parquet({_lit(raw)}) "
        f"WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
    )
    flags = ", ".join(
        f"coalesce({pred.replace('{dups}', dups)}, false) AS _c{i}" for i, (_, _, pred) in enumerate(checks)
    )
    any_flag = " OR ".join(f"_c{i}" for i in range(len(checks)))
    any_fail = " OR ".join(f"_c{i}" for i, (_, sev, _) in enumerate(checks) if sev == "fail")
    reasons = ", ".join(f"CASE WHEN _c{i} THEN {_lit(cid)} END" for i, (cid, _, _) in enumerate(checks))
    verdict = f"verdict_{tag}"
    con.execute(
        f"""CREATE TEMP TABLE {verdict} AS
            SELECT file_row_number AS _row, {", ".join(f"_c{i}" for i in range(len(checks)))},
                   {any_fail} AS _quarantined,
                   list_filter([{reasons}], lambda r: r IS NOT NULL) AS _reasons
            FROM (SELECT file_row_number, {flags} FROM {src})
            WHERE {any_flag}"""
    )
    per_check = ", ".join(f"count_if(_c{i})" for i in range(len(checks)))
    counts = con.execute(f"SELECT {per_check}, count_if(_quarantined) FROM {verdict}").fetchone()
    quarantined = int(counts[-1])
    col_list = ", ".join(f'r."{c}"' for c in cols)
    con.execute(
        f"""COPY (SELECT {col_list} FROM {src} r
                  ANTI JOIN (SELECT _row FROM {verdict} WHERE _quarantined) q ON r.file_row_number = q._row)
            TO {_lit(valid)} {PARQUET}"""
    )
    con.execute(
        f"""COPY (SELECT {col_list}, v._reasons FROM {src} r
                  JOIN {verdict} v ON r.file_row_number = v._row WHERE v._quarantined)
            TO {_lit(quarantine)} {PARQUET}"""
    )
    extracted = _count(con, raw)
    passed = _count(con, valid)
    if extracted != passed + quarantined:
        raise AssertionError(
            f"{entity}: extracted {extracted} != passed {passed} + quarantined {quarantined}"
        )
    con.execute(f"DROP TABLE {dups}")
    con.execute(f"DROP TABLE {verdict}")
    return {
        "extracted": extracted,
        "passed": passed,
        "quarantined": quarantined,
        "checks": {cid: int(n) for (cid, _, _), n in zip(checks, counts[:-1], strict=True)},
    }


def _residence_sql(validated: dict[str, Path], as_of: str) -> str:
    # stg_mois__residents -> int_residents_deduplicated; stg_mois__households -> int_households_sized.
    return f"""
        WITH stg_residents AS (
            SELECT CAST(resident_id AS BIGINT) AS resident_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(household_id AS BIGINT) AS household_id,
                   CAST(sigungu_code AS VARCHAR) AS sigungu_code,
                   {_parse("moved_in_date")} AS moved_in_on,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["mois.residents"])})
        ),
        residents AS MATERIALIZED (
            SELECT * FROM stg_residents
            QUALIFY row_number() OVER (
                PARTITION BY subject_pseudonym
                ORDER BY updated_at DESC NULLS LAST, moved_in_on DESC NULLS LAST, resident_id DESC) = 1
        ),
        members AS (
            SELECT household_id, count(*) AS household_size FROM residents GROUP BY household_id
        ),
        households AS (
            SELECT CAST(h.household_id AS BIGINT) AS household_id,
                   CAST(h.head_resident_id AS BIGINT) AS head_resident_id,
                   {_parse("h.registered_date")} AS registered_on,
                   coalesce(m.household_size, 0) AS household_size
            FROM read_parquet({_lit(validated["mois.households"])}) h
            LEFT JOIN members m ON CAST(h.household_id AS BIGINT) = m.household_id
        )
        SELECT r.subject_pseudonym,
               left(r.sigungu_code, 2) AS sido_code,
               g.sido_name,
               r.sigungu_code,
               g.sigungu_name,
               r.household_id,
               h.household_size,
               coalesce(h.head_resident_id = r.resident_id, false) AS is_household_head,
               r.moved_in_on,
               CAST({_lit(as_of)} AS DATE) AS as_of
        FROM residents r
        LEFT JOIN households h ON r.household_id = h.household_id
        LEFT JOIN regions g ON r.sigungu_code = g.sigungu_code"""


def _income_sql(validated: dict[str, Path], as_of: str) -> str:
    return f"""
        WITH incomes AS (
            SELECT CAST(income_id AS BIGINT) AS income_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(tax_year AS INTEGER) AS tax_year,
                   CAST(earned_income AS BIGINT) AS earned_income_krw,
                   CAST(business_income AS BIGINT) AS business_income_krw,
                   CAST(other_income AS BIGINT) AS other_income_krw,
                   {_parse("filed_date")} AS filed_on,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["nts.income"])})
        )
        SELECT subject_pseudonym, tax_year, earned_income_krw, business_income_krw, other_income_krw,
               earned_income_krw + business_income_krw + other_income_krw AS total_income_krw,
               filed_on,
               CAST({_lit(as_of)} AS DATE) AS as_of
        FROM incomes
        QUALIFY row_number() OVER (
            PARTITION BY subject_pseudonym, tax_year
            ORDER BY filed_on DESC NULLS LAST, updated_at DESC NULLS LAST, income_id DESC) = 1"""


def run_baseline(
    sources_dir: Path,
    out_dir: Path,
    key: bytes,
    threads: int | None = None,
    *,
    as_of: str | None = None,
) -> dict:
    """Extract, validate and build residence_v1 / income_v1 under `out_dir`; return timings and counts.

    `as_of` is the logical date stamped on the marts (the pipeline's `ds`), default today (UTC).
    """
    sources_dir, out_dir = Path(sources_dir), Path(out_dir)
    as_of = as_of or dt.datetime.now(dt.UTC).date().isoformat()
    threads = threads or len(os.sched_getaffinity(0))
    clock = _Clock()
    start = time.perf_counter()

    zones = {z: out_dir / z for z in ("raw", "validated", "quarantine", "marts")}
    for zone in zones.values():
        shutil.rmtree(zone, ignore_errors=True)
    paths: dict[str, dict[str, Path]] = {z: {} for z in zones}
    for entity in ENTITIES:
        agency, name = entity.split(".")
        for z in ("raw", "validated", "quarantine"):
            paths[z][entity] = zones[z] / agency / f"{name}.parquet"
            paths[z][entity].parent.mkdir(parents=True, exist_ok=True)
    zones["marts"].mkdir(parents=True, exist_ok=True)

    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": MEMORY_LIMIT,
            "threads": threads,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        con.execute(f"SET temp_directory = {_lit(out_dir / '.duckdb_tmp')}")
        for macro in _identifier_macros():
            con.execute(macro)
        con.execute(duckdb_macro_sql(key))

        rows: dict[str, int] = {}
        for entity in ENTITIES:
            agency, name = entity.split(".")
            t = time.perf_counter()
            con.execute(
                f"COPY (SELECT * FROM read_parquet({_lit(sources_dir / agency / f'{name}.parquet')})) "
                f"TO {_lit(paths['raw'][entity])} {PARQUET}"
            )
            clock.add("extract", entity, time.perf_counter() - t)

        validation: dict[str, dict] = {}
        for entity in ENTITIES:
            t = time.perf_counter()
            validation[entity] = _validate(
                con, entity, paths["raw"][entity], paths["validated"][entity], paths["quarantine"][entity]
            )
            clock.add("validate", entity, time.perf_counter() - t)
            rows[f"{entity}.extracted"] = validation[entity]["extracted"]
            rows[f"{entity}.passed"] = validation[entity]["passed"]

        t = time.perf_counter()
        con.execute(
            f"""CREATE TEMP TABLE regions AS SELECT * FROM read_csv({_lit(REGIONS_CSV)}, header = true,
                columns = {{'sigungu_code': 'VARCHAR', 'sigungu_name': 'VARCHAR',
                            'sido_code': 'VARCHAR', 'sido_name': 'VARCHAR'}})"""
        )
        for mart, sql in (("residence_v1", _residence_sql), ("income_v1", _income_sql)):
            t1 = time.perf_counter()
            path = zones["marts"] / f"{mart}.parquet"
            con.execute(f"COPY ({sql(paths['validated'], as_of)}) TO {_lit(path)} {PARQUET}")
            rows[mart] = _count(con, path)
            clock.detail[f"transform/{mart}"] = round(time.perf_counter() - t1, 3)
        clock.phases["transform"] = time.perf_counter() - t
    finally:
        con.close()
        shutil.rmtree(out_dir / ".duckdb_tmp", ignore_errors=True)

    return {
        "seconds": round(time.perf_counter() - start, 3),
        "phases": {k: round(v, 3) for k, v in clock.phases.items()},
        "phase_detail": clock.detail,
        "threads": threads,
        "rows": rows,
        "quarantined": {e: v["quarantined"] for e, v in validation.items()},
        "checks": {e: v["checks"] for e, v in validation.items()},
        "outputs": {z: str(p) for z, p in zones.items()},
    }


def main(argv: list[str] | None = None) -> int:
    from zerodoc.config import pseudonym_key_from_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=Path, required=True, help="dir holding <agency>/<entity>.parquet")
    parser.add_argument("--out", type=Path, required=True, help="output dir (raw/validated/quarantine/marts)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all CPUs)")
    parser.add_argument("--as-of", default=None, help="logical date YYYY-MM-DD stamped on the marts")
    args = parser.parse_args(argv)
    result = run_baseline(args.sources, args.out, pseudonym_key_from_env(), args.threads, as_of=args.as_of)
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
