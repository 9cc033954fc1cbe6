"""The API bench runs end to end at tiny scale: all its metrics, no audit record lost."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)")
def test_api_bench_at_tiny_scale(zerodoc_home, monkeypatch):
    from api_bench import run_api_bench
    from tests.api.support import ALICE, income_table, publish, residence_table
    from zerodoc.config import Settings

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    cfg = Settings(home=zerodoc_home)
    publish(cfg, "residence_v1", "v1", residence_table(cfg.pseudonym_key))
    publish(cfg, "income_v1", "v1", income_table(cfg.pseudonym_key))
    # The bench samples subject IDs from the validated residents of the published date.
    import pyarrow as pa
    import pyarrow.parquet as pq

    residents = cfg.validated_dir / "mois" / "residents" / "ds=2025-06-30" / "part-0.parquet"
    residents.parent.mkdir(parents=True)
    pq.write_table(pa.table({"rrn": [ALICE, "770707-1111111"], "household_id": [10, 11]}), residents)

    metrics = run_api_bench(zerodoc_home, seconds=2, subjects=2)
    by_name = {m["name"]: m for m in metrics}
    assert set(by_name) == {
        "api.evidence_rps",
        "api.evidence_p99_ms",
        "api.baseline_rps",
        "api.evidence_vs_baseline_ratio",
        "api.server_rss_mb",
        "api.server_rss_sum_mb",
        "api.audit_lost",
        "api.evidence_server_cpu_us",
    }
    for m in metrics:
        assert set(m) == {"name", "value", "unit", "baseline", "ratio", "scale", "target", "meets_target"}
    assert by_name["api.evidence_rps"]["value"] > 0 and by_name["api.baseline_rps"]["value"] > 0
    assert by_name["api.audit_lost"]["value"] == 0
    # Target metric is the summed PSS: never more than the summed RSS, which counts shared pages per process.
    assert 0 < by_name["api.server_rss_mb"]["value"] <= by_name["api.server_rss_sum_mb"]["value"]
    assert by_name["api.evidence_server_cpu_us"]["value"] > 0
    json.dumps(metrics)  # plain JSON for bench/results
