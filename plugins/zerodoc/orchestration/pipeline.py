"""`zerodoc run`: generate if needed, run every DAG through Airflow, reconcile and summarise."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from zerodoc.catalog import agencies, datasets
from zerodoc.config import Settings
from zerodoc.orchestration.local import DagOutcome, ensure_metadata_db, run_dag


@dataclass
class PipelineSummary:
    ds: str
    expected: dict
    dag_runs: list[DagOutcome] = field(default_factory=list)
    entities: dict[str, dict] = field(default_factory=dict)
    published: dict[str, dict] = field(default_factory=dict)
    demo_request: str | None = None
    log_path: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _need_generate(cfg: Settings, persons: int, seed: int) -> bool:
    path = cfg.sources_dir / "_expected.json"
    if not path.exists():
        return True
    exp = json.loads(path.read_text())
    return exp.get("persons") != persons or exp.get("seed") != seed


def run_pipeline(cfg: Settings, persons: int, seed: int, ds: str, console: Console) -> PipelineSummary:
    from zerodoc.sources import generate as gen
    from zerodoc.sources.servers import load_servers

    if _need_generate(cfg, persons, seed):
        with console.status(f"generating {persons:,} persons (seed {seed})…"):
            expected = gen.generate(persons, seed, cfg.sources_dir)
            gen.write_expected(expected, cfg)
        counts = load_servers(agencies(), cfg)
        for q, n in counts.items():
            console.print(f"loaded {n:,} rows into the {q} server table")
    expected = json.loads((cfg.sources_dir / "_expected.json").read_text())
    summary = PipelineSummary(ds=ds, expected=expected)

    console.print("preparing Airflow metadata DB (first run only)…")
    ensure_metadata_db(cfg)
    summary.log_path = cfg.home / "logs" / f"run-{ds}.log"
    console.print(f"Airflow task logs → {summary.log_path}")
    dags = [*((f"ingest_{c}", None) for c in agencies()), ("publish_shared", {"ds": ds}), ("notify_benefits", None)]
    for dag_id, conf in dags:
        console.print(f"running DAG {dag_id} for {ds}…")
        outcome = run_dag(dag_id, ds, run_conf=conf, log_path=summary.log_path)
        console.print(f"  {dag_id}: {outcome.state} in {outcome.seconds:.1f}s")
        summary.dag_runs.append(outcome)
    for r in summary.dag_runs:
        if r.state != "success":
            summary.problems.append(f"DAG {r.dag_id} ended {r.state}; failed tasks: {', '.join(r.failed_tasks)}")

    _collect(summary, cfg)
    return summary


def _collect(summary: PipelineSummary, cfg: Settings) -> None:
    from zerodoc.publish import store
    from zerodoc.publish.publisher import validation_pointer

    for agency in agencies().values():
        for ent in agency.entities.values():
            q = ent.qualified
            path = validation_pointer(q, summary.ds, cfg)
            if not path.exists():
                summary.problems.append(f"{q}: no validation recorded for {summary.ds}")
                continue
            v = json.loads(path.read_text())
            summary.entities[q] = v
            if v["extracted"] != v["passed"] + v["quarantined"]:
                summary.problems.append(f"{q}: extracted != passed + quarantined")
            exp = summary.expected.get(q)
            # The defect plan describes the whole source: only a full snapshot can be held to it.
            snapshot = v.get("extraction", "full") == "full"
            if exp and snapshot and (exp["extracted"], exp["quarantined"]) != (v["extracted"], v["quarantined"]):
                summary.problems.append(
                    f"{q}: counts differ from the generator's defect plan "
                    f"(expected {exp['extracted']}/{exp['quarantined']}, got {v['extracted']}/{v['quarantined']})"
                )
    for name in datasets():
        try:
            pv = store.current(name, cfg)
        except store.NotPublishedError:
            summary.problems.append(f"{name}: not published")
            continue
        summary.published[name] = {"version": pv.version, "rows": pv.metadata["row_count"],
                                   "as_of": pv.metadata["as_of"], "path": str(pv.data_path)}
    if "residence_v1" in summary.published:
        summary.demo_request = _demo_request(summary.ds, cfg)


def _demo_request(ds: str, cfg: Settings) -> str | None:
    """A ready-to-paste request for a real subject: a fresh demo consumer key and a recorded consent."""
    import datetime as dt

    import duckdb

    from zerodoc.api.consent import ConsentRegistry
    from zerodoc.api.consumers import add_consumer, list_consumers, rotate_consumer
    from zerodoc.catalog import entity
    from zerodoc.fsutil import write_json_atomic
    from zerodoc.privacy import duckdb_macro_sql
    from zerodoc.publish import store
    from zerodoc.sources.current import chain

    consumer, purpose = "welfare-portal", "basic_livelihood_application"
    # The last full snapshot of residents (on a window day, `ds` holds only who changed).
    snapshot = chain(entity("mois.residents"), ds, cfg)[0]
    residents = cfg.validated_dir / "mois" / "residents" / f"ds={snapshot}" / "part-0.parquet"
    published = store.current("residence_v1", cfg).data_path
    key = entity("mois.residents").key
    con = duckdb.connect()
    con.execute(duckdb_macro_sql(cfg.pseudonym_key))

    def first_published(candidates: str) -> tuple | None:
        return con.execute(
            f"""select r.rrn, p.subject_pseudonym from ({candidates}) r
                join read_parquet('{published}') p on p.subject_pseudonym = zd_pseudonym(r.rrn)
                order by r.{key} limit 1"""
        ).fetchone()

    # The first resident (by key) with a published row. Trying the first thousand residents first
    # spares pseudonymising the whole nation (10M persons: 0.9 s instead of 2.0-5.0 s for the full join);
    # the full join answers only when none of them is published.
    row = first_published(f"select rrn, {key} from read_parquet('{residents}') order by {key} limit 1000")
    if row is None:
        row = first_published(f"select rrn, {key} from read_parquet('{residents}')")
    if row is None:
        return None
    rrn, pseudonym = row
    active = {c.name for c in list_consumers(cfg) if c.active}
    key = rotate_consumer(consumer, cfg) if consumer in active else add_consumer(consumer, cfg)
    now = dt.datetime.now(dt.UTC)
    consent = ConsentRegistry(cfg).record(
        subject_pseudonym=pseudonym, consumer=consumer, purpose=purpose,
        datasets=["residence_v1", "income_v1"], valid_from=now - dt.timedelta(minutes=5),
        valid_to=now + dt.timedelta(days=30), recorded_by="zerodoc run (demo)",
    )
    demo_file = cfg.state_dir / "demo-request.json"
    write_json_atomic(demo_file, {"consumer": consumer, "key": key, "consent_id": consent.consent_id,
                                  "purpose": purpose})
    demo_file.chmod(0o600)
    body = json.dumps({"evidence_type": "residence", "subject_id": rrn, "purpose": purpose,
                       "consent_id": consent.consent_id}, ensure_ascii=False)
    return (
        "curl -s -X POST http://127.0.0.1:8000/v1/evidence "
        f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


def print_summary(summary: PipelineSummary, cfg: Settings, console: Console) -> None:
    runs = Table(title=f"Airflow DAG runs for {summary.ds}", title_justify="left")
    for col in ("dag", "state", "seconds"):
        runs.add_column(col)
    for r in summary.dag_runs:
        runs.add_row(r.dag_id, r.state, f"{r.seconds:.1f}")
    console.print(runs)

    ent = Table(title="Rows per entity (extracted = passed + quarantined)", title_justify="left")
    for col in ("entity", "extraction", "extracted", "passed", "quarantined", "reconciles", "gate", "validation run"):
        ent.add_column(col)
    for q, v in summary.entities.items():
        exp = summary.expected.get(q, {})
        snapshot = v.get("extraction", "full") == "full"
        ok = v["extracted"] == v["passed"] + v["quarantined"] and (
            not snapshot or exp.get("quarantined") == v["quarantined"])
        ent.add_row(q, "snapshot" if snapshot else "window", f"{v['extracted']:,}", f"{v['passed']:,}",
                    f"{v['quarantined']:,}", "yes" if ok else "NO", "open" if v["gate_passed"] else "CLOSED",
                    v["run_id"])
    console.print(ent)

    pub = Table(title="Published datasets (CURRENT)", title_justify="left")
    for col in ("dataset", "version", "rows", "file"):
        pub.add_column(col)
    for name, p in summary.published.items():
        pub.add_row(name, p["version"], f"{p['rows']:,}", str(Path(p["path"]).relative_to(cfg.home)))
    console.print(pub)

    console.print(f"Validation reports: {cfg.reports_dir / 'index.html'}")
    console.print(f"Data root: {cfg.home}")
    if summary.demo_request:
        console.print("\nTry the evidence API: start it with `make serve` (or `zerodoc serve`), then:")
        console.print(summary.demo_request, soft_wrap=True, highlight=False, markup=False)
        console.print("JWKS: curl -s http://127.0.0.1:8000/.well-known/jwks.json")
    for p in summary.problems:
        console.print(f"[red]problem:[/red] {p}")
    console.print("[green]pipeline OK[/green]" if summary.ok else "[red]pipeline FAILED[/red]")
