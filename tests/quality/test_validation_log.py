"""The hash-chained validation log: every run appends, and any edit, removal or reordering is caught."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
import typer

from zerodoc.audit.validation_log import (
    RUN_FIELDS,
    append_run,
    log_path,
    validation_verify,
    verify_validation_log,
)
from zerodoc.config import settings
from zerodoc.quality.validate import validate_partition

from .support import INCOME_SCHEMA, RESIDENT_SCHEMA, income, planted_residents, write_raw


@pytest.fixture(scope="module")
def logged_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("vlog")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(home))
        rows, _ = planted_residents(60)
        outcomes = []
        for ds in ("2024-03-01", "2024-03-02"):
            raw = write_raw(home, "mois", "residents", ds, rows, RESIDENT_SCHEMA)
            outcomes.append(validate_partition("mois__residents", raw, ds))
        raw = write_raw(home, "nts", "income", "2024-03-01", [income(i) for i in range(1, 20)], INCOME_SCHEMA)
        outcomes.append(validate_partition("nts__income", raw, "2024-03-01"))
        outcomes.append(validate_partition("nts__income", raw, "2024-03-01"))  # a rerun is logged too
        yield home, settings().reports_dir, outcomes


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _tampered(reports: Path, tmp_path: Path, lines: list[bytes]) -> Path:
    """A copy of the reports folder whose log holds `lines` (the original stays intact for other tests)."""
    import shutil

    copy = tmp_path / "reports"
    shutil.copytree(reports, copy)
    log_path(copy).write_bytes(b"".join(lines))
    return copy


def test_every_run_appends_a_record(logged_home) -> None:
    _, reports, outcomes = logged_home
    records = [json.loads(line) for line in _lines(log_path(reports))]
    assert [r["seq"] for r in records] == [1, 2, 3, 4]
    assert [r["run_id"] for r in records] == [o.run_id for o in outcomes]
    first = records[0]
    assert set(RUN_FIELDS) <= set(first)
    assert first["suite"] == "mois__residents" and len(first["suite_hash"]) == 64
    assert (first["extracted"], first["passed"], first["quarantined"]) == (
        outcomes[0].extracted,
        outcomes[0].passed,
        outcomes[0].quarantined,
    )
    assert first["gate_passed"] is outcomes[0].gate_passed
    assert (reports / first["report_path"]).is_file()
    assert records[1]["prev_hash"] == records[0]["hash"]
    result = verify_validation_log(log_path(reports))
    assert result.ok, result.problems
    assert result.records == 4 and result.head_hash == records[-1]["hash"]


def test_an_edited_record_is_caught(logged_home, tmp_path: Path) -> None:
    _, reports, _ = logged_home
    lines = _lines(log_path(reports))
    rec = json.loads(lines[1])
    rec["quarantined"] = 0  # hide the rejected rows
    lines[1] = json.dumps(rec, ensure_ascii=False).encode() + b"\n"
    result = verify_validation_log(log_path(_tampered(reports, tmp_path, lines)))
    assert not result.ok
    assert "record 2" in result.message and "edited" in result.message


def test_an_edited_record_with_a_recomputed_hash_is_caught(logged_home, tmp_path: Path) -> None:
    from zerodoc.audit.validation_log import record_hash

    _, reports, _ = logged_home
    lines = _lines(log_path(reports))
    rec = json.loads(lines[1])
    rec["gate_passed"] = not rec["gate_passed"]
    rec["hash"] = record_hash(rec)
    lines[1] = json.dumps(rec, ensure_ascii=False).encode() + b"\n"
    result = verify_validation_log(log_path(_tampered(reports, tmp_path, lines)))
    assert not result.ok and "record 3 does not link" in result.message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda ls: ls[:1] + ls[2:], "expected record 2, found 3"),  # removed from the middle
        (lambda ls: [ls[1], ls[0], *ls[2:]], "expected record 1, found 2"),  # reordered
        (lambda ls: ls[:2], "has a report but no record"),  # the last records cut off: a valid shorter chain
    ],
    ids=["removed", "reordered", "tail-cut"],
)
def test_removed_and_reordered_records_are_caught(logged_home, tmp_path: Path, change, expected: str) -> None:
    _, reports, _ = logged_home
    lines = _lines(log_path(reports))
    result = verify_validation_log(log_path(_tampered(reports, tmp_path, change(lines))))
    assert not result.ok and expected in result.message, result.message


def test_an_edited_report_summary_is_caught(logged_home, tmp_path: Path) -> None:
    _, reports, outcomes = logged_home
    copy = _tampered(reports, tmp_path, _lines(log_path(reports)))
    summary = copy / "validation" / outcomes[0].run_id / "summary.json"
    doc = json.loads(summary.read_text())
    doc["quarantined"] = 0
    summary.write_text(json.dumps(doc))
    result = verify_validation_log(log_path(copy))
    assert not result.ok and outcomes[0].run_id in result.message and "differs" in result.message


def test_cli_command_exits_1_on_a_broken_chain(logged_home, tmp_path: Path, capsys) -> None:
    _, reports, _ = logged_home
    validation_verify(log_path(reports))
    assert "OK: 4 validation records" in capsys.readouterr().out
    lines = _lines(log_path(reports))
    broken = _tampered(reports, tmp_path, [lines[0], lines[0].replace(b'"passed":', b'"passed": '), *lines[2:]])
    with pytest.raises(typer.Exit) as exc:
        validation_verify(log_path(broken))
    assert exc.value.exit_code == 1
    assert "BROKEN" in capsys.readouterr().err


def _append_many(path: str, worker: int) -> None:
    for i in range(20):
        append_run(Path(path), **{f: f"w{worker}-{i}" for f in RUN_FIELDS})


def test_concurrent_appends_extend_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "validation-log.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    result = verify_validation_log(path)
    assert result.ok and result.records == 80, result.problems


def test_a_torn_last_line_is_overwritten_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "validation-log.jsonl"
    append_run(path, **{f: "a" for f in RUN_FIELDS})
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 2, "prev')  # a crash mid-write
    append_run(path, **{f: "b" for f in RUN_FIELDS})
    result = verify_validation_log(path)
    assert result.ok and result.records == 2, result.problems
