"""Validation at scale: `validate_partition` on the residents partition vs one hand-written DuckDB query.

    .venv/bin/python bench/validate_bench.py --persons 10000000 --home /tmp/benchhome/p10000000

The baseline is a single aggregate over the same Parquet computing every check's unexpected count
(`count_if(<predicate>)`, the uniqueness subquery included). The measured side is the whole
`validate_partition`: GX's own queries, the per-row quarantine pass cross-checked against GX, both
zones written, reports, Data Docs and the validation log. Each side runs in its own fresh process
(peak RSS per process); the raw partition is only read. Outputs go to `<home>/validate-bench/`.
Metrics: {"name", "value", "unit", "baseline", "ratio", "scale", "target", "meets_target"}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = "mois__residents"

_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
mode, raw = sys.argv[1], Path(sys.argv[2])
import duckdb
import zerodoc.quality  # noqa: F401  (imports and GX registration are not validation work)
from zerodoc.config import settings
from zerodoc.quality.identifiers import duckdb_macros_sql
from zerodoc.quality.suite import load_suite, unexpected_predicate
out = {}
if mode == "baseline":
    suite = load_suite(sys.argv[3], settings().expectations_dir)
    con = duckdb.connect()
    for macro in duckdb_macros_sql():
        con.execute(macro)
    t0 = time.perf_counter()
    con.execute(f"CREATE VIEW batch AS SELECT * FROM read_parquet('{raw}', hive_partitioning = false)")
    counts = con.execute(
        "SELECT " + ", ".join(f"count_if({unexpected_predicate(c)})" for c in suite.checks) + " FROM batch"
    ).fetchall()[0]
    out = {"seconds": time.perf_counter() - t0, "counts": [int(n) for n in counts]}
else:
    from zerodoc.quality.validate import validate_partition
    t0 = time.perf_counter()
    o = validate_partition(sys.argv[3], raw, sys.argv[4])
    out = {"seconds": time.perf_counter() - t0, "counts": [c.unexpected_count for c in o.checks],
           "extracted": o.extracted, "passed": o.passed, "quarantined": o.quarantined}
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def metric(name, value, unit, baseline, scale, target=None, higher_is_better=False) -> dict:
    ratio = (value / baseline) if baseline else None
    meets = None
    if target is not None:
        meets = value >= target if higher_is_better else value <= target
    return {
        "name": name,
        "value": round(value, 4),
        "unit": unit,
        "baseline": None if baseline is None else round(baseline, 4),
        "ratio": None if ratio is None else round(ratio, 4),
        "scale": scale,
        "target": target,
        "meets_target": meets,
    }


def find_raw_partition(home: Path) -> tuple[Path, str]:
    """The residents raw partition of the bench home (the first logical date, for a fixed choice)."""
    parts = sorted((home / "raw" / "mois" / "residents").glob("ds=*/part-0.parquet"))
    if not parts:
        raise SystemExit(f"no raw residents partition under {home}/raw; run `make bench` (or extract) first")
    return parts[0], parts[0].parent.name.removeprefix("ds=")


def _child(mode: str, raw: Path, ds: str, work_home: Path) -> dict:
    env = {**os.environ, "ZERODOC_HOME": str(work_home), "PYTHONPATH": f"{REPO / 'plugins'}:{REPO}"}
    env.setdefault("ZERODOC_PSEUDONYM_KEY", "bench-" + "k" * 40)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, str(raw), SUITE, ds], capture_output=True, text=True, env=env, cwd=REPO
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
    # DuckDB's progress bar shares stdout (carriage returns, no newline), so take what follows the marker.
    if "RESULT " not in proc.stdout:
        raise SystemExit(f"{mode} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.rsplit("RESULT ", 1)[1].splitlines()[0])


def _warm(path: Path) -> None:
    """Read the file once so neither side pays for the first read from disk."""
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def run_validate_bench(persons: int, home: Path) -> list[dict]:
    home = Path(home)
    raw, ds = find_raw_partition(home)
    work = home / "validate-bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _warm(raw)
    base = _child("baseline", raw, ds, work)
    run = _child("validate", raw, ds, work)
    if run["counts"] != base["counts"]:
        raise SystemExit(f"validate_partition and the baseline disagree: {run['counts']} vs {base['counts']}")
    return [
        metric("validate.seconds", run["seconds"], "s", base["seconds"], persons),
        metric("validate.gx_vs_raw_sql_ratio", run["seconds"] / base["seconds"], "x", 1.0, persons, target=2.0),
        metric(
            "validate.rows_per_s",
            run["extracted"] / run["seconds"],
            "rows/s",
            run["extracted"] / base["seconds"],
            persons,
            higher_is_better=True,
        ),
        metric("validate.peak_rss_mb", run["peak_rss_mb"], "MB", base["peak_rss_mb"], persons, target=4000),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persons", type=int, default=10_000_000)
    ap.add_argument("--home", type=Path, default=None, help="bench home holding raw/ (default /tmp/benchhome/p<N>)")
    ap.add_argument("--out", type=Path, default=None, help="also write the metrics as JSON here")
    args = ap.parse_args()
    results = run_validate_bench(args.persons, args.home or Path(f"/tmp/benchhome/p{args.persons}"))
    for r in results:
        ok = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        print(
            f"{r['name']:32} {r['value']:>14,.3f} {r['unit']:7} baseline {r['baseline'] or 0:>14,.3f} "
            f"target {r['target'] if r['target'] is not None else '-':>6}  {ok}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
