import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerodoc.config import settings
from zerodoc.publish import store
from zerodoc.publish.publisher import apply_retention


def _version(cfg, dataset, version, rows=3):
    d = store.dataset_dir(dataset, cfg) / "versions" / version
    d.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(rows))}), d / "data.parquet")
    (d / "metadata.json").write_text(json.dumps({"version": version, "row_count": rows, "as_of": version[:10],
                                                 "validation_runs": []}))


def test_current_before_publish_is_a_clear_error(zerodoc_home):
    with pytest.raises(store.NotPublishedError, match="not been published"):
        store.current("residence_v1")


def test_switch_and_history(zerodoc_home):
    cfg = settings()
    _version(cfg, "income_v1", "2026-11-01.aaa")
    _version(cfg, "income_v1", "2026-11-02.bbb")
    store.switch_current("income_v1", "2026-11-01.aaa", "publish", cfg)
    store.switch_current("income_v1", "2026-11-02.bbb", "publish", cfg)
    assert store.current("income_v1", cfg).version == "2026-11-02.bbb"
    store.switch_current("income_v1", "2026-11-01.aaa", "rollback", cfg)
    assert store.current("income_v1", cfg).version == "2026-11-01.aaa"
    history = [json.loads(line) for line in (store.dataset_dir("income_v1", cfg) / "HISTORY.jsonl").open()]
    assert [h["reason"] for h in history] == ["publish", "publish", "rollback"]
    assert history[-1]["previous"] == "2026-11-02.bbb"


def test_switch_to_missing_version_refused(zerodoc_home):
    cfg = settings()
    with pytest.raises(store.NotPublishedError, match="no version"):
        store.switch_current("income_v1", "nope", "publish", cfg)


def test_retention_keeps_current_and_newest(zerodoc_home):
    cfg = settings()
    for day in range(1, 6):
        _version(cfg, "income_v1", f"2026-11-0{day}.v")
    store.switch_current("income_v1", "2026-11-01.v", "rollback", cfg)
    removed = apply_retention("income_v1", 3, cfg)
    assert removed == ["2026-11-02.v", "2026-11-03.v"]
    assert store.list_versions("income_v1", cfg) == ["2026-11-01.v", "2026-11-04.v", "2026-11-05.v"]
