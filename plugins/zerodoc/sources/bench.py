"""Extraction benchmarks, each against a baseline measured in the same run (never asserted in tests).

Every function returns a metric dict {"name","value","unit","baseline","ratio","scale","target","meets_target"}.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from zerodoc.config import Settings


def _metric(name, value, unit, baseline, ratio, scale, target, meets) -> dict:
    return {"name": name, "value": round(value, 3), "unit": unit, "baseline": round(baseline, 3),
            "ratio": round(ratio, 3), "scale": scale, "target": target, "meets_target": bool(meets)}


def postgres_extract(cfg: Settings, uri: str, qualified: str = "mois.residents") -> list[dict]:
    """extract.postgres_rows_per_s and extract.postgres_vs_copy_ratio: our extract of a loaded
    table vs draining `COPY (SELECT ...) TO STDOUT` of the same rows through psycopg."""
    import psycopg
    from psycopg import sql

    from zerodoc.catalog import entity
    from zerodoc.sources.extract import extract

    ent = entity(qualified)
    os.environ[f"AIRFLOW_CONN_ZERODOC_{ent.agency.upper()}"] = uri
    t0 = time.perf_counter()
    r = extract(qualified, "2026-11-20", cfg)
    ours = time.perf_counter() - t0
    schema_name, table = ent.table.split(".", 1)
    query = sql.SQL("COPY (SELECT {cols} FROM {tbl} ORDER BY {key}) TO STDOUT WITH (FORMAT csv)").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in ent.columns),
        tbl=sql.Identifier(schema_name, table), key=sql.Identifier(ent.key))
    t0 = time.perf_counter()
    n = 0
    with psycopg.connect(uri) as conn, conn.cursor() as cur, cur.copy(query) as copy:
        for block in copy:
            n += len(block)
    copy_s = time.perf_counter() - t0
    rps = r.rows / ours
    ratio = copy_s / ours  # throughput ratio: ours / COPY
    return [
        _metric("extract.postgres_rows_per_s", rps, "rows/s", r.rows / copy_s, ratio, r.rows, None, True),
        _metric("extract.postgres_vs_copy_ratio", ratio, "x", 1.0, ratio, r.rows, ">= 0.5", ratio >= 0.5),
    ]


def csv_cp949_vs_parquet(cfg: Settings, qualified: str = "moel.employment_insurance") -> list[dict]:
    """extract.csv_cp949_vs_parquet_ratio: ingesting the CP949 drop vs reading the same rows from Parquet."""
    import pyarrow.parquet as pq

    from zerodoc.sources.extract import extract

    t0 = time.perf_counter()
    r = extract(qualified, "2026-11-20", cfg)
    csv_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert pq.read_table(r.path).num_rows == r.rows
    pq_s = time.perf_counter() - t0
    ratio = pq_s / csv_s
    return [_metric("extract.csv_cp949_vs_parquet_ratio", ratio, "x", r.rows / pq_s, ratio, r.rows,
                    ">= 0.33", ratio >= 0.33)]


def _child_peak_rss(home: Path, qualified: str) -> int:
    code = (
        "import resource,sys;from zerodoc.config import settings;from zerodoc.sources.extract import extract;"
        f"extract({qualified!r}, '2026-11-20', settings());"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the forking parent.
        "print([int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')][0])"
    )
    env = {**os.environ, "ZERODOC_HOME": str(home)}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW_CONN_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def peak_rss_5x(home_1x: Path, home_5x: Path, qualified: str = "mois.residents") -> list[dict]:
    """extract.peak_rss_ratio_5x: peak RSS extracting 5x the rows vs 1x (separate processes)."""
    one, five = _child_peak_rss(home_1x, qualified), _child_peak_rss(home_5x, qualified)
    ratio = five / one
    return [_metric("extract.peak_rss_ratio_5x", five / 1024, "MiB", one / 1024, ratio, 5, "<= 1.5", ratio <= 1.5)]


def main(persons: int, workdir: Path) -> list[dict]:
    """Generate at `persons` (and 5x for memory), load PostgreSQL, run all three; print JSON."""
    from tests.servers import scratch_postgres  # the same throw-away databases the tests use
    from zerodoc.catalog import agencies
    from zerodoc.sources.generate import generate
    from zerodoc.sources.servers import load_postgres

    results = []
    homes = {}
    for mult in (1, 5):
        home = workdir / f"x{mult}"
        os.environ["ZERODOC_HOME"] = str(home)
        cfg = Settings.from_env()
        if not (cfg.sources_dir / "_done").exists():
            generate(persons * mult, 42, cfg.sources_dir)
            (cfg.sources_dir / "_done").write_text("")
        homes[mult] = home
    os.environ["ZERODOC_HOME"] = str(homes[1])
    cfg = Settings.from_env()
    results += csv_cp949_vs_parquet(cfg)
    with scratch_postgres() as uri:
        os.environ["AIRFLOW_CONN_ZERODOC_MOIS"] = uri
        load_postgres(agencies()["mois"], cfg)
        results += postgres_extract(cfg, uri)
        del os.environ["AIRFLOW_CONN_ZERODOC_MOIS"]
    results += peak_rss_5x(homes[1], homes[5])
    results.append({"name": "bench.self_peak_rss", "value": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
