"""Plain functions behind each Airflow task: testable without Airflow, small XCom-able returns."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import asdict

from zerodoc.config import settings

log = logging.getLogger(__name__)


def worker_name() -> str:
    """Which worker ran a task: the cluster names its Celery workers; elsewhere the host name."""
    return os.environ.get("ZERODOC_WORKER_NAME") or socket.gethostname()


def extract_step(qualified: str, ds: str, mode: str | None = None) -> dict:
    """Extract one entity for `ds`; `mode` None lets the entity's schedule decide (snapshot or window)."""
    from zerodoc import lineage
    from zerodoc.sources.extract import SourceDataError, extract

    try:
        with lineage.extract_run(qualified, ds):
            r = extract(qualified, ds, mode=mode)
    except SourceDataError as exc:
        # The source answered with data that breaks its contract: retrying gets the same answer.
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{qualified} {ds}: {exc}") from exc
    log.info("extracted %s rows of %s for %s from %s -> %s (%s: %s)", r.rows, qualified, ds, r.source, r.path,
             "full snapshot" if r.mode == "full" else "incremental window", r.mode_reason)
    return {"entity": qualified, "ds": ds, "rows": r.rows, "path": str(r.path), "checksum": r.checksum,
            "source": r.source, "mode": r.mode, "mode_reason": r.mode_reason, "worker": worker_name()}


def validate_step(qualified: str, ds: str, raw_path: str) -> dict:
    import json
    from pathlib import Path

    from zerodoc import lineage
    from zerodoc.catalog import entity
    from zerodoc.publish.publisher import record_validation
    from zerodoc.quality.validate import extraction, validate_partition

    cfg = settings()
    ent = entity(qualified)
    with lineage.validate_run(qualified, ds) as run:
        outcome = validate_partition(ent.suite, Path(raw_path), ds, cfg)
        lineage.add_validation_results(
            run, json.loads((outcome.report_path.parent / "summary.json").read_text(encoding="utf-8"))
        )
    summary = {
        "entity": qualified,
        "ds": ds,
        "run_id": outcome.run_id,
        "suite": outcome.suite,
        # A window holds only the rows that changed: its counts are the day's change, not the table.
        "extraction": extraction(Path(raw_path))["mode"],
        "extracted": outcome.extracted,
        "passed": outcome.passed,
        "quarantined": outcome.quarantined,
        "gate_passed": outcome.gate_passed,
        "gate_message": outcome.gate_message,
        "report_path": str(outcome.report_path),
        "data_docs_path": str(outcome.data_docs_path),
        "worker": worker_name(),
    }
    if outcome.extracted != outcome.passed + outcome.quarantined:  # validate_partition asserts it too
        raise RuntimeError(f"row accounting broken for {qualified} {ds}: {summary}")
    record_validation(qualified, ds, summary, cfg)
    from zerodoc.ui.links import report_url

    log.info(
        "%s %s: extracted=%s passed=%s quarantined=%s gate=%s report=%s (auditor section: %s); seconds %s",
        qualified, ds, outcome.extracted, outcome.passed, outcome.quarantined,
        "open" if outcome.gate_passed else "CLOSED", outcome.report_path, report_url(outcome.report_path),
        outcome.timings,
    )
    if not outcome.gate_passed:
        log.warning("gate closed for %s: %s", qualified, outcome.gate_message)
    return summary


def dbt_build_step(ds: str) -> dict:
    from zerodoc import lineage
    from zerodoc.catalog import agencies, datasets
    from zerodoc.transform.runner import DAILY_BUILD_ARGS, run_dbt

    entities = [e.qualified for a in agencies().values() for e in a.entities.values()]
    with lineage.dbt_run(ds, entities, [d.model for d in datasets().values()]):
        result = run_dbt(list(DAILY_BUILD_ARGS), ds=ds)
    nodes = getattr(result, "nodes", [])
    for n in nodes:
        log.info("dbt %s %s %.2fs", getattr(n, "status", "?"), getattr(n, "unique_id", n),
                 getattr(n, "execution_time", 0.0) or 0.0)
    from zerodoc.ui.dbt_docs import generate_quietly

    generate_quietly(ds)  # dbt docs for the auditor section, while this task holds the warehouse
    return {"ds": ds, "nodes": len(nodes)}


def gate_step(dataset: str, ds: str) -> list[str]:
    from zerodoc.publish.publisher import check_gate

    return [v["run_id"] for v in check_gate(dataset, ds)]


def publish_step(dataset: str, ds: str) -> dict:
    from zerodoc import lineage
    from zerodoc.catalog import datasets
    from zerodoc.publish.publisher import publish_dataset

    with lineage.publish_run(dataset, datasets()[dataset].model, ds) as run:
        r = publish_dataset(dataset, ds)
        lineage.add_published_version(run, r.version, r.row_count)
    log.info("%s: version %s (%s rows) %s", dataset, r.version, r.row_count,
             "now current" if r.switched else "already current")
    out = asdict(r)
    out["path"] = str(r.path)
    return out


def notify_step() -> dict:
    from zerodoc.publish.notify import send_new_notifications

    r = send_new_notifications()
    log.info("%s (as of %s): %s candidates, %s written to %s, %s already sent before",
             r.version, r.as_of, r.candidates, r.sent, r.outbox, r.already_sent)
    return {"version": r.version, "as_of": r.as_of, "sent": r.sent, "already_sent": r.already_sent,
            "outbox": str(r.outbox)}


def freshness_step(checked_at: str) -> list[str]:
    """Alert on every shared dataset past its freshness SLA at the run's data_interval_end."""
    from datetime import datetime

    from zerodoc.alerts import check_freshness

    stale = check_freshness(settings(), datetime.fromisoformat(checked_at))
    return [f.dataset for f in stale]
