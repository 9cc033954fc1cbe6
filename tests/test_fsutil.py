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


def test_staged_dir_swaps_in_one_step_and_clears_litter_of_a_killed_writer(tmp_path):
    from zerodoc.fsutil import exchange_paths

    final = tmp_path / "ds=2026-01-01"
    with staged_dir(final) as tmp:
        (tmp / "v").write_text("1")
    litter = tmp_path / ".ds=2026-01-01.abc123.tmp"  # what kill -9 mid-write leaves behind
    litter.mkdir()
    (litter / "half").write_text("half")
    before = final.stat().st_ino
    with staged_dir(final) as tmp:
        (tmp / "v").write_text("2")
    assert (final / "v").read_text() == "2"
    assert final.stat().st_ino != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds=2026-01-01"]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert exchange_paths(a, b)  # this machine's kernel and file system support it
    assert (b / "x").read_text() == "a" and not list(a.iterdir())


def test_copy_atomic_writes_the_query_answers_its_rows_and_sets_the_mode(tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    from zerodoc.fsutil import copy_atomic

    dest = tmp_path / "out" / "it's.parquet"  # a quote in the name travels as SQL text
    with duckdb.connect() as con:
        rows = copy_atomic(con, "select range as n from range(1000)", dest, "format parquet", mode=0o600)
    assert rows == 1000
    assert pq.read_table(dest)["n"].to_pylist() == list(range(1000))
    assert dest.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_copy_atomic_failure_keeps_the_previous_file_and_no_temp(tmp_path):
    import duckdb

    from zerodoc.fsutil import copy_atomic

    dest = tmp_path / "ledger.parquet"
    with duckdb.connect() as con:
        copy_atomic(con, "select 1 as n", dest, "format parquet")
        before = dest.read_bytes()
        with pytest.raises(duckdb.Error):
            copy_atomic(con, "select 1 / 'x'::int as n", dest, "format parquet")
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]
