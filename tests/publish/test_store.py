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


def test_crash_between_history_and_current_keeps_the_history_line(zerodoc_home, monkeypatch):
    """History is written first: a kill before CURRENT moves leaves one line, and the retry neither
    loses it nor writes it twice; a line torn by a kill mid-append does not break the next one."""
    cfg = settings()
    for v in ("2026-11-01.aaa", "2026-11-02.bbb"):
        d = store.dataset_dir("income_v1", cfg) / "versions" / v
        d.mkdir(parents=True)
        (d / "metadata.json").write_text(json.dumps({"version": v}))
    store.switch_current("income_v1", "2026-11-01.aaa", "publish", cfg)
    hist = store.dataset_dir("income_v1", cfg) / "HISTORY.jsonl"
    with hist.open("a") as fh:
        fh.write('{"version": "torn')  # a previous append killed mid-write

    def killed(*_a, **_k):
        raise KeyboardInterrupt("killed before CURRENT moved")

    monkeypatch.setattr(store, "write_json_atomic", killed)
    try:
        store.switch_current("income_v1", "2026-11-02.bbb", "publish", cfg)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert store.current("income_v1", cfg).version == "2026-11-01.aaa"
    store.switch_current("income_v1", "2026-11-02.bbb", "publish", cfg)  # the retry
    assert store.current("income_v1", cfg).version == "2026-11-02.bbb"
    lines = hist.read_text().splitlines()
    parsed = [json.loads(x) for x in lines if not x.startswith('{"version": "torn')]
    assert [(r["version"], r["previous"]) for r in parsed] == [
        ("2026-11-01.aaa", None), ("2026-11-02.bbb", "2026-11-01.aaa")]
    assert len(lines) == 3  # the torn fragment stays on its own line, untouched
