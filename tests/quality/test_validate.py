"""validate_partition end to end on small crafted partitions with known defects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from zerodoc.config import settings
from zerodoc.quality import validate as validate_mod
from zerodoc.quality.validate import AccountingError, CrossCheckError, validate_partition

from .support import (
    HOUSEHOLD_SCHEMA,
    INCOME_SCHEMA,
    RESIDENT_SCHEMA,
    household,
    income,
    make_rrn,
    planted_residents,
    write_raw,
)

DS = "2024-03-01"


@pytest.fixture(scope="module")
def residents_run(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(home))
        rows, counts = planted_residents()
        raw = write_raw(home, "mois", "residents", DS, rows, RESIDENT_SCHEMA)
        outcome = validate_partition("mois__residents", raw, DS)
        yield home, raw, rows, counts, outcome


def test_counts_match_the_planted_defects(residents_run) -> None:
    _, _, rows, counts, outcome = residents_run
    assert {c.id: c.unexpected_count for c in outcome.checks} == counts
    # 10 single-defect fail rows + 2 duplicate ids... rows 0-9 and 12; warn-only rows 10, 11 pass.
    assert outcome.quarantined == 11
    assert outcome.extracted == len(rows) == outcome.passed + outcome.quarantined
    assert outcome.run_id.startswith(f"mois__residents__{DS}__")


def test_zones_hold_the_right_rows(residents_run) -> None:
    _, raw, rows, _, outcome = residents_run
    validated = pq.read_table(outcome.validated_path)
    quarantine = pq.read_table(outcome.quarantine_path)
    assert validated.schema.equals(pq.read_schema(raw))
    assert quarantine.schema.names == validated.schema.names + ["_reasons"]
    assert validated.num_rows == outcome.passed and quarantine.num_rows == outcome.quarantined
    assert pq.ParquetFile(outcome.validated_path).metadata.num_row_groups == 1
    assert set(validated.column("resident_id").to_pylist()).isdisjoint(
        quarantine.column("resident_id").to_pylist()
    )
    # warn-only rows pass
    assert {11, 12} <= set(validated.column("resident_id").to_pylist())


def test_row_failing_several_checks_is_quarantined_once_with_all_reasons(residents_run) -> None:
    _, _, _, _, outcome = residents_run
    quarantine = pq.read_table(outcome.quarantine_path).to_pylist()
    twice = [r for r in quarantine if r["resident_id"] == 13]
    assert len(twice) == 1
    assert sorted(r["expectation_id"] for r in twice[0]["_reasons"]) == [
        "sex_in_set", "sigungu_code_exists", "sigungu_code_format"]
    assert {r["severity"] for r in twice[0]["_reasons"]} == {"fail"}
    dupes = [r for r in quarantine if r["resident_id"] == 7]
    assert len(dupes) == 2


def test_summary_report_and_data_docs_are_written(residents_run) -> None:
    home, _, _, counts, outcome = residents_run
    run_dir = home / "reports" / "validation" / outcome.run_id
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["extracted"] == 200 and summary["quarantined"] == 11 and summary["passed"] == 189
    assert summary["suite_version"] == 2 and len(summary["suite_hash"]) == 64
    assert (
        summary["data_checksum"]
        == json.loads((home / "raw/mois/residents" / f"ds={DS}" / "_manifest.json").read_text())["checksum"]
    )
    assert {c["id"]: c["unexpected_count"] for c in summary["checks"]} == counts
    assert summary["quarantine_by_reason"]["sex_in_set"] == 2
    assert summary["gate"]["passed"] is True
    html = outcome.report_path.read_text()
    # Each check's outcome says what it did with the rows it found: a fail check quarantined them,
    # a warn check (name_hangul, moved_in_date_valid here) only reported them.
    outcomes = dict(re.findall(r"<tr><td><code>(\w+)</code>.*?<td class=\"\w+\">([a-z ]+)</td></tr>", html))
    warn = {c["id"] for c in summary["checks"] if c["severity"] == "warn"}
    assert {"name_hangul", "moved_in_date_valid"} <= warn and counts["name_hangul"] and counts["moved_in_date_valid"]
    assert outcomes == {c: "clean" if n == 0 else "rows reported" if c in warn else "rows quarantined"
                        for c, n in counts.items()}
    assert "800101-1******" in html and make_rrn("800101", "1", bad_check=True) not in html
    assert 'href="data_docs/index.html"' in html and summary["data_checksum"] in html
    assert outcome.data_docs_path.is_file()
    assert "mois__residents" in outcome.data_docs_path.read_text()


def test_no_raw_registration_number_leaves_in_the_reports(residents_run) -> None:
    from zerodoc.privacy import contains_rrn

    _, _, rows, _, outcome = residents_run
    run_dir = outcome.report_path.parent
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.suffix in {".html", ".json"}]
    assert len(files) > 3
    leaks = [str(p) for p in files if contains_rrn(p.read_text(encoding="utf-8", errors="replace"))]
    assert leaks == []
    assert rows[1]["rrn"][:8] in outcome.report_path.read_text()  # masked sample: birth date and sex only


def test_rerun_is_deterministic_and_index_lists_every_run(residents_run, monkeypatch) -> None:
    home, raw, _, _, first = residents_run
    monkeypatch.setenv("ZERODOC_HOME", str(home))
    again = validate_partition("mois__residents", raw, DS)
    assert again.run_id == first.run_id and again.checks == first.checks
    other_ds = "2024-03-02"
    rows = [household(i) for i in range(1, 21)]
    rows[3]["household_id"] = 3
    rows[4]["head_resident_id"] = None
    rows[5]["registered_date"] = "20190229"
    hh = validate_partition(
        "mois__households", write_raw(home, "mois", "households", other_ds, rows, HOUSEHOLD_SCHEMA), other_ds
    )
    assert {c.id: c.unexpected_count for c in hh.checks if c.unexpected_count} == {
        "household_id_unique": 2,
        "head_resident_id_not_null": 1,
        "registered_date_valid": 1,
    }
    assert (hh.extracted, hh.passed, hh.quarantined) == (20, 16, 4)
    index = (home / "reports" / "index.html").read_text()
    assert first.run_id in index and hh.run_id in index
    assert sorted(p.name for p in (home / "reports" / "validation").iterdir()) == sorted(
        [first.run_id, hh.run_id]
    )


def test_income_suite_and_a_failing_gate(zerodoc_home: Path) -> None:
    rows = [income(i) for i in range(1, 21)]
    rows[0]["tax_year"] = 1999
    rows[1]["earned_income"] = -5
    rows[2]["business_income"] = None
    rows[3]["filed_date"] = "20241301"
    rows[4]["rrn"] = "751340-2123456"
    rows[5]["income_id"] = 7
    raw = write_raw(zerodoc_home, "nts", "income", DS, rows, INCOME_SCHEMA)
    outcome = validate_partition("nts__income", raw, DS)
    failing = {c.id: c.unexpected_count for c in outcome.checks if c.unexpected_count}
    assert failing == {
        "tax_year_range": 1,
        "earned_income_non_negative": 1,
        "business_income_not_null": 1,
        "filed_date_valid": 1,
        "rrn_valid": 1,
        "income_id_unique": 2,
    }
    assert (outcome.passed, outcome.quarantined) == (13, 7)
    assert outcome.gate_passed is False  # 10% of ids duplicated > 5%
    assert "income_id_unique" in outcome.gate_message and "2 rows" in outcome.gate_message
    assert str(outcome.report_path) in outcome.gate_message


def test_engines_disagreeing_raises_and_writes_nothing(zerodoc_home: Path, monkeypatch) -> None:
    rows, _ = planted_residents(40)
    raw = write_raw(zerodoc_home, "mois", "residents", DS, rows, RESIDENT_SCHEMA)
    real = validate_mod.unexpected_predicate

    def skewed(check, table="batch"):
        return "false" if check.id == "sex_in_set" else real(check, table)

    monkeypatch.setattr(validate_mod, "unexpected_predicate", skewed)
    with pytest.raises(CrossCheckError, match=r"sex_in_set: GX 2 vs DuckDB 0"):
        validate_partition("mois__residents", raw, DS)
    cfg = settings()
    assert not (cfg.validated_dir / "mois" / "residents" / f"ds={DS}").exists()
    assert not list((cfg.reports_dir / "validation").glob("*"))


def test_accounting_error_blocks_the_commit(zerodoc_home: Path, monkeypatch) -> None:
    rows, _ = planted_residents(40)
    raw = write_raw(zerodoc_home, "mois", "residents", DS, rows, RESIDENT_SCHEMA)
    monkeypatch.setattr(validate_mod._Scratch, "count_parquet", staticmethod(lambda path: 1))
    with pytest.raises(AccountingError, match="extracted 40"):
        validate_partition("mois__residents", raw, DS)
    cfg = settings()
    partition = Path("mois", "residents", f"ds={DS}")
    assert not (cfg.validated_dir / partition).exists() and not (cfg.quarantine_dir / partition).exists()
    assert not list(zerodoc_home.glob(".validate-*")), "scratch database left behind"
