"""`zerodoc`: the operator's command line."""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

PIPELINE, SHARING, OPERATIONS = "Pipeline", "Evidence and sharing", "Operations and audit"

app = typer.Typer(
    help="ZeroDoc: agency records → validated shared datasets → signed, purpose-bound evidence.",
    epilog=(
        "First time: `zerodoc generate`, then `zerodoc run`, then `zerodoc serve` in another terminal.  "
        "Every zone and all state live under $ZERODOC_HOME (default ./var); the pseudonym key comes from "
        "ZERODOC_PSEUDONYM_KEY (`make run` writes it to .env); ZERODOC_DEPLOYMENT=cluster switches to "
        "the CeleryExecutor deployment.  `zerodoc COMMAND --help` for each command."
    ),
    no_args_is_help=True,
    add_completion=False,
)
cluster_app = typer.Typer(
    help="The distributed deployment (CeleryExecutor, PostgreSQL, Redis, 2 workers) as local processes.",
    no_args_is_help=True,
)
publish_app = typer.Typer(help="Inspect and roll back published dataset versions.", no_args_is_help=True)
app.add_typer(publish_app, name="publish", rich_help_panel=OPERATIONS)
app.add_typer(cluster_app, name="cluster", rich_help_panel=OPERATIONS)
console = Console(width=int(__import__("os").environ.get("COLUMNS", "140")))


def _fail(message: str, hint: str) -> None:
    console.print(f"[red]error:[/red] {message}\n[dim]next:[/dim] {hint}")
    raise typer.Exit(2)


class Steps:
    """Progress of a long command: a live bar on a terminal; without one (CI, logs, pipes) exactly one plain
    line per finished step, so a log never fills with spinner frames."""

    def __init__(self, total: int, out: Console | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.out = out or console
        self.total, self.done = total, 0
        self.live = self.out.is_terminal
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.out,
            disable=not self.live,
            transient=False,
        )
        self.task = self.bar.add_task("", total=total)

    def __enter__(self) -> Steps:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        self.bar.update(self.task, description=description)
        t0 = time.perf_counter()
        yield
        self.done += 1
        self.bar.advance(self.task)
        line = f"[{self.done}/{self.total}] {description}: done in {time.perf_counter() - t0:.1f}s"
        if self.live:
            self.bar.console.print(line, highlight=False, markup=False)
        else:
            self.out.print(line, highlight=False, markup=False)


def _parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r} is not a date", f"write it as YYYY-MM-DD, e.g. {option} 2026-11-01")
        raise  # unreachable: _fail exits


@app.command(rich_help_panel=PIPELINE)
def generate(
    persons: Annotated[int, typer.Option(help="Persons in the resident registry (at least 1000)")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same records")] = 42,
    load_servers: Annotated[bool, typer.Option(help="Also load the agency servers that have a connection set")] = True,
) -> None:
    """Build synthetic records for all seven agencies, with a known defect plan so every count is predictable."""
    from zerodoc.catalog import agencies
    from zerodoc.config import settings
    from zerodoc.sources import generate as gen
    from zerodoc.sources.servers import connection_uri
    from zerodoc.sources.servers import load_servers as load

    if persons < 1000:
        _fail(
            f"--persons {persons} is too small: every defect kind needs at least 1000 persons",
            "use --persons 1000 or more (make run uses 20000)",
        )
    cfg = settings()
    servers = {
        code: a
        for code, a in agencies().items()
        if load_servers and a.kind in ("postgres", "mysql") and connection_uri(a.conn_id) is not None
    }
    counts: dict[str, int] = {}
    with Steps(2 + len(servers)) as steps:
        with steps.step(f"generating {persons:,} persons (seed {seed}) under {cfg.sources_dir}"):
            expected = gen.generate(persons, seed, cfg.sources_dir)
        with steps.step("writing the expected counts of the defect plan"):
            gen.write_expected(expected, cfg)
        for code, agency in servers.items():
            with steps.step(f"loading the {code} server ({agency.kind})"):
                try:
                    counts.update(load({code: agency}, cfg))
                except Exception as exc:  # noqa: BLE001 - say which server and what to check, not a traceback
                    _fail(
                        f"loading the {code} server failed: {exc}",
                        f"check that the server behind AIRFLOW_CONN_{agency.conn_id.upper()} is up and "
                        "reachable, or rerun with --no-load-servers to use the file stand-ins only",
                    )
    for q, n in counts.items():
        console.print(f"loaded {n:,} rows into the {q} server table")
    console.print_json(json.dumps(expected))


@app.command(rich_help_panel=PIPELINE)
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


@app.command(rich_help_panel=PIPELINE)
def backfill(
    start: Annotated[str, typer.Option(help="First logical date, YYYY-MM-DD")],
    end: Annotated[str, typer.Option(help="Last logical date (included), YYYY-MM-DD")],
    persons: Annotated[int, typer.Option(help="Persons to generate when no matching data exists")] = 20_000,
    seed: Annotated[int, typer.Option(help="Generator seed")] = 42,
) -> None:
    """Run the whole pipeline for every logical date from START to END, one date after the other.

    Each date replaces only its own partitions, so a backfill can be rerun or resumed from any date.
    """
    from zerodoc.config import ConfigError, settings
    from zerodoc.orchestration.local import apply_airflow_env

    first, last = _parse_date(start, "--start"), _parse_date(end, "--end")
    if last < first:
        _fail(f"--end {end} is before --start {start}", f"swap them: --start {end} --end {start}")
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    cfg = settings()
    try:
        _ = cfg.pseudonym_key
    except ConfigError as exc:
        _fail(str(exc), "run `make run`, which creates .env, or export ZERODOC_PSEUDONYM_KEY")
    apply_airflow_env(cfg)
    from zerodoc.orchestration.pipeline import run_pipeline

    quiet = Console(quiet=True)
    failed: list[str] = []
    with Steps(len(days)) as steps:
        for day in days:
            ds = day.isoformat()
            with steps.step(f"pipeline for {ds}"):
                summary = run_pipeline(cfg, persons=persons, seed=seed, ds=ds, console=quiet)
            if not summary.ok:
                failed.append(ds)
                console.print(f"[red]{ds} failed:[/red] {'; '.join(summary.problems)} (task logs: {summary.log_path})")
    if failed:
        _fail(
            f"{len(failed)} of {len(days)} dates failed: {', '.join(failed)}",
            f"read the task logs named above, fix the cause, then `zerodoc backfill --start {failed[0]} --end {end}`"
            " (dates that succeeded are replaced with the same result)",
        )
    console.print(f"backfilled {len(days)} dates, {start} … {end}")


@app.command(rich_help_panel=SHARING)
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            envvar="ZERODOC_API_FORWARDED_ALLOW_IPS",
            help="Behind a load balancer: its addresses or networks, comma-separated. Only requests from them may"
            " name the client in X-Forwarded-For, which then keys unauthenticated callers' rate limit. Unset: the"
            " header is ignored.",
        ),
    ] = None,
) -> None:
    """Serve the evidence API over the published datasets."""
    from zerodoc.api.cli import serve as api_serve

    api_serve(host=host, port=port, workers=workers, forwarded_allow_ips=forwarded_allow_ips)


@app.command("env", rich_help_panel=OPERATIONS)
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
        table.add_row(
            v, meta["as_of"], f"{meta['row_count']:,}", ", ".join(meta["validation_runs"]), "◀" if v == cur else ""
        )
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
    console.print(
        f"Airflow UI: http://127.0.0.1:{cluster.api_port()}  (users in "
        f"{cluster.cluster_dir(cfg) / 'airflow' / 'passwords.json'})"
    )
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

    app.add_typer(
        consumer_app, name="consumer", help="Create, list, rotate and revoke API consumers.", rich_help_panel=SHARING
    )
    app.add_typer(keys_app, name="keys", help="Evidence signing keys: rotate, list.", rich_help_panel=SHARING)
    evidence_app = typer.Typer(help="Check signed evidence answers.", no_args_is_help=True)
    evidence_app.command("verify")(evidence_verify)
    app.add_typer(evidence_app, name="evidence", rich_help_panel=SHARING)
    audit_app = typer.Typer(help="Check the tamper-evident logs.", no_args_is_help=True)
    audit_app.command("verify")(audit_verify)
    audit_app.command("verify-validation")(validation_verify)
    app.add_typer(audit_app, name="audit", rich_help_panel=OPERATIONS)


_register_optional()


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
