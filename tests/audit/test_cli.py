"""`zerodoc audit verify` checks both chains, evidence and validation, with one line per log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zerodoc.audit.validation_log import append_run, log_path
from zerodoc.cli import app
from zerodoc.config import settings

from .test_log import _fill, _lines


def _validation_runs(n: int = 3) -> Path:
    path = log_path(settings().reports_dir)
    for i in range(n):
        append_run(
            path,
            suite="mois__residents",
            suite_version=2,
            suite_hash="a" * 64,
            run_id=f"mois__residents__2024-01-0{i + 1}__0000000{i}",
            logical_date=f"2024-01-0{i + 1}",
            data_checksum=f"{i:064x}",
            extracted=100,
            passed=97,
            quarantined=3,
            gate_passed=True,
            report_path=f"validation/run{i}/report.html",
            summary_sha256="b" * 64,
        )
    return path


@pytest.fixture
def both_logs(zerodoc_home: Path) -> tuple[Path, Path]:
    evidence = settings().state_dir / "audit" / "evidence.log"
    evidence.parent.mkdir(parents=True)
    _fill(evidence, 4)
    return evidence, _validation_runs()


def _verify(*args: str):
    return CliRunner().invoke(app, ["audit", "verify", *args])


def test_both_chains_intact(both_logs) -> None:
    result = _verify()
    assert result.exit_code == 0, result.output
    assert "evidence log" in result.output and "OK: chain intact: 4 records" in result.output
    assert "validation log" in result.output and "OK: 3 validation records chain correctly" in result.output


def test_an_edited_validation_record_fails_the_command(both_logs) -> None:
    _, validation = both_logs
    lines = _lines(validation)
    rec = json.loads(lines[1])
    rec["quarantined"] = 0  # hide the rejected rows
    lines[1] = json.dumps(rec, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
    validation.write_text("".join(lines), encoding="utf-8")
    result = _verify()
    assert result.exit_code == 1
    out = result.output.splitlines()
    assert any(line.startswith("evidence log") and "OK:" in line for line in out), result.output
    assert any(
        line.startswith("validation log") and "BROKEN: line 2: record 2" in line and "edited" in line for line in out
    ), result.output


def test_a_removed_evidence_record_fails_the_command(both_logs) -> None:
    evidence, _ = both_logs
    lines = _lines(evidence)
    del lines[1]
    evidence.write_text("".join(lines), encoding="utf-8")
    result = _verify()
    assert result.exit_code == 1
    assert "evidence log" in result.output and "BROKEN: line 2: expected seq 2, found seq 3" in result.output
    assert "OK: 3 validation records" in result.output


def test_fresh_home_has_nothing_to_verify(zerodoc_home: Path) -> None:
    result = _verify()
    assert result.exit_code == 0, result.output
    assert "no records yet (no evidence served)" in result.output
    assert "no records yet (no validation runs)" in result.output


def test_a_deleted_validation_log_is_caught_by_its_reports(zerodoc_home: Path) -> None:
    report = settings().reports_dir / "validation" / "some_run" / "summary.json"
    report.parent.mkdir(parents=True)
    report.write_text("{}", encoding="utf-8")
    result = _verify()
    assert result.exit_code == 1
    assert "validation log" in result.output and "BROKEN: no validation log at" in result.output


def test_an_explicit_missing_evidence_log_is_an_error(zerodoc_home: Path, tmp_path: Path) -> None:
    result = _verify(str(tmp_path / "nope.log"))
    assert result.exit_code == 1 and "BROKEN: no audit log at" in result.output
