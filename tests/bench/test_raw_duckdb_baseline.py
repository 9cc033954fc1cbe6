"""The raw-DuckDB baseline does the pipeline's work: same quarantine counts, same checks, plausible marts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from zerodoc.privacy import pseudonymize
from zerodoc.sources.generate import generate

REPO = Path(__file__).resolve().parents[2]
KEY = b"baseline-test-key-0123456789abcdef"
AS_OF = "2026-11-01"
SUITES = {
    "mois.residents": "mois__residents",
    "mois.households": "mois__households",
    "nts.income": "nts__income",
    "nts.business_registrations": "nts__business_registrations",
    "moj.foreign_residents": "moj__foreign_residents",
    "moel.employment_insurance": "moel__employment_insurance",
    "moel.unemployment_benefits": "moel__unemployment_benefits",
    "mohw.basic_livelihood_recipients": "mohw__basic_livelihood_recipients",
    "mohw.disability_registry": "mohw__disability_registry",
    "fsc.youth_leap_accounts": "fsc__youth_leap_accounts",
    "police.crime_victim_cases": "police__crime_victim_cases",
}
MARTS = (
    "residence_v1",
    "income_v1",
    "household_v1",
    "living_population_by_region_v1",
    "youth_leap_eligibility_v1",
    "benefit_notifications_v1",
    "employment_v1",
    "victim_support_eligibility_v1",
)


def _load_baseline():
    # bench/ is a script directory, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location(
        "raw_duckdb_baseline", REPO / "bench" / "raw_duckdb_baseline.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


baseline = _load_baseline()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    src = tmp_path_factory.mktemp("sources")
    expected = generate(5000, 7, src)
    out = tmp_path_factory.mktemp("baseline")
    result = baseline.run_baseline(src, out, KEY, threads=2, as_of=AS_OF)
    return expected, result, out


def _scalar(sql: str):
    with duckdb.connect() as con:
        return con.execute(sql).fetchone()[0]


def test_the_baseline_covers_every_source_entity_the_pipeline_extracts():
    """Equal work on both sides of the e2e ratio: a new entity in config/sources.yml must reach the baseline."""
    from zerodoc.catalog import agencies

    declared = {e.qualified for a in agencies().values() for e in a.entities.values()}
    assert set(baseline.ENTITIES) == set(SUITES) == declared


def test_checks_mirror_the_suite_files():
    """The hand-written predicates cover exactly the suites' ids with the same severities."""
    for entity, suite in SUITES.items():
        doc = yaml.safe_load((REPO / "expectations" / f"{suite}.yml").read_text(encoding="utf-8"))
        assert doc["entity"] == entity
        assert baseline.KEYS[entity] == doc["key"]
        in_suite = [(e["id"], e["severity"]) for e in doc["expectations"]]
        in_baseline = [(cid, sev) for cid, sev, _ in baseline.CHECKS[entity]]
        assert in_baseline == in_suite, suite


def test_quarantine_counts_equal_the_generator_plan(run):
    expected, result, _ = run
    for entity in SUITES:
        assert result["quarantined"][entity] == expected[entity]["quarantined"], entity
        assert result["rows"][f"{entity}.extracted"] == expected[entity]["extracted"], entity
        assert result["rows"][f"{entity}.passed"] == expected[entity]["passed"], entity


def test_zones_account_for_every_row(run):
    _, result, out = run
    for entity in SUITES:
        agency, name = entity.split(".")
        raw = pq.ParquetFile(out / "raw" / agency / f"{name}.parquet")
        valid = pq.ParquetFile(out / "validated" / agency / f"{name}.parquet")
        quarantine = pq.read_table(out / "quarantine" / agency / f"{name}.parquet")
        assert raw.metadata.num_rows == valid.metadata.num_rows + quarantine.num_rows
        # validated keeps the raw schema; quarantine adds one list of reasons per row
        # (names and types: DuckDB may mark a column NOT NULL from the statistics of what it read)
        assert [(f.name, f.type) for f in valid.schema_arrow] == [(f.name, f.type) for f in raw.schema_arrow]
        assert quarantine.column_names == raw.schema_arrow.names + ["_reasons"]
        ids = {cid for cid, _, _ in baseline.CHECKS[entity]}
        fail_ids = {cid for cid, sev, _ in baseline.CHECKS[entity] if sev == "fail"}
        for reasons in quarantine["_reasons"].to_pylist():
            assert reasons and set(reasons) <= ids and set(reasons) & fail_ids
        assert raw.metadata.row_group(0).column(0).compression == "ZSTD"


def test_duplicate_keys_reject_every_copy(run):
    expected, result, out = run
    quarantine = out / "quarantine" / "mois" / "residents.parquet"
    dup_rows = _scalar(
        f"SELECT count(*) FROM '{quarantine}' WHERE list_contains(_reasons, 'resident_id_unique')"
    )
    assert dup_rows == result["checks"]["mois.residents"]["resident_id_unique"] == 2 * (5000 // 1000)


def test_residence_v1_one_row_per_valid_person(run):
    _, result, out = run
    valid = out / "validated" / "mois" / "residents.parquet"
    mart = out / "marts" / "residence_v1.parquet"
    persons = _scalar(f"SELECT count(DISTINCT regexp_replace(rrn, '[^0-9]', '', 'g')) FROM '{valid}'")
    assert result["rows"]["residence_v1"] == persons == pq.ParquetFile(mart).metadata.num_rows
    assert _scalar(f"SELECT count(DISTINCT subject_pseudonym) FROM '{mart}'") == persons
    schema = pq.read_schema(mart)
    assert schema.names == [
        "subject_pseudonym",
        "sido_code",
        "sido_name",
        "sigungu_code",
        "sigungu_name",
        "household_id",
        "household_size",
        "is_household_head",
        "moved_in_on",
        "as_of",
    ]
    assert [
        str(schema.field(c).type) for c in ("household_id", "household_size", "moved_in_on", "as_of")
    ] == [
        "int64",
        "int64",
        "date32[day]",
        "date32[day]",
    ]
    # heads: one per valid household whose head is a valid resident; sizes agree with membership
    assert _scalar(f"SELECT count(*) FROM '{mart}' WHERE sigungu_name IS NULL OR sido_code IS NULL") == 0
    assert _scalar(f"SELECT count(*) FROM '{mart}' WHERE as_of <> DATE '{AS_OF}'") == 0
    assert (
        _scalar(
            f"""SELECT count(*) FROM (SELECT household_id, any_value(household_size) AS s, count(*) AS n
                                  FROM '{mart}' WHERE household_size IS NOT NULL GROUP BY 1) WHERE s <> n"""
        )
        == 0
    )
    assert 0 < _scalar(f"SELECT count_if(is_household_head) FROM '{mart}'") < persons


def test_income_v1_grain_and_pseudonyms(run):
    _, result, out = run
    valid = out / "validated" / "nts" / "income.parquet"
    mart = out / "marts" / "income_v1.parquet"
    grain = _scalar(f"SELECT count(*) FROM (SELECT DISTINCT rrn, tax_year FROM '{valid}')")
    assert result["rows"]["income_v1"] == grain
    assert (
        _scalar(f"SELECT count(*) FROM (SELECT DISTINCT subject_pseudonym, tax_year FROM '{mart}')") == grain
    )
    assert (
        _scalar(
            f"""SELECT count(*) FROM '{mart}'
            WHERE total_income_krw <> earned_income_krw + business_income_krw + other_income_krw"""
        )
        == 0
    )
    # the SQL pseudonym is the Python one, and income joins residence on it
    rrn = _scalar(f"SELECT rrn FROM '{valid}' ORDER BY income_id LIMIT 1")
    assert _scalar(f"SELECT count(*) FROM '{mart}' WHERE subject_pseudonym = '{pseudonymize(rrn, KEY)}'") >= 1
    residence = out / "marts" / "residence_v1.parquet"
    unmatched = _scalar(
        f"SELECT count(*) FROM '{mart}' i ANTI JOIN '{residence}' r USING (subject_pseudonym)"
    )
    assert unmatched < 0.01 * grain


def test_result_shape(run):
    _, result, _ = run
    assert set(result["phases"]) == {"extract", "validate", "transform"}
    assert result["seconds"] >= sum(result["phases"].values()) - 0.01


def test_every_mart_equals_the_dbt_projects_on_the_same_validated_data(run, tmp_path, monkeypatch):
    """Equal work, same logic: dbt over the baseline's validated zone yields the very same eight marts.

    Compared as published (export_mart: as_of stamped from shared.build_as_of), which is what the
    baseline writes.
    """
    import shutil

    from zerodoc.config import Settings
    from zerodoc.transform.runner import export_mart, run_dbt

    _, result, out = run
    for entity in SUITES:
        agency, name = entity.split(".")
        part = tmp_path / "validated" / agency / name / f"ds={AS_OF}"
        part.mkdir(parents=True)
        shutil.copyfile(out / "validated" / agency / f"{name}.parquet", part / "part-0.parquet")
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    monkeypatch.setenv("ZERODOC_PSEUDONYM_KEY", KEY.decode())
    cfg = Settings(home=tmp_path)
    run_dbt(["seed"], ds=AS_OF, cfg=cfg)
    run_dbt(["run"], ds=AS_OF, cfg=cfg)
    published = {mart: tmp_path / "published" / f"{mart}.parquet" for mart in MARTS}
    for mart, dest in published.items():
        export_mart(mart, dest, cfg, as_of=AS_OF)
    with duckdb.connect() as con:
        for mart in MARTS:
            path = out / "marts" / f"{mart}.parquet"
            theirs_path = f"'{published[mart]}'"
            ours = con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()
            theirs = con.execute(f"DESCRIBE SELECT * FROM {theirs_path}").fetchall()
            assert [c[0] for c in ours] == [c[0] for c in theirs], mart
            rows = con.execute(f"SELECT count(*) FROM {theirs_path}").fetchone()[0]
            assert rows == result["rows"][mart] > 0, mart
            for a, b in ((f"'{path}'", theirs_path), (theirs_path, f"'{path}'")):
                diff = con.execute(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()
                assert diff[0] == 0, f"{mart}: {diff[0]} rows of {a} not in {b}"
