"""The validate task's log names its report's URL in the auditor section (the same URL as the task's extra link)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from zerodoc.config import Settings
from zerodoc.orchestration import steps
from zerodoc.quality import validate
from zerodoc.quality.validate import ValidationOutcome
from zerodoc.ui.links import task_link


def test_validate_log_line_carries_the_auditor_url(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080")
    run_dir = Settings(home=tmp_path).reports_dir / "validation" / "mois__residents__2026-11-20__abcd1234"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"extracted": 10, "passed": 9, "quarantined": 1, "checks": []}))

    def fake_validate(suite: str, raw: Path, ds: str, cfg: Settings) -> ValidationOutcome:
        return ValidationOutcome(
            run_id="mois__residents__2026-11-20__abcd1234", suite=suite, logical_date=ds, extracted=10, passed=9,
            quarantined=1, checks=(), gate_passed=True, gate_message="ok", report_path=run_dir / "report.html",
            data_docs_path=run_dir / "data_docs" / "index.html", validated_path=tmp_path / "v",
            quarantine_path=tmp_path / "q")

    monkeypatch.setattr(validate, "validate_partition", fake_validate)
    with caplog.at_level(logging.INFO, logger="zerodoc.orchestration.steps"):
        summary = steps.validate_step("mois.residents", "2026-11-20", str(tmp_path / "raw.parquet"))
    line = next(r.getMessage() for r in caplog.records if "quarantined=1" in r.getMessage())
    url = "http://airflow.example:8080/zerodoc/reports/mois__residents__2026-11-20__abcd1234/report.html"
    assert f"(auditor section: {url})" in line
    # The extra link the API server computes from the same returned summary points at the same page.
    assert url.endswith(task_link("validate_residents", summary, prefix=""))
