"""The embedded default: Airflow on SQLite in $ZERODOC_HOME/airflow, DAGs run with dag.test()."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from zerodoc.config import REPO_ROOT, Settings


def airflow_env(cfg: Settings) -> dict[str, str]:
    home = cfg.home / "airflow"
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Two cores: keep Airflow from oversubscribing them.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        # Cosmos reports usage to an outside endpoint by default: nothing leaves an agency's network.
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "ZERODOC_HOME": str(cfg.home),
    }


def deployment_env(cfg: Settings) -> dict[str, str]:
    """Airflow settings of the selected deployment: ZERODOC_DEPLOYMENT=embedded (default) or cluster."""
    mode = os.environ.get("ZERODOC_DEPLOYMENT", "embedded")
    if mode == "cluster":
        from zerodoc.orchestration.cluster import cluster_env

        return cluster_env(cfg)
    if mode != "embedded":
        raise ValueError(f"ZERODOC_DEPLOYMENT must be 'embedded' or 'cluster', not {mode!r}")
    return airflow_env(cfg)


def apply_airflow_env(cfg: Settings) -> None:
    """Must run before the first `import airflow` in this process."""
    for k, v in deployment_env(cfg).items():
        os.environ.setdefault(k, v)
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)


def _airflow(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def ensure_metadata_db(cfg: Settings) -> None:
    """Create/upgrade Airflow's SQLite metadata DB and the warehouse pool, once; refresh the dbt manifest."""
    apply_airflow_env(cfg)
    from zerodoc.transform.cosmos_task_group import ensure_manifest_for_mode

    ensure_manifest_for_mode(cfg)  # per-model dbt tasks render from it; DAG parsing never runs dbt
    marker = Path(os.environ["AIRFLOW_HOME"]) / ".zerodoc-migrated"
    if marker.exists():
        return
    _airflow("db", "migrate")
    _airflow("pools", "set", "warehouse_writer", "1", "One writer at a time on the DuckDB warehouse")
    marker.write_text("ok\n")


@dataclass
class DagOutcome:
    dag_id: str
    state: str
    seconds: float
    failed_tasks: list[str] = field(default_factory=list)


@contextmanager
def output_to(log_path: Path | None) -> Iterator[None]:
    """Send this process's stdout/stderr (Airflow's task logs included) to a file for a while."""
    if log_path is None:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_dag(dag_id: str, ds: str, run_conf: dict | None = None, log_path: Path | None = None) -> DagOutcome:
    """Run one DAG for one logical date in this process, as `airflow dags test` does."""
    import datetime as dt

    from airflow.dag_processing.dagbag import DagBag

    logical = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)
    t0 = time.perf_counter()
    with output_to(log_path):
        bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        dag = bag.dags.get(dag_id)
        if dag is None:
            raise LookupError(f"no DAG {dag_id!r} in {REPO_ROOT / 'dags'}")
        dr = dag.test(logical_date=logical, run_conf=run_conf)
    seconds = time.perf_counter() - t0
    failed = [ti.task_id for ti in dr.get_task_instances() if ti.state not in ("success", "skipped")]
    return DagOutcome(dag_id, str(dr.state), seconds, failed)
