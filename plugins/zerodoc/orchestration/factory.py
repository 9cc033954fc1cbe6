"""DAG factories: one ingest DAG per agency from config/sources.yml, and the publish DAG."""

from __future__ import annotations

import datetime as dt
import logging
import os
import textwrap

from airflow.sdk import DAG, Param, get_current_context, task

from zerodoc.alerts import on_failure_callback
from zerodoc.catalog import Agency, datasets
from zerodoc.orchestration import steps
from zerodoc.orchestration.assets import published_asset, validated_asset

log = logging.getLogger(__name__)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEFAULT_ARGS = {
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    # A multiplier since Airflow 3.x: True is 1.0, i.e. a constant delay. 2.0: 30 s, then 60 s.
    "retry_exponential_backoff": 2.0,
    "on_failure_callback": on_failure_callback,
}


def _incremental(agency: Agency) -> list[str]:
    return [e.name for e in agency.entities.values() if e.mode == "incremental"]


def _ingest_params(agency: Agency) -> dict:
    if not _incremental(agency):
        return {}
    return {"full_snapshot": Param(
        False, type="boolean",
        description="Take a full snapshot of the incremental entities instead of the day's window (after "
                    "a physical delete or a correction stamped further back than the lookback)")}


def _extraction_doc(agency: Agency) -> str:
    names = _incremental(agency)
    if not names:
        return "**Extraction:** a full snapshot every run."
    days = ", ".join(sorted({(agency.entities[n].snapshot_weekday or "").capitalize() for n in names}))
    others = "; the others a full snapshot every run" if len(names) < len(agency.entities) else ""
    return (f"**Extraction:** {', '.join(f'`{n}`' for n in names)} take a window of the rows changed since the "
            f"previous run, and a full snapshot on their first run and every {days}{others}. Trigger with "
            "`full_snapshot: true` to take a snapshot now.")


def build_ingest_dag(agency: Agency) -> DAG:
    doc = textwrap.dedent(f"""\
        ### Ingest: {agency.name} (`{agency.code}`)
        Extracts {", ".join(f"`{e}`" for e in agency.entities)} for the logical date into the raw zone
        (Parquet + manifest), validates each with its Great Expectations suite, splits rows into
        validated and quarantine (every rejected row kept with all its reasons) and emits the
        `validated.*` assets the publish DAG waits for.

        **Owner:** {agency.owner} · **Source:** `{agency.kind}` via connection `{agency.conn_id}`
        (unset → file stand-in under `$ZERODOC_HOME/sources`).

        **Triage:** an extract failure means the agency system is unreachable (task retries with
        backoff). A closed quality gate does not fail this DAG: it blocks publishing of the datasets
        fed by the entity; open the run report linked in the validate task's log.

        {_extraction_doc(agency)}
        """)
    with DAG(
        dag_id=f"ingest_{agency.code}",
        schedule="@daily",
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "owner": agency.owner},
        tags=[f"agency:{agency.code}", f"sensitivity:{agency.sensitivity}", "tier:ingest"],
        params=_ingest_params(agency),
        doc_md=doc,
    ) as dag:
        for ent in agency.entities.values():
            qualified = ent.qualified

            @task(task_id=f"extract_{ent.name}")
            def extract(qualified: str = qualified) -> dict:
                context = get_current_context()
                full = bool(context["params"].get("full_snapshot"))
                return steps.extract_step(qualified, context["ds"], mode="full" if full else None)

            @task(task_id=f"validate_{ent.name}", outlets=[validated_asset(qualified)])
            def validate(extracted: dict, qualified: str = qualified) -> dict:
                context = get_current_context()
                summary = steps.validate_step(qualified, extracted["ds"], extracted["path"])
                context["outlet_events"][validated_asset(qualified)].extra = {
                    "ds": summary["ds"], "run_id": summary["run_id"], "gate_passed": summary["gate_passed"],
                }
                return summary

            validate(extract())
    return dag


def build_publish_dag() -> DAG:
    specs = datasets()
    inputs = sorted({q for d in specs.values() for q in d.inputs})
    manifest = _watcher_manifest()
    doc = textwrap.dedent(f"""\
        ### Publish shared datasets
        Runs when every validated input has a new partition: builds the dbt project (staging →
        intermediate → marts, contracts and tests enforced) for that logical date, then publishes
        each shared dataset ({", ".join(f"`{d}`" for d in specs)}) as an immutable version and
        switches its `CURRENT` pointer atomically.

        **Owner:** zerodoc-platform · **Writes:** the DuckDB warehouse (one run at a time).

        **Triage:** a `gate_*` failure names the failing check, the rows and the validation report;
        the dataset keeps its previous version. {_dbt_triage(manifest)}
        """)
    with DAG(
        dag_id="publish_shared",
        schedule=[validated_asset(q) for q in inputs],
        start_date=START,
        catchup=False,
        max_active_runs=1,  # the DuckDB warehouse has one writer at a time
        default_args={**DEFAULT_ARGS, "owner": "zerodoc-platform"},
        tags=["tier:shared", "sensitivity:pseudonymised"],
        params={"ds": Param(None, type=["null", "string"], description="Logical date to publish (YYYY-MM-DD)")},
        doc_md=doc,
    ) as dag:

        @task
        def resolve_ds() -> str:
            """The partition date: from the run conf, else the triggering validated assets."""
            context = get_current_context()
            if context["params"].get("ds"):
                return context["params"]["ds"]
            dates = {
                ev.extra.get("ds")
                for events in context["triggering_asset_events"].values()
                for ev in events
            } - {None}
            if len(dates) != 1:
                raise ValueError(f"cannot tell which logical date to publish from asset events: {dates}")
            return dates.pop()

        for_date = resolve_ds()
        built = _dbt_tasks(for_date, [d.model for d in specs.values()], manifest)
        for name, spec in specs.items():

            @task(task_id=f"gate_{name}")
            def gate(for_date: str, name: str = name) -> list[str]:
                return steps.gate_step(name, for_date)

            @task(task_id=f"publish_{name}", outlets=[published_asset(name)])
            def publish(for_date: str, name: str = name) -> dict:
                return steps.publish_step(name, for_date)

            g = gate(for_date)
            p = publish(for_date)
            [g, *built[spec.model]] >> p

        @task
        def check_freshness(for_date: str) -> list[str]:
            """Stale datasets (past their freshness_hours) alert through zerodoc.alerts."""
            context = get_current_context()
            # Asset-triggered runs have no data interval; run_after is always set.
            checked_at = context.get("data_interval_end") or context["dag_run"].run_after
            return steps.freshness_step(checked_at.isoformat())

        # A leaf of its own, not downstream of the publish tasks: an "all_done" task after them
        # would become the only leaf and turn a closed gate into a successful run.
        check_freshness(for_date)
    return dag


def _dbt_triage(manifest) -> str:
    if manifest is None:
        return "A `dbt_build` failure names the failing models/tests."
    return (
        "dbt runs once, in `dbt.dbt_producer_watcher`; each model has a `dbt.<model>.run` and a "
        "`dbt.<model>.test` task that ends as that model ended: a failed one is the model that broke "
        "(its dependents show upstream_failed), and only the datasets built from it keep their "
        "previous version."
    )


def _watcher_manifest():
    """The manifest for per-model tasks, or None: single-task mode, or no manifest yet (logged)."""
    from zerodoc.transform.cosmos_task_group import dbt_tasks_mode, manifest_path

    if dbt_tasks_mode() != "watcher":
        return None
    path = manifest_path()
    if not path.exists():
        log.warning(
            "ZERODOC_DBT_TASKS=watcher but %s is missing: publish_shared falls back to one dbt_build task. "
            "`zerodoc run` and `zerodoc cluster up` write it (zerodoc.transform.cosmos_task_group.ensure_manifest).",
            path,
        )
        return None
    return path


def _dbt_tasks(for_date, models: list[str], manifest) -> dict[str, list]:
    """The dbt build after `for_date`; per shared model, the tasks that must succeed before it publishes.

    Watcher mode: a Cosmos task group, one task per model and per model's tests, the build run
    once by its producer, plus `warehouse_released`, which ends when the producer does, whatever
    its state: publishing reads the warehouse only after the writer let go of it. Single mode (or
    no manifest): the one `dbt_build` task.
    """
    if manifest is None:

        @task(pool="warehouse_writer", pool_slots=1)
        def dbt_build(for_date: str) -> dict:
            return steps.dbt_build_step(for_date)

        built = dbt_build(for_date)
        return {m: [built] for m in models}

    from airflow.providers.standard.operators.empty import EmptyOperator

    from zerodoc.transform.cosmos_task_group import dbt_task_group, model_task_ids

    group = dbt_task_group(
        "dbt",
        manifest=manifest,
        ds_template="{{ ti.xcom_pull(task_ids='resolve_ds') }}",
        # Live consumers need a scheduler and a triggerer; dag.test() (the embedded run) has neither.
        live=os.environ.get("ZERODOC_DEPLOYMENT") == "cluster",
    )
    for_date >> group
    warehouse_released = EmptyOperator(task_id="warehouse_released", trigger_rule="all_done")
    group.children["dbt.dbt_producer_watcher"] >> warehouse_released
    return {m: [warehouse_released, *(group.dag.task_dict[t] for t in model_task_ids(group, m))] for m in models}


def build_notify_dag() -> DAG:
    doc = textwrap.dedent("""\
        ### Proactive benefit notifications
        Runs whenever `benefit_notifications_v1` is published: writes the notifications it would send
        (recipient pseudonym, programme, rule, reason) to `state/notifications/outbox/<as_of>.jsonl`,
        each notification id once ever (ledger `state/notifications/ledger/<as_of>.parquet`). Rerunning sends nothing
        new.

        **Owner:** zerodoc-platform · **Triage:** a failure leaves the ledger untouched; rerun the task.
        """)
    with DAG(
        dag_id="notify_benefits",
        schedule=[published_asset("benefit_notifications_v1")],
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "owner": "zerodoc-platform"},
        tags=["tier:notification", "sensitivity:pseudonymised"],
        doc_md=doc,
    ) as dag:

        @task
        def send_notifications() -> dict:
            return steps.notify_step()

        send_notifications()
    return dag
