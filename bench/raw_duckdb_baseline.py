"""Hand-written raw-DuckDB baseline: the pipeline's work (extract, validate, marts) with no framework.

The benchmark sets this against Airflow + GX + dbt on the same sources in the same run. It does
the same work a good engineer would write by hand, on one in-memory DuckDB connection, for every
entity of config/sources.yml (MOIS residents and households; NTS income and business
registrations; MOJ foreign residents; MOEL employment insurance and unemployment benefits; MOHW
basic livelihood recipients and disability registry; FSC Youth Leap Accounts; police crime-victim
cases):

1. extract: copy each source stand-in to a "raw" Parquet file (zstd, row group 122,880), as
   `zerodoc.sources.extract` does (a REST entity's stand-in gains the NULL `_parse_error` its
   record check reads);
2. validate: the `fail` checks of `expectations/*.yml` as SQL predicates (the `warn` ones are
   counted, their rows pass); per-check unexpected counts; each entity split into validated and
   quarantine Parquet, a quarantined row once with every check it fails (`_reasons`, check ids);
   extracted == passed + quarantined is asserted. Uniqueness rejects every copy of a duplicated key;
   CSV drops (MOEL employment insurance and unemployment benefits, police cases) are decoded per
   file (BOM, UTF-8, else CP949) and read by DuckDB; a record with the wrong field count or a value
   not of its declared type is kept as a row with `_parse_error`, as `zerodoc.sources.csvdrop` does;
3. transform: the dbt project's logic by hand — every staging model pseudonymised once into a
   temp table (those no mart reads yet too: the pipeline builds them), the person spine (citizens
   and deduplicated foreign residents), latest incomes, household sizes — then all eight shared
   marts (residence_v1, income_v1, household_v1, living_population_by_region_v1 with its
   suppression, youth_leap_eligibility_v1, benefit_notifications_v1 as a first run, employment_v1,
   victim_support_eligibility_v1) from the same seeds (rules in force on as_of), written straight
   to Parquet.

Everything streams through `COPY ... TO`; only the duplicate keys, the few failing rows' verdicts
and the staging tables are materialised. No rows are ever pulled into Python.

    PYTHONPATH=plugins ZERODOC_PSEUDONYM_KEY=... python bench/raw_duckdb_baseline.py \
        --sources /tmp/src --out /tmp/out
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import duckdb

from zerodoc.privacy import duckdb_macro_sql

REPO = Path(__file__).resolve().parents[1]


def _identifier_macros() -> list[str]:
    """`zd_valid_yyyymmdd` / `zd_rrn_valid` from zerodoc/quality/identifiers.py, loaded by path.

    Importing it as `zerodoc.quality.identifiers` runs the package __init__, which imports and patches
    Great Expectations (~10 s); the baseline uses no GX, so it takes the one stdlib-only module alone.
    """
    import importlib.util

    import zerodoc

    path = Path(zerodoc.__file__).parent / "quality" / "identifiers.py"
    spec = importlib.util.spec_from_file_location("_zd_identifiers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.duckdb_macros_sql()


REGIONS_CSV = REPO / "dbt_project" / "seeds" / "regions.csv"
# The dbt seeds the marts read (rules as data), with the column types of seeds/_seeds.yml.
SEED_TYPES: dict[str, dict[str, str]] = {
    "regions": {"sigungu_code": "VARCHAR", "sigungu_name": "VARCHAR", "sido_code": "VARCHAR", "sido_name": "VARCHAR"},
    "standard_median_incomes": {
        "rule_id": "VARCHAR", "median_year": "INTEGER", "household_size": "INTEGER", "median_income_krw": "BIGINT",
        "effective_from": "DATE", "effective_to": "DATE", "source": "VARCHAR",
    },
    "programme_thresholds": {
        "programme": "VARCHAR", "rule_id": "VARCHAR", "percent_of_median": "INTEGER", "min_age": "INTEGER",
        "max_age": "INTEGER", "max_earned_income_krw": "BIGINT", "max_comprehensive_income_krw": "BIGINT",
        "effective_from": "DATE", "effective_to": "DATE", "source": "VARCHAR",
    },
    "victim_support_rules": {
        "support_area": "VARCHAR", "rule_id": "VARCHAR", "max_percent_of_median": "INTEGER", "min_age": "INTEGER",
        "max_age": "INTEGER", "claim_window_years": "INTEGER", "qualifying_crime_types": "VARCHAR",
        "is_foreigner_eligible": "BOOLEAN", "requires_uninsured": "BOOLEAN",
        "excludes_livelihood_recipients": "BOOLEAN", "effective_from": "DATE",
        "effective_to": "DATE", "source": "VARCHAR",
    },
}
ROW_GROUP_SIZE = 122_880
MEMORY_LIMIT = "8GB"
PARQUET = f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_SIZE})"

# Every entity of config/sources.yml, in its order.
ENTITIES = ("mois.residents", "mois.households", "nts.income", "nts.business_registrations",
            "moj.foreign_residents", "moel.employment_insurance", "moel.unemployment_benefits",
            "mohw.basic_livelihood_recipients", "mohw.disability_registry", "fsc.youth_leap_accounts",
            "police.crime_victim_cases")
# REST entities (kind: rest): their file stand-in has no pages, so the pipeline's raw rows carry a
# NULL `_parse_error` (zerodoc.sources.extract.read_entity), which their record_parsed check reads.
REST_ENTITIES = ("mohw.basic_livelihood_recipients", "mohw.disability_registry", "fsc.youth_leap_accounts")
SEEDS = REPO / "dbt_project" / "seeds"
# CSV drop entities: declared columns and DuckDB types (config/sources.yml).
CSV_COLUMNS: dict[str, dict[str, str]] = {
    "moel.employment_insurance": {
        "enrolment_id": "BIGINT", "rrn": "VARCHAR", "employer_brn": "VARCHAR", "workplace_name": "VARCHAR",
        "acquired_date": "VARCHAR", "lost_date": "VARCHAR", "monthly_wage": "BIGINT", "updated_at": "TIMESTAMP",
    },
    "moel.unemployment_benefits": {
        "benefit_id": "BIGINT", "rrn": "VARCHAR", "claim_date": "VARCHAR", "benefit_start_date": "VARCHAR",
        "benefit_days": "INTEGER", "daily_amount": "BIGINT", "total_paid": "BIGINT", "updated_at": "TIMESTAMP",
    },
    "police.crime_victim_cases": {
        "case_id": "BIGINT", "victim_rrn": "VARCHAR", "crime_type": "VARCHAR", "incident_date": "VARCHAR",
        "reported_date": "VARCHAR", "police_station_code": "VARCHAR", "sigungu_code": "VARCHAR",
        "summary": "VARCHAR", "updated_at": "TIMESTAMP",
    },
}
FORMULA = r"^([=+@\t\r]|-[^0-9.\s])"

def _region_pattern() -> str:
    """One anchored alternation of the existing sigungu codes (the dbt project's region seed)."""
    import csv

    seed = Path(__file__).resolve().parents[1] / "dbt_project" / "seeds" / "regions.csv"
    with open(seed, encoding="utf-8") as fh:
        codes = sorted({row["sigungu_code"] for row in csv.DictReader(fh)})
    return "^(" + "|".join(codes) + ")$"


REGION_PATTERN = _region_pattern()

# Hand-written copies of expectations/<agency>__<entity>.yml: (id, severity, SQL true for an
# unexpected row). As in GX, map checks ignore NULLs (not_null's business) and the regex checks are
# searches (the patterns are anchored). `{dups}` is the entity's table of duplicated keys.
CHECKS: dict[str, list[tuple[str, str, str]]] = {
    "mois.residents": [
        ("resident_id_not_null", "fail", "resident_id IS NULL"),
        ("resident_id_unique", "fail", "resident_id IN (SELECT k FROM {dups})"),
        ("rrn_not_null", "fail", "rrn IS NULL"),
        ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
        ("name_not_null", "fail", "name IS NULL"),
        ("name_hangul", "warn", "NOT regexp_matches(name, '^[가-힣]{2,5}$')"),
        ("sex_in_set", "fail", "sex NOT IN ('M', 'F')"),
        ("birth_date_valid", "fail", "NOT zd_valid_yyyymmdd(birth_date)"),
        ("sigungu_code_format", "fail", "NOT regexp_matches(sigungu_code, '^[0-9]{5}$')"),
        ("sigungu_code_exists", "fail", f"NOT regexp_matches(sigungu_code, '{REGION_PATTERN}')"),
        ("household_id_not_null", "fail", "household_id IS NULL"),
        ("moved_in_date_valid", "warn", "NOT zd_valid_yyyymmdd(moved_in_date)"),
    ],
    "mois.households": [
        ("household_id_not_null", "fail", "household_id IS NULL"),
        ("household_id_unique", "fail", "household_id IN (SELECT k FROM {dups})"),
        ("head_resident_id_not_null", "fail", "head_resident_id IS NULL"),
        ("registered_date_valid", "fail", "NOT zd_valid_yyyymmdd(registered_date)"),
        ("sigungu_code_format", "warn", "NOT regexp_matches(sigungu_code, '^[0-9]{5}$')"),
        ("sigungu_code_exists", "warn", f"NOT regexp_matches(sigungu_code, '{REGION_PATTERN}')"),
    ],
    "nts.income": [
        ("income_id_not_null", "fail", "income_id IS NULL"),
        ("income_id_unique", "fail", "income_id IN (SELECT k FROM {dups})"),
        ("rrn_not_null", "fail", "rrn IS NULL"),
        ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
        ("tax_year_range", "fail", "NOT (tax_year >= 2000 AND tax_year <= 2100)"),
        ("tax_year_not_null", "fail", "tax_year IS NULL"),
        ("earned_income_not_null", "fail", "earned_income IS NULL"),
        ("earned_income_non_negative", "fail", "NOT (earned_income >= 0)"),
        ("business_income_not_null", "fail", "business_income IS NULL"),
        ("business_income_non_negative", "fail", "NOT (business_income >= 0)"),
        ("other_income_not_null", "fail", "other_income IS NULL"),
        ("other_income_non_negative", "fail", "NOT (other_income >= 0)"),
        ("filed_date_valid", "fail", "NOT zd_valid_yyyymmdd(filed_date)"),
    ],
}
CHECKS["moel.employment_insurance"] = [
    ("enrolment_id_not_null", "fail", "enrolment_id IS NULL"),
    ("enrolment_id_unique", "fail", "enrolment_id IN (SELECT k FROM {dups})"),
    ("line_parsed", "fail", "_parse_error IS NOT NULL"),
    ("no_flags", "warn", "_flags IS NOT NULL"),
    ("rrn_not_null", "fail", "rrn IS NULL"),
    ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
    ("employer_brn_format", "warn", "NOT regexp_matches(employer_brn, '^[0-9]{3}-[0-9]{2}-[0-9]{5}$')"),
    ("acquired_date_not_null", "fail", "acquired_date IS NULL"),
    ("acquired_date_valid", "fail", "NOT zd_valid_yyyymmdd(acquired_date)"),
    ("lost_date_valid", "fail", "NOT zd_valid_yyyymmdd(lost_date)"),
    ("monthly_wage_non_negative", "fail", "NOT (monthly_wage >= 0)"),
]
CHECKS["police.crime_victim_cases"] = [
    ("case_id_not_null", "fail", "case_id IS NULL"),
    ("case_id_unique", "fail", "case_id IN (SELECT k FROM {dups})"),
    ("line_parsed", "fail", "_parse_error IS NOT NULL"),
    ("no_flags", "warn", "_flags IS NOT NULL"),
    ("victim_rrn_not_null", "fail", "victim_rrn IS NULL"),
    ("victim_rrn_valid", "fail", "NOT zd_rrn_valid(victim_rrn)"),
    ("incident_date_not_null", "fail", "incident_date IS NULL"),
    ("incident_date_valid", "fail", "NOT zd_valid_yyyymmdd(incident_date)"),
    ("reported_date_not_null", "fail", "reported_date IS NULL"),
    ("reported_date_valid", "fail", "NOT zd_valid_yyyymmdd(reported_date)"),
    ("crime_type_known", "warn",
     "crime_type NOT IN ('폭행', '사기', '절도', '성폭력', '강도', '상해', '살인미수', '협박')"),
    ("sigungu_code_format", "warn", "NOT regexp_matches(sigungu_code, '^[0-9]{5}$')"),
]
CHECKS["nts.business_registrations"] = [
    ("business_registration_id_not_null", "fail", "business_registration_id IS NULL"),
    ("business_registration_id_unique", "fail", "business_registration_id IN (SELECT k FROM {dups})"),
    ("brn_not_null", "fail", "brn IS NULL"),
    ("brn_format", "fail", "NOT regexp_matches(brn, '^[0-9]{3}-[0-9]{2}-[0-9]{5}$')"),
    ("owner_rrn_not_null", "fail", "owner_rrn IS NULL"),
    ("owner_rrn_valid", "fail", "NOT zd_rrn_valid(owner_rrn)"),
    ("opened_date_not_null", "fail", "opened_date IS NULL"),
    ("opened_date_valid", "fail", "NOT zd_valid_yyyymmdd(opened_date)"),
    ("closed_date_valid", "fail", "NOT zd_valid_yyyymmdd(closed_date)"),
]
CHECKS["moj.foreign_residents"] = [
    ("foreign_resident_id_not_null", "fail", "foreign_resident_id IS NULL"),
    ("foreign_resident_id_unique", "fail", "foreign_resident_id IN (SELECT k FROM {dups})"),
    ("frn_not_null", "fail", "frn IS NULL"),
    ("frn_is_foreigners", "fail", "NOT regexp_matches(frn, '^[0-9]{6}-[5-8][0-9]{6}$')"),
    ("frn_valid", "fail", "NOT zd_rrn_valid(frn)"),
    ("nationality_not_null", "fail", "nationality IS NULL"),
    ("nationality_format", "warn", "NOT regexp_matches(nationality, '^[A-Z]{3}$')"),
    ("registered_date_not_null", "fail", "registered_date IS NULL"),
    ("registered_date_valid", "fail", "NOT zd_valid_yyyymmdd(registered_date)"),
    ("entry_date_valid", "fail", "NOT zd_valid_yyyymmdd(entry_date)"),
    ("sigungu_code_format", "warn", "NOT regexp_matches(sigungu_code, '^[0-9]{5}$')"),
]
CHECKS["moel.unemployment_benefits"] = [
    ("benefit_id_not_null", "fail", "benefit_id IS NULL"),
    ("benefit_id_unique", "fail", "benefit_id IN (SELECT k FROM {dups})"),
    ("line_parsed", "fail", "_parse_error IS NOT NULL"),
    ("no_flags", "warn", "_flags IS NOT NULL"),
    ("rrn_not_null", "fail", "rrn IS NULL"),
    ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
    ("claim_date_not_null", "fail", "claim_date IS NULL"),
    ("claim_date_valid", "fail", "NOT zd_valid_yyyymmdd(claim_date)"),
    ("benefit_start_date_not_null", "fail", "benefit_start_date IS NULL"),
    ("benefit_start_date_valid", "fail", "NOT zd_valid_yyyymmdd(benefit_start_date)"),
    ("daily_amount_not_null", "fail", "daily_amount IS NULL"),
    ("daily_amount_range", "fail", "NOT (daily_amount >= 0 AND daily_amount <= 100000)"),
    ("benefit_days_range", "fail", "NOT (benefit_days >= 1 AND benefit_days <= 270)"),
]
CHECKS["mohw.basic_livelihood_recipients"] = [
    ("recipient_id_not_null", "fail", "recipient_id IS NULL"),
    ("recipient_id_unique", "fail", "recipient_id IN (SELECT k FROM {dups})"),
    ("record_parsed", "fail", "_parse_error IS NOT NULL"),
    ("rrn_not_null", "fail", "rrn IS NULL"),
    ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
    ("household_size_range", "fail", "NOT (household_size >= 1 AND household_size <= 20)"),
    ("monthly_benefit_non_negative", "fail", "NOT (monthly_benefit >= 0)"),
    ("selected_date_not_null", "fail", "selected_date IS NULL"),
    ("selected_date_valid", "fail", "NOT zd_valid_yyyymmdd(selected_date)"),
]
CHECKS["mohw.disability_registry"] = [
    ("registration_id_not_null", "fail", "registration_id IS NULL"),
    ("registration_id_unique", "fail", "registration_id IN (SELECT k FROM {dups})"),
    ("record_parsed", "fail", "_parse_error IS NOT NULL"),
    ("rrn_not_null", "fail", "rrn IS NULL"),
    ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
    ("severity_known", "fail", "severity NOT IN ('심한 장애', '심하지 않은 장애')"),
    ("registered_date_not_null", "fail", "registered_date IS NULL"),
    ("registered_date_valid", "fail", "NOT zd_valid_yyyymmdd(registered_date)"),
]
CHECKS["fsc.youth_leap_accounts"] = [
    ("account_id_not_null", "fail", "account_id IS NULL"),
    ("account_id_unique", "fail", "account_id IN (SELECT k FROM {dups})"),
    ("record_parsed", "fail", "_parse_error IS NOT NULL"),
    ("rrn_not_null", "fail", "rrn IS NULL"),
    ("rrn_valid", "fail", "NOT zd_rrn_valid(rrn)"),
    ("monthly_contribution_range", "fail", "NOT (monthly_contribution >= 0 AND monthly_contribution <= 700000)"),
    ("status_known", "fail", "status NOT IN ('active', 'closed')"),
    ("bank_code_format", "warn", "NOT regexp_matches(bank_code, '^[0-9]{3}$')"),
    ("opened_date_not_null", "fail", "opened_date IS NULL"),
    ("opened_date_valid", "fail", "NOT zd_valid_yyyymmdd(opened_date)"),
]
KEYS = {"mois.residents": "resident_id", "mois.households": "household_id", "nts.income": "income_id",
        "nts.business_registrations": "business_registration_id", "moj.foreign_residents": "foreign_resident_id",
        "moel.employment_insurance": "enrolment_id", "moel.unemployment_benefits": "benefit_id",
        "mohw.basic_livelihood_recipients": "recipient_id", "mohw.disability_registry": "registration_id",
        "fsc.youth_leap_accounts": "account_id", "police.crime_victim_cases": "case_id"}


def _lit(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _parse(col: str) -> str:
    # dbt's parse_yyyymmdd: strict, so an impossible date that slipped through fails loudly.
    return f"CAST(strptime(nullif(trim({col}), ''), '%Y%m%d') AS DATE)"


class _Clock:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self.detail: dict[str, float] = {}

    def add(self, phase: str, step: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        self.detail[f"{phase}/{step}"] = round(seconds, 3)


def _count(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    return con.execute(f"SELECT count(*) FROM read_parquet({_lit(path)})").fetchone()[0]


def _validate(con: duckdb.DuckDBPyConnection, entity: str, raw: Path, valid: Path, quarantine: Path) -> dict:
    """One scan flags each row; failing rows' verdicts (a few percent) are kept; two COPYs split."""
    tag = entity.replace(".", "_")
    key, checks = KEYS[entity], CHECKS[entity]
    src = f"read_parquet({_lit(raw)}, file_row_number = true)"
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({_lit(raw)})").fetchall()]
    dups = f"dups_{tag}"
    con.execute(
        f"CREATE TEMP TABLE {dups} AS SELECT {key} AS k FROM read_parquet({_lit(raw)}) "
        f"WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1"
    )
    flags = ", ".join(
        f"coalesce({pred.replace('{dups}', dups)}, false) AS _c{i}" for i, (_, _, pred) in enumerate(checks)
    )
    any_flag = " OR ".join(f"_c{i}" for i in range(len(checks)))
    any_fail = " OR ".join(f"_c{i}" for i, (_, sev, _) in enumerate(checks) if sev == "fail")
    reasons = ", ".join(f"CASE WHEN _c{i} THEN {_lit(cid)} END" for i, (cid, _, _) in enumerate(checks))
    verdict = f"verdict_{tag}"
    con.execute(
        f"""CREATE TEMP TABLE {verdict} AS
            SELECT file_row_number AS _row, {", ".join(f"_c{i}" for i in range(len(checks)))},
                   {any_fail} AS _quarantined,
                   list_filter([{reasons}], lambda r: r IS NOT NULL) AS _reasons
            FROM (SELECT file_row_number, {flags} FROM {src})
            WHERE {any_flag}"""
    )
    per_check = ", ".join(f"count_if(_c{i})" for i in range(len(checks)))
    counts = con.execute(f"SELECT {per_check}, count_if(_quarantined) FROM {verdict}").fetchone()
    quarantined = int(counts[-1])
    col_list = ", ".join(f'r."{c}"' for c in cols)
    con.execute(
        f"""COPY (SELECT {col_list} FROM {src} r
                  ANTI JOIN (SELECT _row FROM {verdict} WHERE _quarantined) q ON r.file_row_number = q._row)
            TO {_lit(valid)} {PARQUET}"""
    )
    con.execute(
        f"""COPY (SELECT {col_list}, v._reasons FROM {src} r
                  JOIN {verdict} v ON r.file_row_number = v._row WHERE v._quarantined)
            TO {_lit(quarantine)} {PARQUET}"""
    )
    extracted = _count(con, raw)
    passed = _count(con, valid)
    if extracted != passed + quarantined:
        raise AssertionError(
            f"{entity}: extracted {extracted} != passed {passed} + quarantined {quarantined}"
        )
    con.execute(f"DROP TABLE {dups}")
    con.execute(f"DROP TABLE {verdict}")
    return {
        "extracted": extracted,
        "passed": passed,
        "quarantined": quarantined,
        "checks": {cid: int(n) for (cid, _, _), n in zip(checks, counts[:-1], strict=True)},
    }


def _extract_csv(con: duckdb.DuckDBPyConnection, entity: str, drop_dir: Path, raw: Path, tmp: Path) -> None:
    """Decode each delivery file (BOM / UTF-8 / CP949), read it with DuckDB, keep unreadable records as rows."""
    files = []
    tmp.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(drop_dir.glob("*/*.csv"))):
        data = f.read_bytes()
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        else:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                data = data.decode("cp949").encode("utf-8")
        out = tmp / f"{i}.csv"
        out.write_bytes(data)
        files.append(out)
    if not files:
        raise FileNotFoundError(f"no CSV delivery for {entity} under {drop_dir}")
    tag = entity.replace(".", "_")
    cols = CSV_COLUMNS[entity]
    spec = ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in cols)
    con.execute(
        f"""CREATE TEMP TABLE csv_{tag} AS SELECT * FROM read_csv([{", ".join(_lit(f) for f in files)}],
            header = true, auto_detect = false, delim = ',', quote = '"', escape = '"', columns = {{{spec}}},
            store_rejects = true, rejects_table = 'rej_{tag}', rejects_scan = 'scan_{tag}')"""
    )
    typed, errors, flags = [], [], []
    for c, typ in cols.items():
        if typ == "VARCHAR":
            typed.append(f'"{c}"')
            flags.append(f"CASE WHEN regexp_matches(\"{c}\", {_lit(FORMULA)}) THEN 'formula_text: {c}' END")
            continue
        conv = (f"try_strptime(\"{c}\", '%Y-%m-%d %H:%M:%S')" if typ == "TIMESTAMP"
                else f'TRY_CAST("{c}" AS {typ})')
        typed.append(f'{conv} AS "{c}"')
        errors.append(f"CASE WHEN \"{c}\" IS NOT NULL AND {conv} IS NULL THEN 'column {c}: ' || \"{c}\" END")
    nulls = ", ".join(f'CAST(NULL AS {typ}) AS "{c}"' for c, typ in cols.items())
    con.execute(
        f"""COPY (
            SELECT {", ".join(typed)},
                   nullif(concat_ws('; ', {", ".join(errors)}), '') AS _parse_error,
                   nullif(concat_ws('; ', {", ".join(flags)}), '') AS _flags
            FROM csv_{tag}
            UNION ALL
            SELECT {nulls}, 'line ' || line || ': ' || any_value(error_message) AS _parse_error,
                   CAST(NULL AS VARCHAR) AS _flags
            FROM rej_{tag} GROUP BY scan_id, file_id, line
        ) TO {_lit(raw)} {PARQUET}"""
    )
    con.execute(f"DROP TABLE csv_{tag}")
    shutil.rmtree(tmp, ignore_errors=True)


def _age(born: str, as_of: str) -> str:
    # dbt's age_on: full years, a 29 February birthday counts from 1 March in common years.
    return (f"(date_diff('year', {born}, {as_of}) - CASE WHEN strftime({as_of}, '%m%d') < strftime({born}, '%m%d') "
            f"THEN 1 ELSE 0 END)")


def _in_force(alias: str, as_of: str) -> str:
    return f"({alias}.effective_from <= {as_of} AND ({alias}.effective_to IS NULL OR {as_of} <= {alias}.effective_to))"


def _staging_sql(validated: dict[str, Path], as_of: str) -> dict[str, str]:
    """The dbt project's staging models and the marts' shared inputs, as temp tables (each HMAC computed
    once); the person spine is a view, as int_persons is."""
    d = f"CAST({_lit(as_of)} AS DATE)"
    age = _age("born_on", d)
    frn = "CAST(frn AS VARCHAR)"
    frn_birth = f"CASE WHEN substr({frn}, 8, 1) IN ('5', '6') THEN '19' ELSE '20' END || substr({frn}, 1, 6)"
    return {
        # int_residents_deduplicated: the citizens, one registry row per person.
        "residents": f"""CREATE TEMP TABLE residents AS
            SELECT * FROM (
                SELECT CAST(resident_id AS BIGINT) AS resident_id,
                       zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                       CAST(sex AS VARCHAR) AS sex,
                       {_parse("birth_date")} AS born_on,
                       CAST(household_id AS BIGINT) AS household_id,
                       CAST(sigungu_code AS VARCHAR) AS sigungu_code,
                       {_parse("moved_in_date")} AS moved_in_on,
                       CAST(updated_at AS TIMESTAMP) AS updated_at
                FROM read_parquet({_lit(validated["mois.residents"])}))
            QUALIFY row_number() OVER (
                PARTITION BY subject_pseudonym
                ORDER BY updated_at DESC NULLS LAST, moved_in_on DESC NULLS LAST, resident_id DESC) = 1""",
        # stg_moj__foreign_residents: sex and birth date from the registration number (7th digit 5-8).
        "foreign_residents": f"""CREATE TEMP TABLE foreign_residents AS
            SELECT CAST(foreign_resident_id AS BIGINT) AS foreign_resident_id,
                   zd_pseudonym({frn}) AS subject_pseudonym,
                   CASE WHEN substr({frn}, 8, 1) IN ('5', '7') THEN 'M' ELSE 'F' END AS sex,
                   {_parse(frn_birth)} AS born_on,
                   CAST(nationality AS VARCHAR) AS nationality_code,
                   CAST(visa_type AS VARCHAR) AS visa_type,
                   CAST(sigungu_code AS VARCHAR) AS sigungu_code,
                   {_parse("entry_date")} AS entered_on,
                   {_parse("registered_date")} AS registered_on,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["moj.foreign_residents"])})""",
        # int_persons: citizens and foreign residents (one card per person; no MOIS household).
        "persons": """CREATE TEMP VIEW persons AS
            SELECT subject_pseudonym, 'citizen' AS person_kind, sex, born_on, household_id, sigungu_code
            FROM residents
            UNION ALL
            SELECT subject_pseudonym, 'foreign_resident' AS person_kind, sex, born_on,
                   CAST(NULL AS BIGINT) AS household_id, sigungu_code
            FROM (SELECT * FROM foreign_residents
                  QUALIFY row_number() OVER (
                      PARTITION BY subject_pseudonym
                      ORDER BY updated_at DESC NULLS LAST, registered_on DESC NULLS LAST,
                               foreign_resident_id DESC) = 1)""",
        "households_sized": f"""CREATE TEMP TABLE households_sized AS
            SELECT CAST(h.household_id AS BIGINT) AS household_id,
                   CAST(h.head_resident_id AS BIGINT) AS head_resident_id,
                   coalesce(m.household_size, 0) AS household_size
            FROM read_parquet({_lit(validated["mois.households"])}) h
            LEFT JOIN (SELECT household_id, count(*) AS household_size FROM residents GROUP BY 1) m
                ON CAST(h.household_id AS BIGINT) = m.household_id""",
        "incomes": f"""CREATE TEMP TABLE incomes AS
            SELECT subject_pseudonym, tax_year, earned_income_krw, business_income_krw, other_income_krw,
                   earned_income_krw + business_income_krw + other_income_krw AS total_income_krw, filed_on
            FROM (
                SELECT CAST(income_id AS BIGINT) AS income_id,
                       zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                       CAST(tax_year AS INTEGER) AS tax_year,
                       CAST(earned_income AS BIGINT) AS earned_income_krw,
                       CAST(business_income AS BIGINT) AS business_income_krw,
                       CAST(other_income AS BIGINT) AS other_income_krw,
                       {_parse("filed_date")} AS filed_on,
                       CAST(updated_at AS TIMESTAMP) AS updated_at
                FROM read_parquet({_lit(validated["nts.income"])}))
            QUALIFY row_number() OVER (
                PARTITION BY subject_pseudonym, tax_year
                ORDER BY filed_on DESC NULLS LAST, updated_at DESC NULLS LAST, income_id DESC) = 1""",
        "latest_incomes": f"""CREATE TEMP TABLE latest_incomes AS
            SELECT subject_pseudonym, tax_year, earned_income_krw,
                   business_income_krw + other_income_krw AS comprehensive_income_krw, total_income_krw
            FROM incomes WHERE tax_year < year({d})
            QUALIFY row_number() OVER (PARTITION BY subject_pseudonym ORDER BY tax_year DESC) = 1""",
        # household_v1's rows: the spine's members with a MOIS household (citizens: residents).
        "household": f"""CREATE TEMP TABLE household AS
            WITH medians AS (SELECT * FROM standard_median_incomes m WHERE {_in_force("m", d)}),
            member_incomes AS (
                SELECT p.household_id, count(i.subject_pseudonym) AS members_with_income,
                       CAST(coalesce(sum(i.total_income_krw), 0) AS BIGINT) AS household_income_krw,
                       max(i.tax_year) AS latest_tax_year
                FROM residents p LEFT JOIN latest_incomes i ON p.subject_pseudonym = i.subject_pseudonym
                WHERE p.household_id IS NOT NULL
                GROUP BY p.household_id)
            SELECT h.household_id, h.household_size,
                   coalesce(mi.members_with_income, 0) AS members_with_income,
                   coalesce(mi.household_income_krw, 0) AS household_income_krw,
                   mi.latest_tax_year, e.rule_id AS median_rule_id, e.median_year,
                   CAST(CASE WHEN h.household_size <= 7 THEN e.median_income_krw
                        ELSE s7.median_income_krw
                             + (h.household_size - 7) * (s7.median_income_krw - s6.median_income_krw)
                        END AS BIGINT) AS median_income_krw
            FROM households_sized h
            LEFT JOIN member_incomes mi ON h.household_id = mi.household_id
            LEFT JOIN medians e ON e.household_size = least(h.household_size, 7)
            LEFT JOIN medians s6 ON s6.household_size = 6
            LEFT JOIN medians s7 ON s7.household_size = 7
            WHERE h.household_size > 0""",
        "youth_leap_accounts": f"""CREATE TEMP TABLE youth_leap_accounts AS
            SELECT CAST(account_id AS BIGINT) AS account_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(bank_code AS VARCHAR) AS bank_code,
                   {_parse("opened_date")} AS opened_on,
                   CAST(monthly_contribution AS BIGINT) AS monthly_contribution_krw,
                   CAST(government_match AS BIGINT) AS government_match_krw,
                   CAST(status AS VARCHAR) = 'active' AS is_active,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["fsc.youth_leap_accounts"])})""",
        # youth_leap_eligibility_v1 decides citizens only (person_kind = 'citizen': residents); a holder
        # of an open account (int_youth_leap_accounts_active) is not eligible.
        "youth": f"""CREATE TEMP TABLE youth AS
            WITH decided AS (
                SELECT p.subject_pseudonym, r.rule_id, h.median_rule_id,
                       {age.replace("born_on", "p.born_on")} AS age_on_as_of,
                       li.tax_year AS income_tax_year,
                       coalesce(li.earned_income_krw, 0) AS earned_income_krw,
                       coalesce(li.comprehensive_income_krw, 0) AS comprehensive_income_krw,
                       coalesce(li.total_income_krw, 0) AS total_income_krw,
                       p.household_id, h.household_size, h.household_income_krw, h.median_income_krw,
                       r.percent_of_median, r.min_age, r.max_age, r.max_earned_income_krw,
                       r.max_comprehensive_income_krw,
                       p.subject_pseudonym IN (SELECT subject_pseudonym FROM youth_leap_accounts WHERE is_active)
                           AS has_open_account
                FROM residents p
                CROSS JOIN (SELECT * FROM programme_thresholds t
                            WHERE t.programme = 'youth_leap_account' AND {_in_force("t", d)}) r
                LEFT JOIN latest_incomes li ON p.subject_pseudonym = li.subject_pseudonym
                LEFT JOIN household h ON p.household_id = h.household_id),
            flagged AS (
                SELECT *, coalesce(age_on_as_of BETWEEN min_age AND max_age, false) AS is_age_eligible,
                       total_income_krw > 0 AND earned_income_krw <= max_earned_income_krw
                           AND comprehensive_income_krw <= max_comprehensive_income_krw
                           AS is_individual_income_eligible,
                       coalesce(CAST(household_income_krw AS HUGEINT) * 100
                                <= CAST(percent_of_median AS HUGEINT) * 12 * median_income_krw, false)
                           AS is_household_income_eligible
                FROM decided)
            SELECT subject_pseudonym, rule_id, median_rule_id, CAST(age_on_as_of AS INTEGER) AS age_on_as_of,
                   income_tax_year, earned_income_krw, comprehensive_income_krw, household_id, household_size,
                   household_income_krw, median_income_krw, percent_of_median, is_age_eligible,
                   is_individual_income_eligible, is_household_income_eligible, has_open_account,
                   is_age_eligible AND is_individual_income_eligible AND is_household_income_eligible
                       AND NOT has_open_account AS is_eligible,
                   CASE WHEN has_open_account THEN 'already_holds_account'
                        WHEN NOT is_age_eligible THEN 'age_out_of_range'
                        WHEN total_income_krw <= 0 THEN 'no_earned_or_business_income'
                        WHEN NOT is_individual_income_eligible THEN 'individual_income_above_ceiling'
                        WHEN median_income_krw IS NULL THEN 'household_or_median_unknown'
                        WHEN NOT is_household_income_eligible THEN 'household_income_above_ceiling'
                   END AS ineligibility_reason,
                   {d} AS as_of
            FROM flagged""",
        "enrolments": f"""CREATE TEMP TABLE enrolments AS
            SELECT CAST(enrolment_id AS BIGINT) AS enrolment_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(employer_brn AS VARCHAR) AS employer_brn,
                   {_parse("acquired_date")} AS acquired_on, {_parse("lost_date")} AS lost_on,
                   CAST(monthly_wage AS BIGINT) AS monthly_wage_krw
            FROM read_parquet({_lit(validated["moel.employment_insurance"])})""",
        "cases": f"""CREATE TEMP TABLE cases AS
            SELECT CAST(case_id AS BIGINT) AS case_id,
                   zd_pseudonym(CAST(victim_rrn AS VARCHAR)) AS subject_pseudonym,
                   substr(replace(CAST(victim_rrn AS VARCHAR), '-', ''), 7, 1) IN ('5', '6', '7', '8')
                       AS is_foreign_registration,
                   CAST(crime_type AS VARCHAR) AS crime_type,
                   {_parse("incident_date")} AS incident_on, {_parse("reported_date")} AS reported_on
            FROM read_parquet({_lit(validated["police.crime_victim_cases"])})""",
        # The staging models no mart reads yet: the pipeline builds them, so the baseline does too.
        "business_registrations": f"""CREATE TEMP TABLE business_registrations AS
            SELECT CAST(business_registration_id AS BIGINT) AS business_registration_id,
                   CAST(brn AS VARCHAR) AS business_registration_number,
                   zd_pseudonym(CAST(owner_rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(business_type AS VARCHAR) AS business_type,
                   {_parse("opened_date")} AS opened_on, {_parse("closed_date")} AS closed_on,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["nts.business_registrations"])})""",
        "unemployment_benefits": f"""CREATE TEMP TABLE unemployment_benefits AS
            SELECT CAST(benefit_id AS BIGINT) AS benefit_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   {_parse("claim_date")} AS claimed_on, {_parse("benefit_start_date")} AS benefit_started_on,
                   CAST(benefit_days AS INTEGER) AS benefit_days,
                   CAST(daily_amount AS BIGINT) AS daily_amount_krw,
                   CAST(total_paid AS BIGINT) AS total_paid_krw,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["moel.unemployment_benefits"])})""",
        "livelihood_recipients": f"""CREATE TEMP TABLE livelihood_recipients AS
            SELECT CAST(recipient_id AS BIGINT) AS recipient_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(household_size AS INTEGER) AS household_size,
                   CAST(benefit_types AS VARCHAR) AS benefit_types,
                   CAST(monthly_benefit AS BIGINT) AS monthly_benefit_krw,
                   {_parse("selected_date")} AS selected_on,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["mohw.basic_livelihood_recipients"])})""",
        "disability_registrations": f"""CREATE TEMP TABLE disability_registrations AS
            SELECT CAST(registration_id AS BIGINT) AS registration_id,
                   zd_pseudonym(CAST(rrn AS VARCHAR)) AS subject_pseudonym,
                   CAST(disability_type AS VARCHAR) AS disability_type,
                   CAST(severity AS VARCHAR) = '심한 장애' AS is_severe,
                   {_parse("registered_date")} AS registered_on,
                   CAST(updated_at AS TIMESTAMP) AS updated_at
            FROM read_parquet({_lit(validated["mohw.disability_registry"])})""",
    }


VICTIM_AREAS = ("legal_aid", "relief_fund", "emergency_livelihood", "employment_support", "financial_support")


def _mart_sql(as_of: str) -> dict[str, str]:
    """One SELECT per shared mart over the staging temp tables, columns as in the dbt contracts."""
    d = f"CAST({_lit(as_of)} AS DATE)"
    age = _age("born_on", d)
    band = (f"CASE WHEN {age} >= 80 THEN '80+' ELSE lpad(CAST(10 * ({age} // 10) AS VARCHAR), 2, '0') || '-' "
            f"|| lpad(CAST(10 * ({age} // 10) + 9 AS VARCHAR), 2, '0') END")
    areas_decided = ",\n".join(
        f"""{a}.rule_id AS {a}_rule_id,
            CASE WHEN {a}.rule_id IS NULL THEN 'no_rule_in_force'
                 WHEN i.is_foreigner AND NOT {a}.is_foreigner_eligible THEN 'foreigner_not_covered'
                 WHEN {a}.qualifying_crime_types IS NOT NULL
                      AND NOT list_contains(string_split({a}.qualifying_crime_types, '|'), i.crime_type)
                      THEN 'crime_type_not_covered'
                 WHEN {a}.claim_window_years IS NOT NULL
                      AND {d} > CAST(i.incident_on + to_years({a}.claim_window_years) AS DATE)
                      THEN 'claim_window_passed'
                 WHEN ({a}.min_age IS NOT NULL OR {a}.max_age IS NOT NULL) AND i.age_on_as_of IS NULL
                      THEN 'age_unknown'
                 WHEN i.age_on_as_of < {a}.min_age OR i.age_on_as_of > {a}.max_age THEN 'age_out_of_range'
                 WHEN {a}.requires_uninsured AND i.is_employment_insured THEN 'currently_employed'
                 WHEN {a}.excludes_livelihood_recipients AND i.receives_livelihood_benefit
                      THEN 'receives_livelihood_benefit'
                 WHEN {a}.max_percent_of_median IS NOT NULL
                      AND (i.median_income_krw IS NULL OR i.household_income_krw IS NULL)
                      THEN 'household_or_median_unknown'
                 WHEN {a}.max_percent_of_median IS NOT NULL
                      AND CAST(i.household_income_krw AS HUGEINT) * 100
                          > CAST({a}.max_percent_of_median AS HUGEINT) * 12 * i.median_income_krw
                      THEN 'household_income_above_ceiling'
            END AS {a}_reason"""
        for a in VICTIM_AREAS
    )
    area_joins = "\n".join(f"LEFT JOIN rules {a} ON {a}.support_area = '{a}'" for a in VICTIM_AREAS)
    area_cols = ", ".join(f"{a}_reason IS NULL AS {a}_eligible, {a}_rule_id, {a}_reason" for a in VICTIM_AREAS)
    return {
        "residence_v1": f"""
            SELECT p.subject_pseudonym, left(p.sigungu_code, 2) AS sido_code, g.sido_name, p.sigungu_code,
                   g.sigungu_name, p.household_id, h.household_size,
                   coalesce(h.head_resident_id = p.resident_id, false) AS is_household_head, p.moved_in_on,
                   {d} AS as_of
            FROM residents p
            LEFT JOIN households_sized h ON p.household_id = h.household_id
            LEFT JOIN regions g ON p.sigungu_code = g.sigungu_code""",
        "income_v1": f"SELECT *, {d} AS as_of FROM incomes",
        "household_v1": f"""
            SELECT household_id, household_size, members_with_income, household_income_krw, latest_tax_year,
                   median_rule_id, median_year, median_income_krw,
                   CAST(household_income_krw AS DOUBLE) / 12 / median_income_krw AS income_to_median_ratio,
                   {d} AS as_of
            FROM household""",
        "living_population_by_region_v1": f"""
            WITH banded AS (
                SELECT sigungu_code, sex, {band} AS age_band FROM persons
                WHERE born_on IS NOT NULL AND sex IN ('M', 'F') AND sigungu_code IS NOT NULL),
            grid AS (
                SELECT s.sigungu_code, b.age_band, x.sex
                FROM (SELECT DISTINCT sigungu_code FROM banded) s
                CROSS JOIN (VALUES ('00-09'), ('10-19'), ('20-29'), ('30-39'), ('40-49'), ('50-59'), ('60-69'),
                                   ('70-79'), ('80+')) b (age_band)
                CROSS JOIN (VALUES ('M'), ('F')) x (sex)),
            cells AS (
                SELECT g.sigungu_code, g.age_band, g.sex, count(b.sigungu_code) AS population
                FROM grid g LEFT JOIN banded b
                    ON g.sigungu_code = b.sigungu_code AND g.age_band = b.age_band AND g.sex = b.sex
                GROUP BY ALL),
            ranked AS (
                SELECT *, row_number() OVER w AS cell_rank,
                       sum(population) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running,
                       count_if(population < 5) OVER (PARTITION BY sigungu_code) AS primary_cells,
                       sum(population) OVER (PARTITION BY sigungu_code) AS sigungu_population
                FROM cells WINDOW w AS (PARTITION BY sigungu_code ORDER BY population, age_band, sex)),
            depth AS (
                SELECT sigungu_code, max(primary_cells) AS primary_cells,
                       min(cell_rank) FILTER (WHERE cell_rank >= primary_cells AND cell_rank >= 2 AND running >= 5)
                           AS safe_depth
                FROM ranked GROUP BY sigungu_code),
            all_rows AS (
                SELECT r.sigungu_code, r.age_band, r.sex, false AS is_total, r.population,
                       CASE WHEN r.population < 5 THEN 'primary'
                            WHEN d.primary_cells > 0 AND (d.safe_depth IS NULL OR r.cell_rank <= d.safe_depth)
                            THEN 'secondary' END AS reason
                FROM ranked r JOIN depth d ON r.sigungu_code = d.sigungu_code
                UNION ALL
                SELECT d.sigungu_code, 'total', 'total', true, t.sigungu_population,
                       CASE WHEN d.primary_cells > 0 AND d.safe_depth IS NULL THEN 'primary' END
                FROM depth d JOIN (SELECT DISTINCT sigungu_code, sigungu_population FROM ranked) t
                    ON d.sigungu_code = t.sigungu_code)
            SELECT left(a.sigungu_code, 2) AS sido_code, g.sido_name, a.sigungu_code, g.sigungu_name, a.age_band,
                   a.sex, a.is_total, CAST(CASE WHEN a.reason IS NULL THEN a.population END AS BIGINT) AS population,
                   a.reason IS NOT NULL AS is_suppressed, a.reason AS suppression_reason, {d} AS as_of
            FROM all_rows a LEFT JOIN regions g ON a.sigungu_code = g.sigungu_code""",
        "youth_leap_eligibility_v1": "SELECT * FROM youth",
        # First run on an empty history: every eligible person is new (the dbt model's first run).
        "benefit_notifications_v1": """
            SELECT md5(subject_pseudonym || '|youth_leap_account') AS notification_id, subject_pseudonym,
                   'youth_leap_account' AS programme, rule_id,
                   'age ' || age_on_as_of || '; earned ' || earned_income_krw || ' KRW, comprehensive '
                   || comprehensive_income_krw || ' KRW (tax year ' || income_tax_year || ')' || '; household '
                   || household_income_krw || ' KRW/yr vs ' || percent_of_median || '% of median '
                   || median_income_krw || ' KRW/month for ' || household_size || ' (' || median_rule_id || ')'
                       AS reason,
                   as_of AS eligible_on
            FROM youth WHERE is_eligible""",
        "employment_v1": f"""
            WITH known AS (SELECT * FROM enrolments WHERE acquired_on <= {d}),
            summarised AS (
                SELECT subject_pseudonym, count(*) AS n,
                       count(*) FILTER (WHERE lost_on IS NULL OR lost_on > {d}) AS n_current,
                       max(lost_on) FILTER (WHERE lost_on <= {d}) AS last_lost_on
                FROM known GROUP BY subject_pseudonym),
            current_jobs AS (
                SELECT subject_pseudonym, employer_brn, acquired_on, monthly_wage_krw FROM known
                WHERE lost_on IS NULL OR lost_on > {d}
                QUALIFY row_number() OVER (PARTITION BY subject_pseudonym ORDER BY acquired_on DESC,
                                           enrolment_id DESC) = 1)
            SELECT s.subject_pseudonym, s.n_current > 0 AS is_insured, c.employer_brn AS current_employer_brn,
                   c.acquired_on AS insured_since, c.monthly_wage_krw AS current_monthly_wage_krw,
                   CAST(s.n_current AS INTEGER) AS current_enrolment_count, CAST(s.n AS INTEGER) AS enrolment_count,
                   s.last_lost_on, {d} AS as_of
            FROM summarised s LEFT JOIN current_jobs c ON s.subject_pseudonym = c.subject_pseudonym""",
        "victim_support_eligibility_v1": f"""
            WITH rules AS (SELECT * FROM victim_support_rules r WHERE {_in_force("r", d)}),
            latest AS (
                SELECT * FROM cases WHERE incident_on <= {d} AND coalesce(reported_on, incident_on) <= {d}
                QUALIFY row_number() OVER (PARTITION BY subject_pseudonym ORDER BY incident_on DESC,
                                           case_id DESC) = 1),
            insured AS (
                SELECT DISTINCT subject_pseudonym FROM enrolments
                WHERE acquired_on <= {d} AND (lost_on IS NULL OR lost_on > {d})),
            livelihood AS (  -- 생계급여 recipients selected by as_of and their MOIS household
                SELECT r.subject_pseudonym, p.household_id FROM livelihood_recipients r
                LEFT JOIN persons p ON r.subject_pseudonym = p.subject_pseudonym
                WHERE list_contains(string_split(r.benefit_types, ','), '생계') AND r.selected_on <= {d}),
            i AS (
                SELECT l.subject_pseudonym, l.case_id, l.crime_type, l.incident_on,
                       l.is_foreign_registration OR coalesce(p.person_kind <> 'citizen', false) AS is_foreigner,
                       CAST({age.replace("born_on", "p.born_on")} AS INTEGER) AS age_on_as_of, p.household_id,
                       h.household_size, h.household_income_krw, h.median_income_krw, h.median_rule_id,
                       ins.subject_pseudonym IS NOT NULL AS is_employment_insured,
                       coalesce(l.subject_pseudonym IN (SELECT subject_pseudonym FROM livelihood)
                                OR p.household_id IN (SELECT household_id FROM livelihood
                                                      WHERE household_id IS NOT NULL), false)
                           AS receives_livelihood_benefit
                FROM latest l
                LEFT JOIN persons p ON l.subject_pseudonym = p.subject_pseudonym
                LEFT JOIN household h ON p.household_id = h.household_id
                LEFT JOIN insured ins ON l.subject_pseudonym = ins.subject_pseudonym),
            decided AS (
                SELECT i.*, {areas_decided}
                FROM i {area_joins})
            SELECT subject_pseudonym, {area_cols}, case_id, crime_type, incident_on, is_foreigner, age_on_as_of,
                   household_id, household_size, household_income_krw, median_income_krw, median_rule_id,
                   is_employment_insured, receives_livelihood_benefit,
                   CAST(json_object('case_id', case_id, 'crime_type', crime_type, 'incident_on', incident_on,
                                    'is_foreigner', is_foreigner, 'age_on_as_of', age_on_as_of,
                                    'household_size', household_size, 'household_income_krw', household_income_krw,
                                    'median_income_krw', median_income_krw, 'median_rule_id', median_rule_id,
                                    'is_employment_insured', is_employment_insured,
                                    'receives_livelihood_benefit', receives_livelihood_benefit) AS VARCHAR) AS inputs,
                   {d} AS as_of
            FROM decided""",
    }


def run_baseline(
    sources_dir: Path,
    out_dir: Path,
    key: bytes,
    threads: int | None = None,
    *,
    as_of: str | None = None,
) -> dict:
    """Extract, validate and build the eight shared marts under `out_dir`; return timings and counts.

    `as_of` is the logical date stamped on the marts (the pipeline's `ds`), default today (UTC).
    """
    sources_dir, out_dir = Path(sources_dir), Path(out_dir)
    as_of = as_of or dt.datetime.now(dt.UTC).date().isoformat()
    threads = threads or len(os.sched_getaffinity(0))
    clock = _Clock()
    start = time.perf_counter()

    zones = {z: out_dir / z for z in ("raw", "validated", "quarantine", "marts")}
    for zone in zones.values():
        shutil.rmtree(zone, ignore_errors=True)
    paths: dict[str, dict[str, Path]] = {z: {} for z in zones}
    for entity in ENTITIES:
        agency, name = entity.split(".")
        for z in ("raw", "validated", "quarantine"):
            paths[z][entity] = zones[z] / agency / f"{name}.parquet"
            paths[z][entity].parent.mkdir(parents=True, exist_ok=True)
    zones["marts"].mkdir(parents=True, exist_ok=True)

    con = duckdb.connect(
        ":memory:",
        config={
            "memory_limit": MEMORY_LIMIT,
            "threads": threads,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        con.execute(f"SET temp_directory = {_lit(out_dir / '.duckdb_tmp')}")
        for macro in _identifier_macros():
            con.execute(macro)
        con.execute(duckdb_macro_sql(key))

        rows: dict[str, int] = {}
        for entity in ENTITIES:
            agency, name = entity.split(".")
            t = time.perf_counter()
            if entity in CSV_COLUMNS:
                _extract_csv(con, entity, sources_dir / "drop" / agency / name, paths["raw"][entity],
                             out_dir / ".csv_tmp" / entity)
            else:
                parse_error = ", CAST(NULL AS VARCHAR) AS _parse_error" if entity in REST_ENTITIES else ""
                con.execute(
                    f"COPY (SELECT *{parse_error} FROM read_parquet({_lit(sources_dir / agency / f'{name}.parquet')})) "
                    f"TO {_lit(paths['raw'][entity])} {PARQUET}"
                )
            clock.add("extract", entity, time.perf_counter() - t)

        validation: dict[str, dict] = {}
        for entity in ENTITIES:
            t = time.perf_counter()
            validation[entity] = _validate(
                con, entity, paths["raw"][entity], paths["validated"][entity], paths["quarantine"][entity]
            )
            clock.add("validate", entity, time.perf_counter() - t)
            rows[f"{entity}.extracted"] = validation[entity]["extracted"]
            rows[f"{entity}.passed"] = validation[entity]["passed"]

        t = time.perf_counter()
        for seed, types in SEED_TYPES.items():
            cols = ", ".join(f"{_lit(c)}: {_lit(typ)}" for c, typ in types.items())
            con.execute(
                f"CREATE TEMP TABLE {seed} AS SELECT * FROM read_csv({_lit(SEEDS / f'{seed}.csv')}, "
                f"header = true, auto_detect = false, delim = ',', quote = '\"', columns = {{{cols}}})"
            )
        for table, sql in _staging_sql(paths["validated"], as_of).items():
            t1 = time.perf_counter()
            con.execute(sql)
            clock.detail[f"transform/staging_{table}"] = round(time.perf_counter() - t1, 3)
        for mart, sql in _mart_sql(as_of).items():
            t1 = time.perf_counter()
            path = zones["marts"] / f"{mart}.parquet"
            con.execute(f"COPY ({sql}) TO {_lit(path)} {PARQUET}")
            rows[mart] = _count(con, path)
            clock.detail[f"transform/{mart}"] = round(time.perf_counter() - t1, 3)
        clock.phases["transform"] = time.perf_counter() - t
    finally:
        con.close()
        shutil.rmtree(out_dir / ".duckdb_tmp", ignore_errors=True)

    return {
        "seconds": round(time.perf_counter() - start, 3),
        "phases": {k: round(v, 3) for k, v in clock.phases.items()},
        "phase_detail": clock.detail,
        "threads": threads,
        "rows": rows,
        "quarantined": {e: v["quarantined"] for e, v in validation.items()},
        "checks": {e: v["checks"] for e, v in validation.items()},
        "outputs": {z: str(p) for z, p in zones.items()},
    }


def main(argv: list[str] | None = None) -> int:
    from zerodoc.config import pseudonym_key_from_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=Path, required=True, help="dir holding <agency>/<entity>.parquet")
    parser.add_argument("--out", type=Path, required=True, help="output dir (raw/validated/quarantine/marts)")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all CPUs)")
    parser.add_argument("--as-of", default=None, help="logical date YYYY-MM-DD stamped on the marts")
    args = parser.parse_args(argv)
    result = run_baseline(args.sources, args.out, pseudonym_key_from_env(), args.threads, as_of=args.as_of)
    json.dump(result, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
