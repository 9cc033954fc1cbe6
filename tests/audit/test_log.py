"""The hash chain: intact logs verify; edited, removed, reordered or torn records are found."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zerodoc.audit.cli import audit_verify
from zerodoc.audit.log import REDACTED, AuditLog, verify_chain


def _fill(path: Path, n: int = 5) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append(
            consumer="welfare-portal",
            purpose="basic_livelihood_application",
            evidence_type="residence",
            dataset="residence_v1",
            subject_pseudonym=f"{i:064x}",
            fields=["sido_name"],
            decision="allowed",
            status=200,
            reason="granted",
        )
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_intact_chain_verifies(tmp_path):
    path = tmp_path / "evidence.log"
    _fill(path)
    result = verify_chain(path)
    assert result.ok and result.records == 5 and result.first_bad_seq is None
    assert result.head_hash == json.loads(_lines(path)[-1])["hash"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_edited_record_is_found(tmp_path):
    path = tmp_path / "evidence.log"
    _fill(path)
    lines = _lines(path)
    rec = json.loads(lines[2])
    rec["decision"] = "denied"
    lines[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    result = verify_chain(path)
    assert not result.ok and result.first_bad_seq == 3
    assert result.message == "line 3: record 3 was modified (hash mismatch)"


def test_edited_record_with_recomputed_hash_breaks_the_next_link(tmp_path):
    from zerodoc.audit.log import record_hash

    path = tmp_path / "evidence.log"
    _fill(path)
    lines = _lines(path)
    rec = json.loads(lines[1])
    rec["fields"] = ["sido_name", "household_size"]
    rec["hash"] = record_hash(rec)
    lines[1] = json.dumps(rec) + "\n"
    path.write_text("".join(lines), encoding="utf-8")
    result = verify_chain(path)
    assert not result.ok and result.first_bad_seq == 3
    assert "does not link" in result.message


def test_removed_record_is_found(tmp_path):
    path = tmp_path / "evidence.log"
    _fill(path)
    lines = _lines(path)
    del lines[1]
    path.write_text("".join(lines), encoding="utf-8")
    result = verify_chain(path)
    assert not result.ok and result.first_bad_seq == 2
    assert "expected seq 2, found seq 3" in result.message


def test_reordered_records_are_found(tmp_path):
    path = tmp_path / "evidence.log"
    _fill(path)
    lines = _lines(path)
    lines[3], lines[4] = lines[4], lines[3]
    path.write_text("".join(lines), encoding="utf-8")
    result = verify_chain(path)
    assert not result.ok and result.first_bad_seq == 4


def test_torn_last_write_is_overwritten_by_the_next_append(tmp_path):
    path = tmp_path / "evidence.log"
    log = _fill(path, 2)
    with open(path, "ab") as fh:
        fh.write(b'{"seq":3,"half a rec')
    assert not verify_chain(path).ok
    log.append(decision="denied", status=401, reason="unauthorized")
    result = verify_chain(path)
    assert result.ok and result.records == 3


def test_rrn_shaped_values_are_redacted(tmp_path):
    path = tmp_path / "evidence.log"
    rec = AuditLog(path).append(consent_id="900101-1234567", purpose="9001011234567", decision="denied")
    assert rec["consent_id"] == REDACTED and rec["purpose"] == REDACTED
    assert "1234567" not in path.read_text()


def test_unknown_record_fields_are_refused(tmp_path):
    with pytest.raises(ValueError, match="subject_id"):
        AuditLog(tmp_path / "evidence.log").append(subject_id="900101-1234567")


def _append_many(path: str, n: int) -> None:
    log = AuditLog(Path(path))
    for _ in range(n):
        log.append(decision="allowed", status=200, reason="health")


def test_concurrent_processes_extend_one_chain(tmp_path):
    path = tmp_path / "evidence.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(path), 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    result = verify_chain(path)
    assert result.ok, result.message
    assert result.records == 200


def test_cli_exit_codes_and_messages(tmp_path, zerodoc_home):
    import typer

    app = typer.Typer()
    app.command()(audit_verify)
    path = tmp_path / "evidence.log"
    _fill(path)
    runner = CliRunner()
    ok = runner.invoke(app, [str(path)])
    assert ok.exit_code == 0 and "OK: chain intact: 5 records" in ok.output
    lines = _lines(path)
    del lines[3]
    path.write_text("".join(lines), encoding="utf-8")
    bad = runner.invoke(app, [str(path)])
    assert bad.exit_code == 1
    assert "BROKEN: line 4: expected seq 4, found seq 5" in bad.output


def test_group_commit_chains_concurrent_appends_and_reports_failures(tmp_path):
    import threading

    path = tmp_path / "evidence.log"
    log = AuditLog(path, group_commit=True)
    records: list[dict] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            rec = log.append(decision="allowed", status=200, reason="health")
            with lock:
                records.append(rec)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify_chain(path)
    assert result.ok and result.records == 200
    assert sorted(r["seq"] for r in records) == list(range(1, 201))
    # A record that cannot be written fails its caller (no hang) and the log stays intact.
    from zerodoc.audit.log import AuditError

    with pytest.raises(AuditError):
        log.append(reason=object())
    assert log.append(reason="after")["seq"] == 201
    assert verify_chain(path).ok


def test_the_kept_descriptor_follows_the_path_when_the_log_is_moved_or_removed(tmp_path):
    path = tmp_path / "audit" / "evidence.log"
    log = AuditLog(path)
    log.append(path="/v1/evidence", status=200)
    path.rename(tmp_path / "evidence.log.1")  # rotated away by an operator
    second = log.append(path="/v1/evidence", status=200)
    assert second["seq"] == 1 and verify_chain(path).records == 1  # a new log, not the moved file
    path.unlink()
    assert log.append(path="/v1/evidence", status=200)["seq"] == 1
    other = AuditLog(path)  # another writer (process) between two batches: the chain stays one
    other.append(path="/v1/evidence", status=403)
    assert log.append(path="/v1/evidence", status=200)["seq"] == 3 and verify_chain(path).ok
    log.close()
    assert log.append(path="/v1/evidence", status=200)["seq"] == 4


def test_template_lines_are_byte_for_byte_the_canonical_record_for_awkward_values():
    """chain() builds most lines from cached text around the varying values; it must equal the general path."""
    import random

    from zerodoc.audit import log as audit_log

    texts = [None, "", "plain", "900101-1234567", 'x"y', "a\\b", "한글", "tab\tx", "\x7f", "9001011234567", "\u2028"]
    rng = random.Random(7)
    used_template = 0
    for _ in range(3000):
        fields = {k: rng.choice(texts) for k in audit_log.RECORD_FIELDS if rng.random() < 0.8}
        fields["fields"] = rng.choice([[], ["a", "b"], ["x", "900101-1234567"], ['"q'], ["a", 1]])
        fields["status"] = rng.choice([200, 404, -1, 10**20, True, None, 2.5, "s"])
        prev = rng.choice([audit_log.GENESIS_HASH, "ab" * 32, 'we"ird'])
        records, lines = audit_log.chain([fields], 41, prev)
        general = audit_log.scrubbed_record(fields)
        general.update(seq=42, ts=records[0]["ts"], prev_hash=prev)
        line, digest = audit_log._line_and_hash(general)
        general["hash"] = digest
        assert lines == [line] and records == [general], fields
        used_template += audit_log._template(fields) is not None
    assert used_template > 1000  # the cached path was exercised, not only the fallback


def test_segment_lines_are_byte_for_byte_the_lines_chain_writes():
    """A worker's record_segments, joined and hashed by chain_lines, give chain()'s lines and chain,
    mixed in a batch with records that take the general path (no segments)."""
    import random

    from zerodoc.audit import log as audit_log

    texts = [None, "", "plain", "900101-1234567", 'x"y', "a\\b", "한글", "tab\tx", "\x00", "9001011234567", "\u2028"]
    rng = random.Random(11)
    batch, segmented = [], 0
    for _ in range(2000):
        fields = {k: rng.choice(texts) for k in audit_log.RECORD_FIELDS if rng.random() < 0.8}
        fields["fields"] = rng.choice([[], ["a", "b"], ["x", "900101-1234567"], ['"q'], ["a", 1]])
        fields["status"] = rng.choice([200, 404, 10**20, True, None, 2.5])
        batch.append(fields)
    items = []
    for fields in batch:
        segments = audit_log.record_segments(fields)
        assert segments is None or (segments.count(audit_log.SEGMENT_SEP) == 3 and b"\n" not in segments)
        segmented += segments is not None
        items.append(fields if segments is None else segments)
    for prev in (audit_log.GENESIS_HASH, 'we"ird'):
        ts = "2026-12-07T12:00:00.000001Z"
        records, expected = audit_log.chain(batch, 41, prev, ts)
        lines, seq, last = audit_log.chain_lines(items, 41, prev, ts)
        assert lines == expected and (seq, last) == (records[-1]["seq"], records[-1]["hash"])
    assert 300 < segmented < len(batch)  # both kinds of item were exercised


def test_a_write_by_another_process_between_batches_is_chained_onto(tmp_path):
    """The tail remembered after a batch is used only while nobody else has appended since."""
    path = tmp_path / "evidence.log"
    mine, other = AuditLog(path), AuditLog(path)
    mine.append(decision="allowed", status=200, reason="health")
    other.append(decision="allowed", status=200, reason="health")
    third = mine.append(decision="allowed", status=200, reason="health")
    assert third["seq"] == 3
    result = verify_chain(path)
    assert result.ok and result.records == 3
