"""`zerodoc`: the operator's command line."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="ZeroDoc: agency records → validated shared datasets → signed, purpose-bound evidence.",
    no_args_is_help=True,
    add_completion=False,
)
cluster_app = typer.Typer(
    help="The distributed deployment (CeleryExecutor, PostgreSQL, Redis, 2 workers) as local processes.",
    no_args_is_help=True,
)
publish_app = typer.Typer(help="Inspect and roll back published dataset versions.", no_args_is_help=True)
app.add_typer(publish_app, name="publish")
app.add_typer(cluster_app, name="cluster")
console = Console(width=int(__import__("os").environ.get("COLUMNS", "140")))


def _fail(message: str, hint: str) -> None:
    console.print(f"[red]error:[/red] {message}\n[dim]next:[/dim] {hint}")
    raise typer.Exit(2)


@app.command()
def generate(
    persons: Annotated[int, typer.Option(help="Number of persons in the resident registry")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same records")] = 42,
    load_servers: Annotated[bool, typer.Option(help="Also load configured PostgreSQL/MariaDB servers")] = True,
) -> None:
    """Build synthetic agency records (MOIS resident registry, NTS income) with a known defect plan."""
    from zerodoc.catalog import agencies
    from zerodoc.config import settings
    from zerodoc.sources import generate as gen
    from zerodoc.sources.servers import load_servers as load

    cfg = settings()
    t0 = time.perf_counter()
    with console.status(f"generating {persons:,} persons (seed {seed})…"):
        expected = gen.generate(persons, seed, cfg.sources_dir)
        gen.write_expected(expected, cfg)
    console.print(f"generated stand-ins under {cfg.sources_dir} in {time.perf_counter() - t0:.1f}s")
    if load_servers:
        with console.status("loading configured agency servers…"):
            counts = load(agencies(), cfg)
        for q, n in counts.items():
            console.print(f"loaded {n:,} rows into the {q} server table")
    console.print_json(json.dumps(expected))


@app.command()
def run(
    persons: Annotated[int, typer.Option(help="Persons to generate when no matching data exists")] = 20_000,
    seed: Annotated[int, typer.Option(help="Generator seed")] = 42,
    ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD (default: today, UTC)")] = "",
) -> None:
    """Run the whole pipeline through Airflow (embedded default) and print a summary."""
    from zerodoc.config import ConfigError, settings
    from zerodoc.orchestration.local import apply_airflow_env

    cfg = settings()
    ds = ds or dt.datetime.now(dt.UTC).date().isoformat()
    try:
        _ = cfg.pseudonym_key
    except ConfigError as exc:
        _fail(str(exc), "run `make run`, which creates .env, or export ZERODOC_PSEUDONYM_KEY")
    apply_airflow_env(cfg)
    from zerodoc.orchestration.pipeline import print_summary, run_pipeline

    summary = run_pipeline(cfg, persons=persons, seed=seed, ds=ds, console=console)
    print_summary(summary, cfg, console)
    if not summary.ok:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the evidence API over the published datasets."""
    from zerodoc.api.cli import serve as api_serve

    api_serve(host=host, port=port, workers=workers)


@app.command("env")
def env_cmd() -> None:
    """Print the Airflow environment of the selected deployment, for `eval "$(zerodoc env)"`.

    ZERODOC_DEPLOYMENT=embedded (default: SQLite, dag.test) or cluster (CeleryExecutor on
    PostgreSQL + Redis) is the only switch between the two; the code is the same.
    """
    import shlex

    from zerodoc.config import settings
    from zerodoc.orchestration.local import deployment_env

    for k, v in sorted(deployment_env(settings()).items()):
        print(f"export {k}={shlex.quote(v)}")


@publish_app.command("list")
def publish_list(dataset: str) -> None:
    """Versions of DATASET, the current one marked."""
    from zerodoc.publish import store

    try:
        cur = store.current(dataset).version
    except store.NotPublishedError:
        cur = None
    table = Table("version", "as_of", "rows", "validation runs", "current")
    for v in store.list_versions(dataset):
        meta = store.load_version(dataset, v).metadata
        table.add_row(v, meta["as_of"], f"{meta['row_count']:,}", ", ".join(meta["validation_runs"]),
                      "◀" if v == cur else "")
    console.print(table)


@publish_app.command("rollback")
def publish_rollback(dataset: str, version: Annotated[str, typer.Argument()] = "") -> None:
    """Point DATASET's CURRENT back at VERSION (default: the version before the current one)."""
    from zerodoc.publish import store

    versions = store.list_versions(dataset)
    try:
        cur = store.current(dataset).version
    except store.NotPublishedError:
        _fail(f"{dataset} has never been published", "run the publish_shared DAG first")
    if not version:
        older = [v for v in versions if v < cur]
        if not older:
            _fail(f"{dataset} has no version older than {cur}", "`zerodoc publish list DATASET` shows them")
        version = older[-1]
    if version not in versions:
        _fail(f"{dataset} has no version {version}", "`zerodoc publish list DATASET` shows them")
    store.switch_current(dataset, version, reason=f"rollback from {cur}")
    console.print(f"{dataset}: CURRENT {cur} → {version}")


@cluster_app.command("up")
def cluster_up() -> None:
    """Start api-server, scheduler, dag-processor, triggerer, two Celery workers and the evidence API."""
    from zerodoc.config import settings
    from zerodoc.orchestration import cluster

    cfg = settings()
    try:
        cluster.up(cfg, log=console.print)
    except (RuntimeError, TimeoutError) as exc:
        _fail(str(exc), "check the component logs under $ZERODOC_HOME/cluster/logs, then `zerodoc cluster down`")
    console.print(f"Airflow UI: http://127.0.0.1:{cluster.api_port()}  (users in "
                  f"{cluster.cluster_dir(cfg) / 'airflow' / 'passwords.json'})")
    console.print(f"Evidence API: http://127.0.0.1:{cluster.evidence_port()}")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop every component cleanly (SIGINT, then SIGKILL after a grace period); no orphans."""
    from zerodoc.config import settings
    from zerodoc.orchestration import cluster

    cluster.down(settings(), log=console.print)


@cluster_app.command("status")
def cluster_status() -> None:
    """Which components are running."""
    from zerodoc.config import settings
    from zerodoc.orchestration import cluster

    running = cluster.status(settings())
    for comp in cluster.components():
        state = f"running (pid {running[comp.name]})" if comp.name in running else "stopped"
        console.print(f"{comp.name:15} {state}")


@cluster_app.command("run")
def cluster_run(
    ds: Annotated[str, typer.Option(help="Logical date YYYY-MM-DD (default: today, UTC)")] = "",
    timeout: Annotated[int, typer.Option(help="Seconds to wait for publish_shared")] = 1800,
) -> None:
    """Trigger the ingest DAGs on the running cluster and wait for publish_shared to finish."""
    from zerodoc.config import settings
    from zerodoc.orchestration import cluster

    ds = ds or dt.datetime.now(dt.UTC).date().isoformat()
    result = cluster.run_pipeline(settings(), ds, timeout=timeout, log=console.print)
    console.print_json(json.dumps(result))
    if result["publish_state"] != "success":
        raise typer.Exit(1)


def _register_optional() -> None:
    """Sub-commands owned by the API and audit packages."""
    from zerodoc.api.cli import consumer_app, evidence_verify, keys_app
    from zerodoc.audit.cli import audit_verify
    from zerodoc.audit.validation_log import validation_verify

    app.add_typer(consumer_app, name="consumer", help="Create, list, rotate and revoke API consumers.")
    app.add_typer(keys_app, name="keys", help="Evidence signing keys: rotate, list.")
    evidence_app = typer.Typer(help="Check signed evidence answers.", no_args_is_help=True)
    evidence_app.command("verify")(evidence_verify)
    app.add_typer(evidence_app, name="evidence")
    audit_app = typer.Typer(help="Check the tamper-evident logs.", no_args_is_help=True)
    audit_app.command("verify")(audit_verify)
    audit_app.command("verify-validation")(validation_verify)
    app.add_typer(audit_app, name="audit")


_register_optional()


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
