"""Publish a mart as an immutable version and switch "current" to it atomically.

A version is named `<logical date>.<first 12 hex of the content digest>`: the same rows for the same
day are the same version, in whatever order an export wrote them, so a rerun publishes nothing new.
Its metadata also holds the sha256 of the data file's bytes, which readers check before serving it.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from zerodoc.catalog import datasets, entity
from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.fsutil import staged_dir, write_json_atomic
from zerodoc.publish import store
from zerodoc.sources.current import chain
from zerodoc.sources.extract import raw_partition, sha256_file


class GateClosedError(RuntimeError):
    """A `fail` check of an input entity broke its threshold: this dataset must not publish."""


@dataclass(frozen=True)
class PublishResult:
    dataset: str
    version: str
    row_count: int
    switched: bool  # False when the same version was already current
    path: Path


def validation_pointer(qualified: str, logical_date: str, cfg: Settings) -> Path:
    return cfg.reports_dir / "partitions" / f"{qualified}__{logical_date}.json"


def record_validation(qualified: str, logical_date: str, outcome_summary: dict, cfg: Settings) -> Path:
    """Remember which validation run judged this partition (read by the gate and by publishing)."""
    path = validation_pointer(qualified, logical_date, cfg)
    write_json_atomic(path, outcome_summary)
    return path


def input_validations(dataset: str, logical_date: str, cfg: Settings | None = None) -> list[dict]:
    cfg = cfg or load_settings()
    out = []
    for qualified in datasets()[dataset].inputs:
        path = validation_pointer(qualified, logical_date, cfg)
        if not path.exists():
            raise GateClosedError(
                f"{dataset}: input {qualified} has no validation for {logical_date} "
                f"(expected {path}); run the ingest DAG for that date first"
            )
        out.append(json.loads(path.read_text()))
    return out


def check_gate(dataset: str, logical_date: str, cfg: Settings | None = None) -> list[dict]:
    """Raise GateClosedError naming the check, the rows and the report when an input breached its gate."""
    validations = input_validations(dataset, logical_date, cfg)
    closed = [v for v in validations if not v["gate_passed"]]
    if closed:
        msg = "; ".join(f"{v['entity']}: {v['gate_message']}" for v in closed)
        raise GateClosedError(
            f"{dataset} not published for {logical_date}: {msg}. The previous version stays current."
        )
    return validations


def publish_dataset(dataset: str, logical_date: str, cfg: Settings | None = None) -> PublishResult:
    from zerodoc.transform.runner import content_digest, contract_hash, export_mart

    cfg = cfg or load_settings()
    spec = datasets()[dataset]
    validations = check_gate(dataset, logical_date, cfg)
    versions_dir = store.dataset_dir(dataset, cfg) / "versions"
    versions_dir.mkdir(parents=True, exist_ok=True)

    scratch = versions_dir / f".export-{logical_date}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        export_mart(spec.model, scratch / "data.parquet", cfg, as_of=logical_date)
        # The file's sha256 (hashlib, GIL released) is read in a thread while DuckDB reads the rows
        # for the content digest: two passes over a 10M-row file at the cost of one (~1 s each).
        with ThreadPoolExecutor(max_workers=1) as pool:
            file_hash = pool.submit(sha256_file, scratch / "data.parquet")
            digest = content_digest(scratch / "data.parquet")
            checksum = file_hash.result()
        version = f"{logical_date}.{digest[:12]}"
        final = versions_dir / version
        if not final.exists():
            meta_file = pq.ParquetFile(scratch / "data.parquet")
            manifests = []
            for qualified in spec.inputs:
                # An entity delivered as windows is its last full snapshot plus every window since.
                for ds in chain(entity(qualified), logical_date, cfg):
                    mpath = raw_partition(entity(qualified), ds, cfg) / "_manifest.json"
                    m = json.loads(mpath.read_text())
                    manifests.append({"entity": qualified, "logical_date": ds,
                                      "mode": "incremental" if "window" in m else "full",
                                      "path": str(mpath), "rows": m["rows"], "checksum": m["checksum"]})
            metadata = {
                "dataset": dataset,
                "version": version,
                "as_of": logical_date,
                "published_for": logical_date,
                "row_count": meta_file.metadata.num_rows,
                "checksum": checksum,
                "content_digest": digest,
                "contract_hash": contract_hash(spec.model),
                "columns": [[f.name, str(f.physical_type)] for f in meta_file.schema],
                "source_manifests": manifests,
                "validation_runs": [v["run_id"] for v in validations],
            }
            with staged_dir(final) as tmp:
                shutil.move(scratch / "data.parquet", tmp / "data.parquet")
                write_json_atomic(tmp / "metadata.json", metadata)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    try:
        previous = store.current(dataset, cfg).version
    except store.NotPublishedError:
        previous = None
    switched = previous != version
    if switched:
        store.switch_current(dataset, version, reason=f"publish {logical_date}", cfg=cfg)
    apply_retention(dataset, spec.retain_versions, cfg)
    row_count = store.load_version(dataset, version, cfg).metadata["row_count"]
    return PublishResult(dataset, version, row_count, switched, final)


def apply_retention(dataset: str, keep: int, cfg: Settings) -> list[str]:
    """Delete the oldest versions beyond `keep`, never the current one."""
    current = store.current(dataset, cfg).version
    versions = store.list_versions(dataset, cfg)
    removable = [v for v in versions if v != current][: max(0, len(versions) - keep)]
    for v in removable:
        shutil.rmtree(store.dataset_dir(dataset, cfg) / "versions" / v, ignore_errors=True)
    return removable
