"""The distributed deployment as native processes on loopback: Airflow with CeleryExecutor
(metadata in PostgreSQL, Redis broker), two Celery workers, and the evidence API.

`ZERODOC_DEPLOYMENT=cluster` is the one selector: the same DAGs and code, only the Airflow
environment differs (see `cluster_env`). `zerodoc cluster up|down|status` (and the
`make cluster-up` / `make cluster-down` targets) manage the processes; each runs in its own
process group so `down` stops it with SIGINT (Airflow's clean shutdown), then SIGKILLs what is
left, and no orphans remain.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zerodoc.config import REPO_ROOT, Settings, restored_environ
from zerodoc.fsutil import write_json_atomic


def worker_names() -> tuple[str, ...]:
    """Celery workers to run: ZERODOC_CLUSTER_WORKERS (default 2) of them, worker1, worker2, …"""
    return tuple(f"worker{i}" for i in range(1, int(os.environ.get("ZERODOC_CLUSTER_WORKERS", "2")) + 1))


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    port: int | None = None


def api_port() -> int:
    return int(os.environ.get("ZERODOC_AIRFLOW_PORT", "8080"))


def evidence_port() -> int:
    return int(os.environ.get("ZERODOC_EVIDENCE_PORT", "8000"))


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def metadata_dsn() -> str:
    return os.environ.get("ZERODOC_AIRFLOW_DB", "postgresql+psycopg2://postgres@127.0.0.1:5432/zerodoc_airflow")


def broker_url() -> str:
    return os.environ.get("ZERODOC_BROKER_URL", "redis://127.0.0.1:6379/0")


def cluster_env(cfg: Settings) -> dict[str, str]:
    """Airflow settings for the cluster; everything else is shared with the embedded default."""
    from zerodoc.orchestration.local import airflow_env

    state = cluster_dir(cfg)
    secrets = _secrets(state)
    dsn = metadata_dsn()
    env = airflow_env(cfg)
    env.update({
        "AIRFLOW_HOME": str(state / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": dsn,
        "AIRFLOW__CELERY__BROKER_URL": broker_url(),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + dsn.replace("+psycopg2", ""),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        # Two workers x two slots: let one DAG use all four.
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port()}/execution/",
        "AIRFLOW__API__PORT": str(api_port()),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port()}",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": secrets["api_secret"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,auditor:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(state / "airflow" / "passwords.json"),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "ZERODOC_DEPLOYMENT": "cluster",
    })
    return env


def cluster_dir(cfg: Settings) -> Path:
    return cfg.home / "cluster"


def _secrets(state: Path) -> dict[str, str]:
    """Per-installation secrets shared by every component, created once (never in git)."""
    import secrets as pysecrets

    path = state / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    state.mkdir(parents=True, exist_ok=True)
    values = {"jwt_secret": pysecrets.token_urlsafe(32), "api_secret": pysecrets.token_urlsafe(32)}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def components() -> list[Component]:
    airflow = _bin("airflow")
    comps = [
        Component("api-server", [airflow, "api-server", "--port", str(api_port())], api_port()),
        Component("scheduler", [airflow, "scheduler"]),
        Component("dag-processor", [airflow, "dag-processor"]),
        Component("triggerer", [airflow, "triggerer"]),
    ]
    for w in worker_names():
        comps.append(Component(w, [airflow, "celery", "worker", "--celery-hostname", f"{w}@%h",
                                   "--concurrency", "2"]))
    comps.append(Component("evidence-api", [_bin("zerodoc"), "serve", "--port", str(evidence_port())],
                           evidence_port()))
    return comps


def _create_metadata_db() -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(metadata_dsn())
    admin = f"postgresql://{url.username or 'postgres'}@{url.host or '127.0.0.1'}:{url.port or 5432}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (url.database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{url.database}"')


def _run(argv: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv[:3])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pids_file(cfg: Settings) -> Path:
    return cluster_dir(cfg) / "pids.json"


def up(cfg: Settings, timeout: float = 180.0, log=print) -> dict[str, int]:
    """Start every component (idempotent: refuses if already running) and wait until they answer."""
    if status(cfg):
        raise RuntimeError(f"cluster already running ({_pids_file(cfg)}); run `make cluster-down` first")
    env = {**os.environ, **cluster_env(cfg)}
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    log("creating/upgrading the Airflow metadata DB in PostgreSQL…")
    _create_metadata_db()
    _run([_bin("airflow"), "db", "migrate"], env)
    _run([_bin("airflow"), "pools", "set", "warehouse_writer", "1", "One writer at a time on the DuckDB warehouse"],
         env)
    from zerodoc.transform.cosmos_task_group import ensure_manifest_for_mode

    log("dbt parse: the manifest publish_shared's per-model tasks render from…")
    ensure_manifest_for_mode(cfg, deployment="cluster")
    logs = cluster_dir(cfg) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pids: dict[str, int] = {}
    for comp in components():
        pids[comp.name] = _start(comp, env, logs)
        log(f"started {comp.name} (pid {pids[comp.name]}) → {logs / (comp.name + '.log')}")
    write_json_atomic(_pids_file(cfg), pids)
    deadline = time.monotonic() + timeout
    for comp in components():
        if comp.port is None:
            continue
        while not _port_open(comp.port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{comp.name} did not answer on :{comp.port}; see {logs}")
            time.sleep(1)
        log(f"{comp.name} answers on 127.0.0.1:{comp.port}")
    _wait_workers(env, deadline, log)
    return pids


def _start(comp: Component, env: dict[str, str], logs: Path) -> int:
    # Tasks report which worker ran them (visible in their XCom and validation records).
    comp_env = {**env, "ZERODOC_WORKER_NAME": comp.name}
    with open(logs / f"{comp.name}.log", "ab") as fh:
        proc = subprocess.Popen(comp.argv, env=comp_env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO_ROOT)
    return proc.pid


def restart(cfg: Settings, name: str, sig: int = signal.SIGKILL, grace: float = 30.0, log=print) -> int:
    """Kill one component's process group with `sig` (default: a crash) and start it again."""
    pids: dict[str, int] = json.loads(_pids_file(cfg).read_text())
    comp = {c.name: c for c in components()}[name]
    try:
        os.killpg(pids[name], sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while _group_alive(pids[name]):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} (process group {pids[name]}) outlived signal {sig}")
        time.sleep(0.2)
    pids[name] = _start(comp, {**os.environ, **cluster_env(cfg)}, cluster_dir(cfg) / "logs")
    write_json_atomic(_pids_file(cfg), pids)
    log(f"restarted {name} (pid {pids[name]})")
    return pids[name]


def _wait_workers(env: dict[str, str], deadline: float, log) -> None:
    while time.monotonic() < deadline:
        # Celery workers announce themselves through the broker; `inspect ping` is the official probe.
        proc = subprocess.run(
            [_bin("celery"), "--app", "airflow.providers.celery.executors.celery_executor.app", "inspect",
             "ping", "--timeout", "3"], env=env, capture_output=True, text=True)
        alive = [w for w in worker_names() if f"{w}@" in proc.stdout]
        if len(alive) == len(worker_names()):
            log(f"celery workers answer: {', '.join(alive)}")
            return
        time.sleep(2)
    raise TimeoutError("celery workers did not answer `inspect ping` in time")


def status(cfg: Settings) -> dict[str, int]:
    path = _pids_file(cfg)
    if not path.exists():
        return {}
    pids = json.loads(path.read_text())
    return {name: pid for name, pid in pids.items() if _alive(pid)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    # A leader started by this very process stays a zombie (and keeps its group "alive") until
    # reaped: reap it if it is our child, as `zerodoc cluster up` in a test or a script would be.
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_groups(pids: dict[str, int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_group_alive(p) for p in pids.values()):
        time.sleep(0.5)


def down(cfg: Settings, grace: float = 45.0, log=print) -> list[str]:
    """SIGINT every process group (Airflow's clean shutdown), then SIGTERM, then SIGKILL stragglers.
    Returns the names that needed SIGKILL."""
    path = _pids_file(cfg)
    if not path.exists():
        log("cluster is not running")
        return []
    pids: dict[str, int] = json.loads(path.read_text())
    for name, pid in pids.items():
        try:
            os.killpg(pid, signal.SIGINT)
            log(f"SIGINT → {name} (process group {pid})")
        except ProcessLookupError:
            pass
    # Airflow's dag-processor can lose a SIGINT: its handler raises SystemExit, and when the signal
    # lands while logging releases its lock, Python swallows it ("Exception ignored in
    # _releaseLock") and the manager keeps parsing. So: SIGINT again after a while, then SIGTERM to
    # the whole group (no child is orphaned: the group gets it), and SIGKILL only as the last resort.
    _wait_groups(pids, min(15.0, grace / 3))
    for name, pid in pids.items():
        if _group_alive(pid):
            log(f"SIGINT again → {name}: still running")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGINT)
    _wait_groups(pids, grace - min(15.0, grace / 3))
    for name, pid in pids.items():
        if _group_alive(pid):
            log(f"SIGTERM → {name} (process group {pid}): SIGINT did not stop it within {grace:.0f}s")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    _wait_groups(pids, 15.0)
    killed = []
    for name, pid in pids.items():
        if _group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            killed.append(name)
            log(f"SIGKILL → {name}: did not stop on SIGINT or SIGTERM")
    path.unlink()
    return killed


def latest_interval_date(now: float | None = None) -> str:
    """The logical date the scheduler gives a @daily DAG when it is unpaused (catchup off).

    Airflow 3 schedules cron presets with CronTriggerTimetable: the run of today's 00:00 UTC
    trigger carries today's date (Airflow 2 gave the previous interval's start).
    """
    import datetime as dt

    return dt.datetime.fromtimestamp(now or time.time(), dt.UTC).date().isoformat()


def _db_rows(sql: str, params: dict) -> list[tuple]:
    from sqlalchemy import create_engine, text

    engine = create_engine(metadata_dsn())
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def run_pipeline(cfg: Settings, ds: str, timeout: float = 1800, log=print) -> dict:
    """Unpause the DAGs and wait until the scheduler has run ingest and publish for the latest interval.

    This is how production runs: the scheduler creates the @daily runs and the validated
    assets trigger publish_shared. `ds` must be the latest interval (see latest_interval_date);
    for other dates use `airflow dags trigger` / `airflow dags backfill` against the cluster.
    """
    from zerodoc.catalog import agencies

    if ds != latest_interval_date():
        raise ValueError(f"the scheduler will run {latest_interval_date()}, not {ds}")
    env = {**os.environ, **cluster_env(cfg)}
    ingest = [f"ingest_{c}" for c in agencies()]
    for dag_id in ["publish_shared", *ingest]:
        _run([_bin("airflow"), "dags", "unpause", dag_id], env)
        log(f"unpaused {dag_id}")
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        rows = _db_rows(
            "select dag_id, state from dag_run where dag_id = any(:ids) and logical_date::date = :ds",
            {"ids": ingest, "ds": ds},
        )
        states = {d: s for d, s in rows}
        if any(s == "failed" for s in states.values()):
            break
        if len(states) == len(ingest) and all(s == "success" for s in states.values()):
            # the asset-triggered publish run that followed the last of these ingest runs
            publish = _db_rows(
                "select state from dag_run where dag_id = 'publish_shared' and run_after >= "
                "(select min(start_date) from dag_run where dag_id = any(:ids) and logical_date::date = :ds) "
                "order by id desc limit 1", {"ids": ingest, "ds": ds},
            )
            if publish:
                states["publish_shared"] = publish[0][0]
                if publish[0][0] in ("success", "failed"):
                    break
        time.sleep(3)
    workers = _db_rows(
        "select ti.task_id, ti.dag_id, x.value from task_instance ti join xcom x "
        "on x.dag_id = ti.dag_id and x.run_id = ti.run_id and x.task_id = ti.task_id and x.key = 'return_value' "
        "where ti.dag_id = any(:ids) and ti.run_id in (select run_id from dag_run where dag_id = ti.dag_id "
        "and logical_date::date = :ds)", {"ids": ingest, "ds": ds},
    )
    ran_on = {}
    for task_id, dag_id, value in workers:
        try:
            payload = json.loads(value) if isinstance(value, str) else value
            ran_on[f"{dag_id}.{task_id}"] = payload.get("worker")
        except (TypeError, ValueError, AttributeError):
            continue
    return {"ds": ds, "states": states, "publish_state": states.get("publish_shared", "missing"),
            "ran_on": ran_on}


def speedup_2_workers(persons: int, seed: int, home: Path | str, timeout: float = 7200, log=print) -> dict:
    """`cluster.speedup_2_workers`: the multi-agency pipeline on two Celery workers vs one, same data,
    same machine, same run. Each leg gets a fresh data root (the sources are generated once and
    copied) and a fresh metadata DB, and is timed from unpausing the DAGs to the end of publish."""
    import shutil
    import uuid

    from zerodoc.sources.generate import generate, write_expected

    home = Path(home).resolve()
    template = Settings(home=home / "template")
    sources = template.sources_dir
    expected = sources / "_expected.json"
    if not expected.exists() or json.loads(expected.read_text()).get("persons") != persons:
        shutil.rmtree(sources, ignore_errors=True)
        write_expected(generate(persons, seed, sources), template)
    legs: dict[int, dict] = {}
    with restored_environ("ZERODOC_HOME", "ZERODOC_CLUSTER_WORKERS", "ZERODOC_AIRFLOW_DB"):
        for n in (1, 2):
            leg_home = home / f"workers-{n}"
            shutil.rmtree(leg_home, ignore_errors=True)
            shutil.copytree(sources, leg_home / "sources")
            db = f"zerodoc_airflow_speedup_{uuid.uuid4().hex[:8]}"
            os.environ.update({"ZERODOC_HOME": str(leg_home), "ZERODOC_CLUSTER_WORKERS": str(n),
                               "ZERODOC_AIRFLOW_DB": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"})
            cfg = Settings(home=leg_home)
            try:
                up(cfg, timeout=900, log=log)
                ds = latest_interval_date()
                t0 = time.perf_counter()
                result = run_pipeline(cfg, ds, timeout=timeout, log=log)
                seconds = time.perf_counter() - t0
            finally:
                down(cfg, log=log)
                _drop_db(db)
            if result["publish_state"] != "success":
                raise RuntimeError(f"{n} worker(s): the pipeline did not complete: {result}")
            legs[n] = {"seconds": round(seconds, 1), "ran_on": sorted(set(result["ran_on"].values()))}
            log(f"{n} worker(s): {seconds:.1f}s")
    return {"cluster.speedup_2_workers": round(legs[1]["seconds"] / legs[2]["seconds"], 3),
            "persons": persons, "one_worker_s": legs[1]["seconds"], "two_workers_s": legs[2]["seconds"],
            "legs": legs}


def _drop_db(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
