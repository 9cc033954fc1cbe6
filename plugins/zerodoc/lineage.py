"""OpenLineage run events (START, then COMPLETE or FAIL) for extract, validate, dbt and publish.

Datasets live in namespace ``zerodoc`` and are named ``<zone>.<agency>.<entity>`` for entity
zones (``raw.mois.residents``, ``validated.…``, ``quarantine.…``) and ``<zone>.<dataset>`` for
shared ones (``marts.residence_v1``, ``published.residence_v1``). Validation results travel as
the ``dataQualityAssertions`` and ``dataQualityMetrics`` input facets of the raw dataset.

Transport: every event is appended as one JSON line to ``$ZERODOC_HOME/lineage/events.jsonl``
(works offline, nothing to run). When ``OPENLINEAGE_URL`` (or ``OPENLINEAGE_CONFIG``) is set,
the event is also sent through the OpenLineage client's own transport, e.g. to Marquez; see
docs/operators.md. Lineage never fails a task: a transport error is logged and dropped.
Set ``ZERODOC_LINEAGE=off`` to emit nothing.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
)
from openlineage.client.serde import Serde

from zerodoc.config import Settings
from zerodoc.config import settings as load_settings

log = logging.getLogger(__name__)

NAMESPACE = "zerodoc"
PRODUCER = "https://github.com/zerodoc/zerodoc/tree/main/plugins/zerodoc/lineage.py"
_RUN_NAMESPACE = uuid.UUID("6f1c0f0e-5a51-4d7e-9f51-7a2b0c0d0e01")


def events_path(cfg: Settings) -> Path:
    return cfg.home / "lineage" / "events.jsonl"


def dataset(zone: str, name: str) -> str:
    return f"{zone}.{name}"


@dataclass
class LineageRun:
    """One job run; inputs/outputs may be enriched (facets, more datasets) before it completes."""

    job: str
    ds: str
    run_id: str
    inputs: list[InputDataset] = field(default_factory=list)
    outputs: list[OutputDataset] = field(default_factory=list)

    def event(self, state: RunState, error: BaseException | None = None) -> RunEvent:
        facets: dict[str, Any] = {
            "nominalTime": nominal_time_run.NominalTimeRunFacet(nominalStartTime=f"{self.ds}T00:00:00Z"),
        }
        if error is not None:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{type(error).__name__}: {error}"[:2000], programmingLanguage="python"
            )
        return RunEvent(
            eventType=state,
            eventTime=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            run=Run(runId=self.run_id, facets=facets),
            job=Job(
                namespace=NAMESPACE,
                name=self.job,
                facets={"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="ZERODOC",
                                                                jobType="TASK")},
            ),
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            producer=PRODUCER,
        )


def run_id_for(job: str, ds: str, attempt: str = "") -> str:
    """A stable UUID per job, logical date and attempt (OpenLineage wants a UUID; reruns are new attempts)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{job}|{ds}|{attempt}"))


def emit(event: RunEvent, cfg: Settings | None = None) -> None:
    if os.environ.get("ZERODOC_LINEAGE", "").lower() == "off":
        return
    cfg = cfg or load_settings()
    line = Serde.to_json(event) + "\n"
    path = events_path(cfg)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # several workers append to one file
            fh.write(line)
    except OSError as exc:
        log.warning("lineage event not written to %s: %s", path, exc)
    if os.environ.get("OPENLINEAGE_URL") or os.environ.get("OPENLINEAGE_CONFIG"):
        try:
            from openlineage.client import OpenLineageClient

            OpenLineageClient().emit(event)
        except Exception as exc:  # noqa: BLE001 - a lineage backend outage must not fail a pipeline task
            log.warning("lineage event not sent to the OpenLineage backend: %s", exc)


@contextmanager
def tracked(
    job: str,
    ds: str,
    inputs: Sequence[InputDataset] = (),
    outputs: Sequence[OutputDataset] = (),
    attempt: str = "",
    cfg: Settings | None = None,
) -> Iterator[LineageRun]:
    """Emit START, run the body, then COMPLETE (with whatever the body added) or FAIL."""
    run = LineageRun(job, ds, run_id_for(job, ds, attempt), list(inputs), list(outputs))
    emit(run.event(RunState.START), cfg)
    try:
        yield run
    except BaseException as exc:
        emit(run.event(RunState.FAIL, error=exc), cfg)
        raise
    emit(run.event(RunState.COMPLETE), cfg)


# ---- the four steps ------------------------------------------------------------------------------


def extract_run(qualified: str, ds: str, source: str = "agency", attempt: str = "") -> Any:
    agency = qualified.split(".")[0]
    return tracked(
        f"extract.{qualified}", ds,
        inputs=[InputDataset(namespace=NAMESPACE, name=dataset(f"source.{agency}", qualified.split(".", 1)[1]))],
        outputs=[OutputDataset(namespace=NAMESPACE, name=dataset("raw", qualified))],
        attempt=attempt,
    )


def validate_run(qualified: str, ds: str, attempt: str = "") -> Any:
    return tracked(
        f"validate.{qualified}", ds,
        inputs=[InputDataset(namespace=NAMESPACE, name=dataset("raw", qualified))],
        outputs=[OutputDataset(namespace=NAMESPACE, name=dataset("validated", qualified)),
                 OutputDataset(namespace=NAMESPACE, name=dataset("quarantine", qualified))],
        attempt=attempt,
    )


def add_validation_results(run: LineageRun, summary: dict[str, Any]) -> None:
    """Attach a validation summary (``summary.json``) to a validate run's datasets."""
    checks = summary.get("checks", [])
    assertions = [
        data_quality_assertions_dataset.Assertion(
            assertion=c["id"], success=int(c["unexpected_count"]) == 0, severity=c.get("severity"),
            description=c.get("description"), actual=str(c["unexpected_count"]), expected="0",
            name=c.get("type"),
        )
        for c in checks
    ]
    raw = run.inputs[0]
    raw.inputFacets = {
        "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=assertions),
        "dataQualityMetrics": data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
            rowCount=int(summary["extracted"]), columnMetrics={}),
    }
    counts = {"validated": int(summary["passed"]), "quarantine": int(summary["quarantined"])}
    for out in run.outputs:
        zone = out.name.split(".", 1)[0]
        if zone in counts:
            out.outputFacets = {
                "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=counts[zone])
            }


def dbt_run(ds: str, entities: Sequence[str], models: Sequence[str], attempt: str = "") -> Any:
    return tracked(
        "dbt.build", ds,
        inputs=[InputDataset(namespace=NAMESPACE, name=dataset("validated", q)) for q in entities],
        outputs=[OutputDataset(namespace=NAMESPACE, name=dataset("marts", m)) for m in models],
        attempt=attempt,
    )


def publish_run(dataset_name: str, model: str, ds: str, attempt: str = "") -> Any:
    return tracked(
        f"publish.{dataset_name}", ds,
        inputs=[InputDataset(namespace=NAMESPACE, name=dataset("marts", model))],
        outputs=[OutputDataset(namespace=NAMESPACE, name=dataset("published", dataset_name))],
        attempt=attempt,
    )


def add_published_version(run: LineageRun, version: str, row_count: int) -> None:
    out = run.outputs[0]
    out.facets = {"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)}
    out.outputFacets = {
        "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=row_count)
    }


def read_events(cfg: Settings) -> list[dict[str, Any]]:
    path = events_path(cfg)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
