"""Scale check, run by hand (not collected by pytest): validate_partition vs one hand-written DuckDB query.

    .venv/bin/python -m tests.quality.perf_validate 10000000

Generates a synthetic residents partition with ~1% planted defects in a temp dir, times
validate_partition and a single aggregate query computing the same unexpected counts, and prints
both, their ratio and the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from zerodoc.quality.identifiers import duckdb_macros_sql

# Valid pre-2020 RRNs are expensive to generate in SQL, so a small pool of valid ones is cycled.
GENERATE = """
COPY (
  WITH pool AS (SELECT list(x) AS rrns FROM (SELECT unnest(?::VARCHAR[]) AS x)),
  base AS (SELECT range + 1 AS resident_id FROM range(?))
  SELECT
    CASE WHEN resident_id % 997 = 0 THEN resident_id - 1 ELSE resident_id END AS resident_id,
    CASE WHEN resident_id % 1009 = 0 THEN NULL
         WHEN resident_id % 1013 = 0 THEN '801301-1234567'
         ELSE rrns[1 + resident_id % len(rrns)] END AS rrn,
    CASE WHEN resident_id % 1019 = 0 THEN NULL WHEN resident_id % 1021 = 0 THEN 'John'
         ELSE '김민준' END AS name,
    CASE WHEN resident_id % 1031 = 0 THEN 'X' WHEN resident_id % 2 = 0 THEN 'F' ELSE 'M' END AS sex,
    CASE WHEN resident_id % 1033 = 0 THEN '20230230' ELSE '19800101' END AS birth_date,
    CASE WHEN resident_id % 1039 = 0 THEN NULL ELSE resident_id // 3 END AS household_id,
    CASE WHEN resident_id % 1049 = 0 THEN '1111'
         ELSE lpad(CAST(11000 + resident_id % 500 AS VARCHAR), 5, '0') END
      AS sigungu_code,
    '서울특별시 종로구 세종대로 ' || CAST(resident_id % 300 AS VARCHAR) AS address,
    '20150301' AS moved_in_date,
    TIMESTAMP '2024-01-01 00:00:00' AS updated_at
  FROM base, pool
) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 122880)
"""


def generate(home: Path, rows: int, ds: str) -> Path:
    from tests.quality.support import make_rrn

    part = home / "raw" / "mois" / "residents" / f"ds={ds}"
    part.mkdir(parents=True)
    path = part / "part-0.parquet"
    pool = [
        make_rrn(f"{70 + i % 30:02d}{1 + i % 12:02d}{1 + i % 28:02d}", "12"[i % 2], f"{i:05d}")
        for i in range(997)
    ]
    duckdb.connect().execute(GENERATE.format(path=path), [pool, rows])
    (part / "_manifest.json").write_text(json.dumps({"rows": rows, "checksum": f"{rows:064d}"}))
    return path


def raw_sql(path: Path) -> tuple[float, list[int]]:
    from zerodoc.config import settings
    from zerodoc.quality.suite import load_suite, unexpected_predicate

    suite = load_suite("mois__residents", settings().expectations_dir)
    con = duckdb.connect()
    for macro in duckdb_macros_sql():
        con.execute(macro)
    start = time.perf_counter()
    con.execute(f"CREATE VIEW batch AS SELECT * FROM read_parquet('{path}', hive_partitioning = false)")
    counts = con.execute(
        "SELECT " + ", ".join(f"count_if({unexpected_predicate(c)})" for c in suite.checks) + " FROM batch"
    ).fetchall()[0]
    return time.perf_counter() - start, list(counts)


def main(rows: int) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("PERF_TMP")) as tmp:
        home = Path(tmp)
        os.environ["ZERODOC_HOME"] = str(home)
        ds = "2024-01-01"
        path = generate(home, rows, ds)
        import zerodoc.quality  # noqa: F401  (import cost is not validation cost)
        from zerodoc.quality.validate import validate_partition

        sql_seconds, sql_counts = raw_sql(path)
        start = time.perf_counter()
        outcome = validate_partition("mois__residents", path, ds)
        gx_seconds = time.perf_counter() - start
        assert [c.unexpected_count for c in outcome.checks] == sql_counts
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "rows": rows,
                    "passed": outcome.passed,
                    "quarantined": outcome.quarantined,
                    "validate_partition_s": round(gx_seconds, 2),
                    "raw_sql_s": round(sql_seconds, 2),
                    "ratio": round(gx_seconds / sql_seconds, 2),
                    "peak_rss_mb": round(peak_mb),
                    "cpus": os.cpu_count(),
                    "load_avg": os.getloadavg()[0],
                }
            )
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000)
