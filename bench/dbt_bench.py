"""dbt benchmarks: a daily incremental run after a 1 % change vs a full build, and dbt through Airflow vs plain dbt.

Both compare runs made here, now, on the same validated data (bench/run.py section "dbt"):
* `dbt.incremental_1pct_vs_full_ratio`: day 2 = day 1 with 1 % of every entity's rows changed
  (updated_at bumped, as the agency does on a change). The daily run, `dbt build
  --exclude-resource-type unit_test` of day 2 on the warehouse left by day 1, reads what incremental
  extraction delivers: for an entity configured `mode: incremental` (MOIS residents and households,
  NTS income), a window of the changed rows (`_op = 'upsert'`); the others full snapshots. The full
  build, `dbt build --full-refresh` (unit tests included), reads the equivalent full snapshot of
  day 2. Both must end in the same warehouse: every intermediate and shared table is fingerprinted
  after each run and compared.
  Unit tests check SQL logic on fixed fixtures, not the data, so they run in CI and on full builds,
  not daily (docs/dbt.md).
* `orchestration.airflow_dbt_vs_plain_dbt_ratio`: the pipeline's dbt part as Airflow runs it vs a
  plain `dbt build` CLI process, both doing the daily run (`DAILY_BUILD_ARGS`: same models, same data
  tests, no unit tests) from an empty warehouse. The Airflow side is what a deployment pays per run:
  filling the DagBag from dags/ plus publish_shared's `dbt_build` task as Airflow timed it (start to
  end; the task runs dbt in-process, records lineage and also generates dbt docs, which the plain
  side does not). A fresh interpreter importing Airflow and dag.test()'s set-up are paid once per
  worker, not per run: they are recorded apart as `orchestration.airflow_dbt_process_seconds`.
Every dbt invocation here is its own process, timed wall-clock including start-up.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHANGED_PERCENT = 1
# The daily run's arguments after `build` (zerodoc.transform.runner.DAILY_BUILD_ARGS, asserted in tests/bench).
DAILY_ARGS = ("--exclude-resource-type", "unit_test")

AIRFLOW_DBT_CODE = """
import datetime as dt, json, sys
from zerodoc.config import settings
from zerodoc.orchestration.local import apply_airflow_env
apply_airflow_env(settings())
import time
from airflow.dag_processing.dagbag import DagBag
t0 = time.monotonic()
bag = DagBag(dag_folder=sys.argv[1])
dagbag_s = time.monotonic() - t0
assert not bag.import_errors, bag.import_errors
dag = bag.dags["publish_shared"].partial_subset(task_ids=["dbt_build"], include_upstream=True)
assert sorted(dag.task_dict) == ["dbt_build", "resolve_ds"], sorted(dag.task_dict)
ds = sys.argv[2]
dr = dag.test(logical_date=dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC), run_conf={"ds": ds})
bad = [ti.task_id for ti in dr.get_task_instances() if ti.state != "success"]
assert not bad and str(dr.state) == "success", (dr.state, bad)
took = {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in dr.get_task_instances()}
took["dagbag"] = dagbag_s
print("@@TASKS@@" + json.dumps(took), flush=True)
"""

Measure = Callable[[list[str], dict[str, str], Path], tuple[float, float, int]]


def _hit(key: str) -> str:
    return f"hash({key}) % 100 < {CHANGED_PERCENT}"


def _changed_partition(src: Path, dest: Path, key: str, window: bool) -> int:
    """Write day 2 of one entity: day 1 with updated_at bumped on 1 % of rows (by key hash), as a full
    snapshot, or as the incremental window of those rows (`_op = 'upsert'`). Returns rows changed."""
    import duckdb

    dest.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        glob = str(src / "*.parquet").replace("'", "''")
        out = str(dest / "part-0.parquet").replace("'", "''")
        cols = [r[0] for r in con.execute(f"describe select * from read_parquet('{glob}')").fetchall()]
        bumped = f"case when {_hit(key)} then updated_at + interval 1 day else updated_at end as updated_at"
        if window:
            op = "'upsert' as _op"
            select = (f"select * replace ({bumped}, {op})" if "_op" in cols else f"select * replace ({bumped}), {op}")
            query = f"{select} from read_parquet('{glob}') where {_hit(key)}"
        else:
            query = f"select * replace ({bumped}) from read_parquet('{glob}')"
        con.execute(f"copy ({query}) to '{out}' (format parquet)")
        return int(con.execute(f"select count(*) from read_parquet('{glob}') where {_hit(key)}").fetchone()[0])
    finally:
        con.close()


def windowed(ent) -> bool:
    """Whether the pipeline's daily extraction delivers this entity as a window: configured
    `mode: incremental` (config/sources.yml; the others are full snapshots every day)."""
    return ent.mode == "incremental"


def prepare_home(big: Path, home: Path, day1: str, day2: str) -> dict[str, int]:
    """A home of its own whose validated zone is `big`'s day 1 (linked) and a 1 %-changed day 2, in two
    forms under `home/day2`: `snapshot` (every entity a full snapshot) and `window` (windows of the
    changed rows for entities extraction can window, the same snapshots for the others). `use_day2`
    points the validated zone's day 2 at one of them."""
    from zerodoc.catalog import agencies

    if home.exists():
        shutil.rmtree(home)
    changed: dict[str, int] = {}
    for agency in agencies().values():
        for ent in agency.entities.values():
            src = big / "validated" / agency.code / ent.name / f"ds={day1}"
            if not src.is_dir():
                continue
            base = home / "validated" / agency.code / ent.name
            base.mkdir(parents=True, exist_ok=True)
            (base / f"ds={day1}").symlink_to(src, target_is_directory=True)
            snap = home / "day2" / "snapshot" / agency.code / ent.name
            win = home / "day2" / "window" / agency.code / ent.name
            win.parent.mkdir(parents=True, exist_ok=True)
            if "updated_at" in ent.columns:
                changed[ent.qualified] = _changed_partition(src, snap, ent.key, window=False)
                if windowed(ent):
                    _changed_partition(src, win, ent.key, window=True)
                else:
                    win.symlink_to(snap, target_is_directory=True)
            else:
                snap.parent.mkdir(parents=True, exist_ok=True)
                snap.symlink_to(src, target_is_directory=True)
                win.symlink_to(src, target_is_directory=True)
    if "mois.residents" not in changed:
        raise RuntimeError(f"no validated MOIS residents for {day1} under {big}: run the pipeline first")
    return changed


def use_day2(home: Path, day2: str, form: str) -> None:
    """Point every entity's validated day-2 partition at its `form` ("window" or "snapshot")."""
    for entity_dir in (home / "day2" / form).glob("*/*"):
        link = home / "validated" / entity_dir.parent.name / entity_dir.name / f"ds={day2}"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(entity_dir, target_is_directory=True)


def fingerprint(warehouse: Path) -> dict[str, list[int]]:
    """Rows and an order-free hash of every intermediate and shared table (views excluded): equal
    fingerprints after the daily run and the full build say they left the same warehouse."""
    import duckdb

    from zerodoc.transform.runner import is_run_state

    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
            " and table_schema in ('intermediate', 'shared') order by all").fetchall()
        return {f"{s}.{t}": [int(x) for x in con.execute(
            f'select count(*), coalesce(sum(hash(t)), 0) from "{s}"."{t}" as t').fetchone()]
            for s, t in names if not is_run_state(f"{s}.{t}")}  # fmt: skip


def _warehouse(home: Path) -> Path:
    from zerodoc.config import Settings

    return Settings(home=home).warehouse_path


def _drop_warehouse(home: Path) -> None:
    wh = _warehouse(home)
    for p in (wh, wh.with_name(wh.name + ".wal")):
        p.unlink(missing_ok=True)


def _seconds_by_type(home: Path, wall_s: float) -> dict:
    """Where the last plain run's time went: dbt's own seconds per resource type (model, test, unit_test,
    seed), `startup_parse` = wall seconds of the process minus dbt's elapsed (interpreter, adapter,
    parse), and per model (`models`, seconds >= 0.05, largest first)."""
    run = json.loads((home / "dbt" / "plain-target" / "run_results.json").read_text())
    out: dict = {"elapsed": round(float(run["elapsed_time"]), 2)}
    out["startup_parse"] = round(wall_s - out["elapsed"], 2)
    models: dict[str, float] = {}
    for r in run["results"]:
        kind = r["unique_id"].split(".", 1)[0]
        out[kind] = round(out.get(kind, 0.0) + float(r["execution_time"]), 2)
        if kind == "model":
            models[r["unique_id"].rsplit(".", 1)[-1]] = round(float(r["execution_time"]), 2)
    out["models"] = {k: v for k, v in sorted(models.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return out


def run_dbt_bench(big: Path, persons: int, day1: str, env_for: Callable[[Path], dict[str, str]],
                  measure: Measure, metric: Callable[..., dict], log: Callable[[str], None],
                  prepare_airflow: Callable[[Path], None], reps: int = 2) -> list[dict]:
    day2 = (dt.date.fromisoformat(day1) + dt.timedelta(days=1)).isoformat()
    home = big / "dbt-bench"
    changed = prepare_home(big, home, day1, day2)
    log(f"dbt bench home {home}: day 2 changes {json.dumps(changed)}")
    prepare_airflow(home)
    env = env_for(home)
    env["ZERODOC_WAREHOUSE"] = str(_warehouse(home))
    project = REPO / "dbt_project"
    logs = home / "logs"

    def plain(ds: str, *extra: str, tag: str) -> float:
        cmd = [str(BIN / "dbt"), "build", *extra, "--project-dir", str(project), "--profiles-dir", str(project),
               "--target-path", str(home / "dbt" / "plain-target"), "--log-path", str(home / "dbt" / "plain-logs")]
        # The date as the pipeline passes it (zerodoc.transform.runner): ZERODOC_DS, not --vars.
        secs, _, rc = measure(cmd, {**env, "ZERODOC_DS": ds}, logs / f"dbt-{tag}.log")
        if rc:
            raise RuntimeError(f"plain dbt build failed (rc={rc}); see {logs / f'dbt-{tag}.log'}")
        log(f"plain dbt build {' '.join(extra)} ds={ds}: {secs:.1f}s")
        return secs

    def through_airflow(ds: str, tag: str) -> float:
        cmd = [sys.executable, "-c", AIRFLOW_DBT_CODE, str(REPO / "dags"), ds]
        secs, _, rc = measure(cmd, env, logs / f"dbt-{tag}.log")
        if rc:
            raise RuntimeError(f"dbt through Airflow failed (rc={rc}); see {logs / f'dbt-{tag}.log'}")
        marker = [x for x in (logs / f"dbt-{tag}.log").read_text(errors="replace").splitlines()
                  if x.startswith("@@TASKS@@")]
        if not marker:
            raise RuntimeError(f"dbt through Airflow printed no task times; see {logs / f'dbt-{tag}.log'}")
        took = json.loads(marker[-1][len("@@TASKS@@"):])
        task_s.append(took["dbt_build"])
        dagbag_s.append(took["dagbag"])
        log(f"dbt through Airflow ds={ds}: process {secs:.1f}s, DagBag {dagbag_s[-1]:.1f}s + dbt_build task"
            f" {task_s[-1]:.1f}s")
        return secs

    # Orchestration: alternate plain and Airflow, each from an empty warehouse (same work each time).
    plain_s, process_s, task_s, dagbag_s = [], [], [], []
    for i in range(reps):
        _drop_warehouse(home)
        process_s.append(through_airflow(day1, f"airflow-{i}"))
        _drop_warehouse(home)
        plain_s.append(plain(day1, *DAILY_ARGS, tag=f"plain-{i}"))
    airflow_s = [d + t for d, t in zip(dagbag_s, task_s, strict=True)]
    # The warehouse now holds day 1 as a daily run leaves it: snapshot it for each incremental rep.
    wh = _warehouse(home)
    snapshot = wh.with_name("day1-snapshot.duckdb")
    shutil.copyfile(wh, snapshot)

    inc_s, full_s, inc_parts, full_parts = [], [], [], []
    for i in range(reps):
        shutil.copyfile(snapshot, wh)
        use_day2(home, day2, "window")
        inc_s.append(plain(day2, *DAILY_ARGS, tag=f"incremental-{i}"))
        inc_parts.append(_seconds_by_type(home, inc_s[-1]))
        daily_print = fingerprint(wh)
        shutil.copyfile(snapshot, wh)
        use_day2(home, day2, "snapshot")
        full_s.append(plain(day2, "--full-refresh", tag=f"full-{i}"))
        full_parts.append(_seconds_by_type(home, full_s[-1]))
        full_print = fingerprint(wh)
        differ = sorted(k for k in set(daily_print) | set(full_print) if daily_print.get(k) != full_print.get(k))
        if differ:
            raise RuntimeError(f"the daily run and the full build left different tables: {differ}")
    snapshot.unlink()

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    inc_ratios = [a / b for a, b in zip(inc_s, full_s, strict=True)]
    orch_ratios = [a / b for a, b in zip(airflow_s, plain_s, strict=True)]
    out = [
        metric("dbt.full_build_seconds", mean(full_s), "s", None, persons),
        metric("dbt.incremental_1pct_seconds", mean(inc_s), "s", mean(full_s), persons),
        metric("dbt.incremental_1pct_vs_full_ratio", mean(inc_s) / mean(full_s), "x", 1.0, persons, target=0.10),
        metric("orchestration.plain_dbt_build_seconds", mean(plain_s), "s", None, persons),
        metric("orchestration.airflow_dbt_seconds", mean(airflow_s), "s", mean(plain_s), persons),
        metric("orchestration.airflow_dbt_build_task_seconds", mean(task_s), "s", mean(plain_s), persons),
        metric("orchestration.airflow_dbt_process_seconds", mean(process_s), "s", mean(plain_s), persons),
        metric("orchestration.airflow_dbt_vs_plain_dbt_ratio", mean(airflow_s) / mean(plain_s), "x", 1.0, persons,
               target=1.3),
    ]
    out[2]["runs"] = {"incremental_s": inc_s, "full_s": full_s, "ratios": [round(r, 4) for r in inc_ratios],
                      "changed_rows": changed,
                      "daily_reads": "windows of the changed rows where extraction can window, else snapshots",
                      "warehouses_equal": True, "incremental_node_s": inc_parts, "full_node_s": full_parts}
    out[7]["runs"] = {"airflow_s": airflow_s, "plain_s": plain_s, "dbt_build_task_s": task_s, "dagbag_s": dagbag_s,
                      "process_s": process_s, "ratios": [round(r, 4) for r in orch_ratios],
                      "process_ratios": [round(a / b, 4) for a, b in zip(process_s, plain_s, strict=True)]}
    return out


if __name__ == "__main__":  # pragma: no cover - run through bench/run.py --sections dbt
    print("run `python bench/run.py --sections dbt`", file=sys.stderr)
    sys.exit(2)
