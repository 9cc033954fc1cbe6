"""The shared index cache: one file per version for all workers, checked before it is served."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from datetime import date

import pyarrow as pa
import pytest

from zerodoc.api.index import cache_path, load_snapshot
from zerodoc.config import REPO_ROOT
from zerodoc.publish import store

from .support import publish

DATASET = "residence_v1"
ROWS = 300
MARKER = 987_654_321_012  # one distinctive int64 in the file, to corrupt a served value in place


def _pseudonym(i: int) -> str:
    return hashlib.sha256(f"subject-{i}".encode()).hexdigest()


def _table() -> pa.Table:
    """Every column kind the getters read in place, with nulls, in unsorted key order."""
    idx = list(reversed(range(ROWS)))
    return pa.table(
        {
            "subject_pseudonym": [_pseudonym(i) for i in idx],
            "household_id": pa.array([MARKER if i == 7 else (None if i % 11 == 0 else i * 3) for i in idx], pa.int64()),
            "household_size": pa.array([i % 5 for i in idx], pa.int32()),
            "is_household_head": pa.array([None if i % 13 == 0 else i % 2 == 0 for i in idx], pa.bool_()),
            "ratio": pa.array([i / 8 for i in idx], pa.float64()),
            "sigungu_name": [None if i % 7 == 0 else f"구-{i % 9}" for i in idx],
            "moved_in_on": [date(2020, 1, 1 + i % 28) for i in idx],
        }
    )


COLUMNS = ("household_id", "household_size", "is_household_head", "ratio", "sigungu_name", "moved_in_on")


def _expected(i: int) -> dict:
    return {
        "household_id": MARKER if i == 7 else (None if i % 11 == 0 else i * 3),
        "household_size": i % 5,
        "is_household_head": None if i % 13 == 0 else i % 2 == 0,
        "ratio": i / 8,
        "sigungu_name": None if i % 7 == 0 else f"구-{i % 9}",
        "moved_in_on": date(2020, 1, 1 + i % 28).isoformat(),
    }


LOADER = """
import json, sys
from pathlib import Path
from zerodoc.api.index import load_snapshot
from zerodoc.config import Settings
from zerodoc.publish import store

cfg = Settings(home=Path(sys.argv[1]))
snap = load_snapshot(store.current(sys.argv[2], cfg), tuple(json.loads(sys.argv[3])), cfg=cfg)
pseudonyms = json.loads(sys.argv[4])
maps = [line.split() for line in open("/proc/self/maps") if line.rstrip().endswith(".arrow")]
print(json.dumps({
    "rows": [snap.lookup(p) for p in pseudonyms],
    "mapped": sorted({(m[4], m[5]) for m in maps}),  # (inode, path) of the mapped cache files
}))
"""


def test_two_processes_map_one_cache_file_and_answer_identically(cfg):
    publish(cfg, DATASET, "v1", _table())
    pseudonyms = [_pseudonym(i) for i in range(ROWS)] + ["00" * 32, "not-hex"]
    args = [str(cfg.home), DATASET, json.dumps(COLUMNS), json.dumps(pseudonyms)]
    procs = [
        subprocess.Popen([sys.executable, "-c", LOADER, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]

    path = cache_path(store.current(DATASET, cfg), COLUMNS, cfg)
    assert sorted(p.name for p in path.parent.glob("*.arrow")) == [path.name]
    inode = str(path.stat().st_ino)
    # Both map the very file on disk (a second build would have renamed a new inode into place).
    assert outs[0]["mapped"] == outs[1]["mapped"] == [[inode, str(path)]]
    expected = [_expected(i) for i in range(ROWS)] + [None, None]
    assert outs[0]["rows"] == outs[1]["rows"] == expected
    # And the mapped snapshot answers as one built in memory does.
    in_memory = load_snapshot(store.current(DATASET, cfg), COLUMNS)
    assert [in_memory.lookup(p) for p in pseudonyms] == expected


def _flip_marker(path):
    data = bytearray(path.read_bytes())
    at = data.index(MARKER.to_bytes(8, "little"))
    data[at : at + 8] = (123).to_bytes(8, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "bytes, "),  # truncated: size differs
        (_flip_marker, "SHA-256 differs from the one written"),  # same size, one value changed
        (lambda p: p.with_name(p.name + ".json").unlink(), "unreadable: "),  # written, never confirmed
        (lambda p: p.write_bytes(b"\0" * p.stat().st_size), "no Arrow file magic at both ends"),
    ],
    ids=["truncated", "value-changed", "no-sidecar", "zeroed"],
)
def test_a_corrupt_cache_file_is_rebuilt_never_served(cfg, caplog, corrupt, reason):
    publish(cfg, DATASET, "v1", _table())
    version = store.current(DATASET, cfg)
    load_snapshot(version, COLUMNS, cfg=cfg)
    path = cache_path(version, COLUMNS, cfg)
    good = path.read_bytes()
    corrupt(path)
    leftover = path.with_name(f".{path.name}.999999.tmp")  # from a builder killed mid-write
    leftover.write_bytes(b"partial")

    with caplog.at_level(logging.WARNING, logger="zerodoc.api.index"):
        snap = load_snapshot(version, COLUMNS, cfg=cfg)
    warnings = [r.getMessage() for r in caplog.records if "failed its check" in r.getMessage()]
    assert len(warnings) == 1 and reason in warnings[0] and "removing it to rebuild" in warnings[0], warnings
    assert snap.lookup(_pseudonym(7)) == _expected(7)  # the marker value, not the corrupted 123
    assert [snap.lookup(_pseudonym(i)) for i in range(ROWS)] == [_expected(i) for i in range(ROWS)]
    assert path.read_bytes() == good  # rebuilt byte for byte
    assert not leftover.exists()
    assert json.loads(path.with_name(path.name + ".json").read_text())["sha256"] == hashlib.sha256(good).hexdigest()


def test_cache_of_a_version_no_longer_retained_is_removed(cfg):
    publish(cfg, DATASET, "v1", _table())
    v1 = store.current(DATASET, cfg)
    load_snapshot(v1, COLUMNS, cfg=cfg)
    old = cache_path(v1, COLUMNS, cfg)
    assert old.exists()

    publish(cfg, DATASET, "v2", _table().slice(0, 10))
    (cfg.published_dir / DATASET / "versions" / "v1" / "metadata.json").unlink()
    for f in (cfg.published_dir / DATASET / "versions" / "v1").iterdir():
        f.unlink()
    (cfg.published_dir / DATASET / "versions" / "v1").rmdir()  # retention pruned v1
    snap = load_snapshot(store.current(DATASET, cfg), COLUMNS, cfg=cfg)

    assert len(snap.keys) == 10
    assert not old.parent.exists()
    assert sorted(p.name for p in old.parent.parent.iterdir()) == ["v2"]


def test_another_grant_set_gets_its_own_file(cfg):
    publish(cfg, DATASET, "v1", _table())
    version = store.current(DATASET, cfg)
    narrow = load_snapshot(version, ("household_size",), cfg=cfg)
    wide = load_snapshot(version, COLUMNS, cfg=cfg)

    assert cache_path(version, ("household_size",), cfg) != cache_path(version, COLUMNS, cfg)
    assert len(list(cache_path(version, COLUMNS, cfg).parent.glob("*.arrow"))) == 2
    assert narrow.lookup(_pseudonym(3)) == {"household_size": 3}
    assert wide.lookup(_pseudonym(3)) == _expected(3)
