"""The fault suite's reader tells an intact published version from a torn one."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerodoc.orchestration.faults import read_current


def _publish(root, rows: int) -> tuple[str, bytes]:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": list(range(rows))}), sink)
    data = sink.getvalue().to_pybytes()
    checksum = hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256(f"rows {rows}".encode()).hexdigest()  # stands in for content_digest
    version = f"2026-11-20.{digest[:12]}"
    vdir = root / "versions" / version
    vdir.mkdir(parents=True)
    (vdir / "data.parquet").write_bytes(data)
    (vdir / "metadata.json").write_text(json.dumps(
        {"version": version, "checksum": checksum, "content_digest": digest, "row_count": rows}))
    (root / "CURRENT.json").write_text(json.dumps({"version": version}))
    return version, data


def test_an_intact_version_reads(tmp_path):
    version, _ = _publish(tmp_path, 50)
    meta = json.loads((tmp_path / "versions" / version / "metadata.json").read_text())
    assert read_current(tmp_path) == (version, meta["content_digest"])


@pytest.mark.parametrize(
    "tear", ["half_data", "pointer_half_written", "version_missing", "metadata_of_another", "data_of_another"])
def test_torn_states_are_caught(tmp_path, tear):
    version, data = _publish(tmp_path, 50)
    vdir = tmp_path / "versions" / version
    if tear == "half_data":
        (vdir / "data.parquet").write_bytes(data[: len(data) // 2])
    elif tear == "pointer_half_written":
        (tmp_path / "CURRENT.json").write_text('{"version": "2026-11')
    elif tear == "version_missing":
        (tmp_path / "CURRENT.json").write_text(json.dumps({"version": "2026-11-21.000000000000"}))
    elif tear == "metadata_of_another":
        meta = json.loads((vdir / "metadata.json").read_text())
        (vdir / "metadata.json").write_text(json.dumps({**meta, "row_count": 49}))
    else:  # whole, readable Parquet, but not the bytes the metadata describes
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"x": list(range(1, 51))}), sink)
        (vdir / "data.parquet").write_bytes(sink.getvalue().to_pybytes())
    with pytest.raises((ValueError, OSError)):
        read_current(tmp_path)
