"""Read and write published dataset versions.

Layout under ``$ZERODOC_HOME/published/<dataset>/``::

    versions/<version>/data.parquet     immutable once written
    versions/<version>/metadata.json    version, as_of, row_count, checksum, contract_hash,
                                        source_manifests, validation_runs, published_for
    CURRENT.json                        {"version": ...}; replaced atomically (os.replace)
    HISTORY.jsonl                       one line per switch of CURRENT (publish or rollback)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.fsutil import write_json_atomic


class NotPublishedError(LookupError):
    """The dataset has no current version yet."""


@dataclass(frozen=True)
class PublishedVersion:
    dataset: str
    version: str
    path: Path  # directory holding data.parquet and metadata.json
    metadata: dict[str, Any]

    @property
    def data_path(self) -> Path:
        return self.path / "data.parquet"


def dataset_dir(dataset: str, cfg: Settings | None = None) -> Path:
    cfg = cfg or load_settings()
    return cfg.published_dir / dataset


def current(dataset: str, cfg: Settings | None = None) -> PublishedVersion:
    """The version consumers should read now. One read of one small file: safe during a switch."""
    root = dataset_dir(dataset, cfg)
    pointer = root / "CURRENT.json"
    try:
        version = json.loads(pointer.read_text())["version"]
    except FileNotFoundError as exc:
        raise NotPublishedError(f"dataset {dataset!r} has not been published yet") from exc
    return load_version(dataset, version, cfg)


def load_version(dataset: str, version: str, cfg: Settings | None = None) -> PublishedVersion:
    path = dataset_dir(dataset, cfg) / "versions" / version
    meta = json.loads((path / "metadata.json").read_text())
    return PublishedVersion(dataset=dataset, version=version, path=path, metadata=meta)


def list_versions(dataset: str, cfg: Settings | None = None) -> list[str]:
    vdir = dataset_dir(dataset, cfg) / "versions"
    if not vdir.exists():
        return []
    return sorted(p.name for p in vdir.iterdir() if p.is_dir() and not p.name.startswith("."))


def switch_current(dataset: str, version: str, reason: str, cfg: Settings | None = None) -> None:
    """Point CURRENT at an existing version (publish or rollback), atomically, and log it."""
    root = dataset_dir(dataset, cfg)
    if not (root / "versions" / version / "metadata.json").exists():
        raise NotPublishedError(f"{dataset} has no version {version!r}")
    previous = None
    try:
        previous = json.loads((root / "CURRENT.json").read_text())["version"]
    except FileNotFoundError:
        pass
    record = {"version": version, "previous": previous, "reason": reason}
    # The history line goes first and is fsync'd: a crash between the two writes then leaves a
    # line whose switch the retry completes, never a switch with no line (the retry would see
    # the version already current and not log it). A retry does not log the same switch twice.
    if _last_history(root) != record:
        _append_history(root, record)
    write_json_atomic(root / "CURRENT.json", {"version": version})


def _last_history(root: Path) -> dict | None:
    try:
        lines = (root / "HISTORY.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-append; the next append starts on a new line
    return None


def _append_history(root: Path, record: dict) -> None:
    path = root / "HISTORY.jsonl"
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        prefix = b""
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = b"\n"
        fh.write(prefix + json.dumps(record, ensure_ascii=False).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
