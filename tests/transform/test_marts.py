"""The rule-driven marts: official median figures, household vs median, Youth Leap, suppression, notifications."""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections import Counter

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerodoc.config import REPO_ROOT as REPO
from zerodoc.config import Settings
from zerodoc.privacy import pseudonymize
from zerodoc.transform.runner import contract_hash, run_dbt

from .conftest import DS, write_validated_zone

# 기준 중위소득, monthly KRW, sizes 1–7 (MOHW announcements; sources in seeds/_seeds.yml).
OFFICIAL_MEDIANS = {
    2024: [2_228_445, 3_682_609, 4_714_657, 5_729_913, 6_695_735, 7_618_369, 8_514_994],
    2025: [2_392_013, 3_932_658, 5_025_353, 6_097_773, 7_108_192, 8_064_805, 8_988_428],
    2026: [2_564_238, 4_199_292, 5_359_036, 6_494_738, 7_556_719, 8_555_952, 9_515_150],
}
NEW_MARTS = (
    "household_v1",
    "living_population_by_region_v1",
    "youth_leap_eligibility_v1",
    "benefit_notifications_v1",
    "victim_support_eligibility_v1",
    "employment_v1",
)
VICTIM_AREAS = ("legal_aid", "relief_fund", "emergency_livelihood", "employment_support", "financial_support")


def _rows(cfg: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_median_seed_holds_the_official_figures_with_year_long_validity():
    seed = Settings.from_env().dbt_project_dir / "seeds" / "standard_median_incomes.csv"
    with seed.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    got: dict[int, list[int]] = {}
    for r in sorted(rows, key=lambda r: (int(r["median_year"]), int(r["household_size"]))):
        year = int(r["median_year"])
        assert (r["effective_from"], r["effective_to"]) == (f"{year}-01-01", f"{year}-12-31")
        assert r["rule_id"] == f"SMI-{year}" and r["source"]
        got.setdefault(year, []).append(int(r["median_income_krw"]))
    assert got == OFFICIAL_MEDIANS


def test_new_marts_build_with_enforced_contracts(built):
    cfg, summary = built
    ids = {n.unique_id for n in summary.nodes}
    for mart in NEW_MARTS:
        assert f"model.zerodoc.{mart}" in ids
        assert len(contract_hash(mart, cfg)) == 64
    assert "test.zerodoc.assert_population_suppressed_cells_not_derivable" in ids
    statuses = {n.unique_id: n.status for n in summary.nodes}
    for unit in (
        "test_victim_support_thresholds_ages_households_and_foreigners",
        "test_victim_support_as_of_a_past_date",
    ):
        assert statuses[f"unit_test.zerodoc.victim_support_eligibility_v1.{unit}"] == "pass"
    assert statuses["unit_test.zerodoc.employment_v1.test_employment_status_on_as_of"] == "pass"


def test_every_contracted_not_null_column_is_not_null_in_the_warehouse(built):
    """Mart columns with a not_null constraint carry no not_null data test: DuckDB must enforce it instead."""
    import yaml

    cfg, _ = built
    spec = yaml.safe_load((REPO / "dbt_project" / "models" / "marts" / "shared" / "_marts__models.yml").read_text())
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        kinds = dict(con.execute("select table_name, table_type from information_schema.tables"
                                 " where table_schema = 'shared'").fetchall())  # fmt: skip
        nullable = dict(((t, c), n) for t, c, n in con.execute(
            "select table_name, column_name, is_nullable from information_schema.columns where table_schema = 'shared'"
        ).fetchall())  # fmt: skip
    checked = 0
    for model in spec["models"]:
        for col in model.get("columns", []):
            if any(c.get("type") == "not_null" for c in col.get("constraints", [])):
                tests = [t for t in col.get("data_tests", []) if t == "not_null" or "not_null" in t]
                if kinds[model["name"]] == "VIEW":
                    assert tests, f"{model['name']}.{col['name']}: a view enforces nothing, keep the data test"
                else:
                    assert nullable[(model["name"], col["name"])] == "NO", (model["name"], col["name"])
                    checked += 1
    assert checked >= 24


def test_employment_status_per_person(built, pseudonym_key):
    cfg, _ = built
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    rows = _rows(
        cfg,
        "select subject_pseudonym, is_insured, current_employer_brn, cast(insured_since as varchar), "
        "cast(last_lost_on as varchar) from shared.employment_v1",
    )
    assert sorted(rows) == sorted(
        [
            (p("900404-1111111"), True, "1018100340", "2023-01-01", None),
            (p("800101-1234567"), False, None, None, "2024-06-30"),
        ]
    )


def test_person_spine_links_citizens_and_foreign_residents(built, pseudonym_key):
    cfg, _ = built
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    rows = _rows(
        cfg,
        "select subject_pseudonym, person_kind, sex, cast(born_on as varchar), household_id, sigungu_code "
        "from intermediate.int_persons",
    )
    # 이영희's two registry rows and the reissued card of 880808-6234567 each count once; the card
    # kept is the later-updated one (26350). Sex and birth date of a foreigner come from the number.
    assert sorted(rows) == sorted(
        [
            (p("800101-1234567"), "citizen", "M", "1980-01-01", 100, "11110"),
            (p("820202-2345678"), "citizen", "F", "1982-02-02", 100, "11110"),
            (p("100303-3456789"), "citizen", "M", "2010-03-03", 100, "11110"),
            (p("900404-1111111"), "citizen", "M", "1990-04-04", 200, "26350"),
            (p("880808-6234567"), "foreign_resident", "F", "1988-08-08", None, "26350"),
            (p("030303-7345678"), "foreign_resident", "M", "2003-03-03", None, "26350"),
        ]
    )
    # Foreign residents are counted in the living population (26350: 1 citizen + 2 foreigners, a
    # sigungu under 5 and so suppressed whole) but get no Youth Leap decision (no MOIS household).
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        youth = {r[0] for r in con.execute("select subject_pseudonym from shared.youth_leap_eligibility_v1").fetchall()}
        cells = con.execute(
            "select count(*), count_if(is_suppressed) from shared.living_population_by_region_v1 "
            "where sigungu_code = '26350'"
        ).fetchone()
    assert youth == {p("800101-1234567"), p("820202-2345678"), p("100303-3456789"), p("900404-1111111")}
    assert cells[0] == cells[1] > 0


def test_every_source_entity_has_a_pseudonymised_staging_model(built, pseudonym_key):
    """stg_<agency>__<entity>s for each entity of config/sources.yml; no raw ID column survives staging."""
    from zerodoc.catalog import agencies

    cfg, _ = built
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        tables = {r[0]: r[1] for r in con.execute(
            "select table_name, list(column_name) from information_schema.columns "
            "where table_schema = 'staging' and table_name like 'stg_%' and table_name not like '%__deleted_keys' "
            "group by table_name"
        ).fetchall()}  # fmt: skip
        owner = con.execute(
            "select subject_pseudonym from staging.stg_nts__business_registrations"
        ).fetchone()[0]
    for agency in agencies().values():
        for name, entity in agency.entities.items():
            stem = {"disability_registry": "disability_registration"}.get(name, name.removesuffix("s"))
            model = f"stg_{agency.code}__{stem}s"
            assert model in tables, f"{agency.code}.{name}: no staging model {model}"
            raw_ids = {"rrn", "frn", "owner_rrn", "victim_rrn"}
            if raw_ids & set(entity.columns):  # a person's national ID comes in: a pseudonym goes out
                assert "subject_pseudonym" in tables[model], model
            assert not (raw_ids | {"name", "address", "trade_name"}) & set(tables[model]), model
    assert owner == pseudonymize("800101-1234567", pseudonym_key)


def test_household_income_against_the_2025_median(built, pseudonym_key):
    cfg, _ = built
    rows = _rows(
        cfg,
        "select household_id, household_size, household_income_krw, median_rule_id, median_income_krw, "
        "round(income_to_median_ratio, 6) from shared.household_v1 order by household_id",
    )
    # Household 100: 김철수's 2024 income (31,000,100) is the only filing; 3 persons → 5,025,353.
    # Household 200: 박서준's amended 2024 return (13,750,000); 1 person → 2,392,013.
    assert rows == [
        (100, 3, 31_000_100, "SMI-2025", 5_025_353, round(31_000_100 / 12 / 5_025_353, 6)),
        (200, 1, 13_750_000, "SMI-2025", 2_392_013, round(13_750_000 / 12 / 2_392_013, 6)),
    ]


def test_youth_leap_rows_explain_themselves_and_feed_one_notification(built, pseudonym_key):
    cfg, _ = built
    rows = {
        r[0]: r[1:]
        for r in _rows(
            cfg,
            "select subject_pseudonym, rule_id, age_on_as_of, is_eligible, ineligibility_reason "
            "from shared.youth_leap_eligibility_v1",
        )
    }
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    assert rows[p("900404-1111111")] == ("YLA-2023-06", 34, True, None)
    assert rows[p("800101-1234567")] == ("YLA-2023-06", 45, False, "age_out_of_range")
    notes = _rows(
        cfg,
        "select subject_pseudonym, programme, cast(eligible_on as varchar) from shared.benefit_notifications_v1",
    )
    assert notes == [(p("900404-1111111"), "youth_leap_account", DS)]


def test_victim_support_rows_explain_each_area(built, pseudonym_key):
    import json

    cfg, summary = built
    cols = ", ".join(f"{a}_eligible, {a}_rule_id, {a}_reason" for a in VICTIM_AREAS)
    rows = {
        r[0]: r[1:]
        for r in _rows(
            cfg, f"select subject_pseudonym, case_id, {cols}, inputs from shared.victim_support_eligibility_v1"
        )
    }
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    assert set(rows) == {p("800101-1234567"), p("820202-2345678"), p("950505-5123456")}

    def areas(row):
        return {a: row[1 + 3 * i : 4 + 3 * i] for i, a in enumerate(VICTIM_AREAS)}

    rules = {
        "legal_aid": "LA-2024-01",
        "relief_fund": "RF-2024-01",
        "emergency_livelihood": "EL-2024-03",
        "employment_support": "ES-2024-01",
        "financial_support": "FS-2024-01",
    }
    # 김철수: the 2025 injury (case 2) decides; household of 3 at 51 % of the 2025 median; his
    # insured job ended in 2024. Eligible everywhere, each under the rule in force, except emergency
    # livelihood: his household already receives the livelihood benefit (이영희 is the recipient).
    kim = rows[p("800101-1234567")]
    assert kim[0] == 2
    assert areas(kim) == {
        a: (False, rules[a], "receives_livelihood_benefit") if a == "emergency_livelihood" else (True, rules[a], None)
        for a in VICTIM_AREAS
    }
    inputs = json.loads(kim[-1])
    assert inputs["household_size"] == 3 and inputs["household_income_krw"] == 31_000_100
    assert inputs["median_income_krw"] == 5_025_353 and inputs["is_employment_insured"] is False
    assert inputs["receives_livelihood_benefit"] is True
    # 이영희: fraud is no crime against life or body → no relief fund; she receives the livelihood benefit.
    lee = areas(rows[p("820202-2345678")])
    assert lee["relief_fund"] == (False, "RF-2024-01", "crime_type_not_covered")
    assert lee["emergency_livelihood"] == (False, rules["emergency_livelihood"], "receives_livelihood_benefit")
    # The foreign victim is not on the spine: household unknown where foreigners are covered (legal aid;
    # emergency livelihood, Emergency Aid Act Art. 5-2), and two areas do not cover foreigners.
    foreign = areas(rows[p("950505-5123456")])
    for a in ("legal_aid", "emergency_livelihood"):
        assert foreign[a] == (False, rules[a], "household_or_median_unknown")
    for a in ("relief_fund", "employment_support"):
        assert foreign[a] == (False, rules[a], "foreigner_not_covered")
    assert json.loads(rows[p("950505-5123456")][-1])["is_foreigner"] is True
    assert json.loads(rows[p("950505-5123456")][-1])["receives_livelihood_benefit"] is False
    # Not on the spine is a warning, not a failure.
    warned = {n.unique_id for n in summary.warned}
    assert any("relationships_victim_support_eligibility_v1_subject_pseudonym" in w for w in warned)


def test_notifications_are_not_repeated_on_rerun_or_next_day(built):
    cfg, _ = built
    before = _rows(cfg, "select * from shared.benefit_notifications_v1 order by all")
    run_dbt(["build", "--select", "benefit_notifications_v1"], ds=DS, cfg=cfg)
    assert _rows(cfg, "select * from shared.benefit_notifications_v1 order by all") == before
    # --full-refresh must not wipe the record of who was already told.
    run_dbt(["build", "--select", "benefit_notifications_v1", "--full-refresh"], ds=DS, cfg=cfg)
    assert _rows(cfg, "select * from shared.benefit_notifications_v1 order by all") == before
    next_day = (dt.date.fromisoformat(DS) + dt.timedelta(days=1)).isoformat()
    write_validated_zone(cfg.home, ds=next_day)
    run_dbt(["build", "--select", "+benefit_notifications_v1"], ds=next_day, cfg=cfg)
    assert _rows(cfg, "select * from shared.benefit_notifications_v1 order by all") == before


SIGUNGUS = ["11110", "11140", "26350", "41590", "52111"]


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory):
    """A few thousand residents skewed so most sigungu have many small cells; returns (cfg, true counts)."""
    home = tmp_path_factory.mktemp("population_home")
    write_validated_zone(home)  # households, income, foreign residents; residents are replaced below
    rng = random.Random(5)
    n = 3_000
    sigungu = [rng.choices(SIGUNGUS, weights=[60, 25, 10, 4, 1])[0] for _ in range(n)]
    born = [dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 85 * 365)) for _ in range(n)]
    sex = [rng.choice("MF") for _ in range(n)]
    part = home / "validated" / "mois" / "residents" / f"ds={DS}" / "part-0.parquet"
    pq.write_table(pa.table({
        "resident_id": pa.array(range(1, n + 1), pa.int64()),
        "rrn": pa.array([f"{i:013d}" for i in range(1, n + 1)]),
        "name": pa.array(["홍길동"] * n),
        "sex": pa.array(sex),
        "birth_date": pa.array([b.strftime("%Y%m%d") for b in born]),
        "household_id": pa.array([100] * n, pa.int64()),
        "sigungu_code": pa.array(sigungu),
        "address": pa.array(["서울특별시 종로구 세종대로 209"] * n),
        "moved_in_date": pa.array(["20200101"] * n),
        "updated_at": pa.array([dt.datetime(2025, 2, 28)] * n, pa.timestamp("us")),
    }), part)  # fmt: skip
    as_of = dt.date.fromisoformat(DS)

    def band(b: dt.date) -> str:
        age = as_of.year - b.year - ((as_of.month, as_of.day) < (b.month, b.day))
        return "80+" if age >= 80 else f"{age // 10 * 10:02d}-{age // 10 * 10 + 9:02d}"

    truth = Counter((s, band(b), x) for s, b, x in zip(sigungu, born, sex, strict=True))
    # conftest's two registered foreign residents (one card kept per person) are on the spine too.
    truth.update([("26350", band(dt.date(1988, 8, 8)), "F"), ("26350", band(dt.date(2003, 3, 3)), "M")])
    cfg = Settings(home=home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(home))
        # cautious: skip tests on the spine that need models outside this selection
        args = ["build", "--select", "+living_population_by_region_v1", "--indirect-selection", "cautious"]
        run_dbt(args, ds=DS, cfg=cfg)
    return cfg, truth


def test_no_cell_under_five_is_published_or_derivable(population):
    cfg, truth = population
    rows = _rows(
        cfg,
        "select sigungu_code, age_band, sex, is_total, population, is_suppressed "
        "from shared.living_population_by_region_v1",
    )
    assert len(rows) == len(SIGUNGUS) * 19
    suppressed_somewhere = False
    for code in SIGUNGUS:
        group = [r for r in rows if r[0] == code]
        (total,) = [r for r in group if r[3]]
        cells = [r for r in group if not r[3]]
        published = [r for r in cells if not r[5]]
        hidden = [r for r in cells if r[5]]
        # Published counts are the true counts and never under 5.
        for s, b, x, _, pop, _ in published:
            assert pop == truth[(s, b, x)] >= 5
        assert all(r[4] is None for r in hidden)
        assert all(truth[(r[0], r[1], r[2])] >= 5 for r in published)
        assert all(r[5] for r in cells if truth[(r[0], r[1], r[2])] < 5), "a small cell escaped primary suppression"
        true_total = sum(v for k, v in truth.items() if k[0] == code)
        if total[5]:
            assert true_total < 5 and not published
            continue
        assert total[4] == true_total
        if hidden:
            suppressed_somewhere = True
            # The only relation a reader has: hidden cells sum to total − published. With two or
            # more hidden cells and that sum ≥ 5, no hidden cell has a single possible value.
            remainder = total[4] - sum(r[4] for r in published)
            assert len(hidden) >= 2 and remainder >= 5
    assert suppressed_somewhere


def test_incremental_staging_applies_changes_and_deletions(built, pseudonym_key):
    cfg, _ = built
    import pyarrow.compute as pc

    day3 = (dt.date.fromisoformat(DS) + dt.timedelta(days=2)).isoformat()
    src = cfg.home / "validated"
    residents = pq.read_table(src / "mois" / "residents" / f"ds={DS}" / "part-0.parquet")
    # 박서준 (resident 4) moves to 종로구 and the agency bumps updated_at; resident 5 is removed.
    moved = pc.equal(residents["resident_id"], 4)
    residents = (
        residents.set_column(
            residents.schema.get_field_index("sigungu_code"),
            "sigungu_code",
            pc.if_else(moved, "11110", residents["sigungu_code"]),
        )
        .set_column(
            residents.schema.get_field_index("updated_at"),
            "updated_at",
            pc.if_else(moved, pa.scalar(dt.datetime(2025, 3, 2, 9), pa.timestamp("us")), residents["updated_at"]),
        )
        .filter(pc.not_equal(residents["resident_id"], 5))
    )
    incomes = pq.read_table(src / "nts" / "income" / f"ds={DS}" / "part-0.parquet")
    incomes = incomes.filter(pc.not_equal(incomes["income_id"], 1))
    households = pq.read_table(src / "mois" / "households" / f"ds={DS}" / "part-0.parquet")
    for agency, entity, table in (
        ("mois", "residents", residents),
        ("nts", "income", incomes),
        ("mois", "households", households),
    ):
        part = src / agency / entity / f"ds={day3}"
        part.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, part / "part-0.parquet")

    run_dbt(["run", "--select", "stg_mois__residents", "stg_nts__incomes"], ds=day3, cfg=cfg)
    staged = _rows(
        cfg, "select resident_id, subject_pseudonym, sigungu_code from staging.stg_mois__residents order by 1"
    )
    p = lambda rrn: pseudonymize(rrn, pseudonym_key)  # noqa: E731
    assert staged == [
        (1, p("800101-1234567"), "11110"),
        (2, p("820202-2345678"), "11110"),
        (3, p("100303-3456789"), "11110"),
        (4, p("900404-1111111"), "11110"),
    ]
    assert [r[0] for r in _rows(cfg, "select income_id from staging.stg_nts__incomes order by 1")] == [2, 3, 4]
