import json

import pytest

from zerodoc.fsutil import staged_dir, write_json_atomic


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert [p.name for p in target.parent.iterdir()] == ["b.json"]


def test_staged_dir_replaces_whole_directory(tmp_path):
    final = tmp_path / "ds=2026-01-01"
    with staged_dir(final) as tmp:
        (tmp / "old.parquet").write_text("old")
    with staged_dir(final) as tmp:
        (tmp / "new.parquet").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds=2026-01-01"]


def test_staged_dir_failure_keeps_previous_state(tmp_path):
    final = tmp_path / "part"
    with staged_dir(final) as tmp:
        (tmp / "good").write_text("good")
    with pytest.raises(RuntimeError), staged_dir(final) as tmp:
        (tmp / "half").write_text("half")
        raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in final.iterdir()) == ["good"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part"]
