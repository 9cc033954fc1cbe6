"""A daily (incremental) build equals a full rebuild of the same data, row for row, for every model:
after source changes, a birthday crossing and a rule change date. The daily run reads what
incremental extraction delivers (windows of changed rows with tombstones, `_op = 'upsert'/'delete'`,
and a periodic full snapshot), the full rebuild the equivalent full snapshots."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zerodoc.config import REPO_ROOT as REPO
from zerodoc.config import Settings
from zerodoc.transform.runner import DAILY_BUILD_ARGS, DbtRunError, is_run_state, run_dbt, target_dir

from .conftest import DS, write_validated_zone

DAY2 = (dt.date.fromisoformat(DS) + dt.timedelta(days=1)).isoformat()
DAY3 = (dt.date.fromisoformat(DS) + dt.timedelta(days=2)).isoformat()
# When staging wrote a row (the invocation's start): restamped by every full build, so not compared.
RUN_STATE_COLUMNS = ("loaded_at",)
BUMPED = pa.scalar(dt.datetime(2025, 3, 1, 18, 0), pa.timestamp("us"))
SCHEMAS = ("staging", "intermediate", "shared")
# Entities no mart reads yet: each day's snapshot repeats day 1 (their staging must still build).
UNCHANGED_ENTITIES = (("nts", "business_registrations"), ("moel", "unemployment_benefits"),
                      ("mohw", "disability_registry"))


def _bump(table: pa.Table, key: str, ids: set[int], **changes: object) -> pa.Table:
    """Set columns on the rows whose key is in ids and bump their updated_at, as the agency does on a change."""
    hit = pc.is_in(table[key], pa.array(sorted(ids), table[key].type))
    for col, value in {**changes, "updated_at": BUMPED}.items():
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.if_else(hit, pa.scalar(value, table[col].type), table[col]))
    return table


def _append(table: pa.Table, row: dict[str, object]) -> pa.Table:
    extra = pa.table({f.name: pa.array([row[f.name]], f.type) for f in table.schema})
    return pa.concat_tables([table, extra])


def _read(home, agency: str, entity: str, ds: str = DS) -> pa.Table:
    return pq.read_table(home / "validated" / agency / entity / f"ds={ds}" / "part-0.parquet")


def _write_day(home, ds: str, tables: dict[tuple[str, str], pa.Table]) -> None:
    for (agency, entity), table in tables.items():
        part = home / "validated" / agency / entity / f"ds={ds}"
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        pq.write_table(table, part / "part-0.parquet")


def day2_snapshots(home) -> dict[tuple[str, str], pa.Table]:
    """Day 2 as full snapshots = day 1 with a move, two removed registry rows, a new person and household,
    a corrected return, a lost job, a new case, an opened and a vanished Youth Leap Account, and a
    livelihood benefit that ended.

    Removals: resident 5 (a duplicate registry row of a person who keeps another row) and resident 3
    (the person's only row: they vanish from the spine and their household shrinks).
    """
    residents = _bump(_read(home, "mois", "residents"), "resident_id", {4}, sigungu_code="11110")
    residents = residents.filter(pc.invert(pc.is_in(residents["resident_id"], pa.array([3, 5], pa.int64()))))
    residents = _append(residents, {
        "resident_id": 6, "rrn": "010606-4123456", "name": "최지우", "sex": "F", "birth_date": "20010606",
        "household_id": 300, "sigungu_code": "41590", "address": "경기도 화성시 시청로 159",
        "moved_in_date": "20250301", "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    households = _append(_read(home, "mois", "households"), {
        "household_id": 300, "head_resident_id": 6, "sigungu_code": "41590", "address": "경기도 화성시 시청로 159",
        "registered_date": "20250301", "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    incomes = _bump(_read(home, "nts", "income"), "income_id", {2}, earned_income=5_000_000)
    enrolments = _bump(_read(home, "moel", "employment_insurance"), "enrolment_id", {1},
                       lost_date=DAY2.replace("-", ""))
    # MOEL corrects the person of enrolment 2 (김철수's only one, to 이영희), and registers a job for
    # 박서준 that starts on DAY3: known on day 3 although no row changes that day.
    enrolments = _bump(enrolments, "enrolment_id", {2}, rrn="820202-2345678")
    enrolments = _append(enrolments, {
        "enrolment_id": 3, "rrn": "900404-1111111", "employer_brn": "2208162517", "workplace_name": "제로독 상사",
        "acquired_date": DAY3.replace("-", ""), "lost_date": "", "monthly_wage": 2_800_000,
        "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    cases = _append(_read(home, "police", "crime_victim_cases"), {
        "case_id": 5, "victim_rrn": "010606-4123456", "crime_type": "상해", "incident_date": "20250228",
        "reported_date": "20250301", "police_station_code": "PS1001", "sigungu_code": "41590",
        "summary": "피해 진술 접수", "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    # MOJ: a foreign resident moves (a change in the spine and the living population), another arrives.
    foreigners = _bump(_read(home, "moj", "foreign_residents"), "foreign_resident_id", {2}, sigungu_code="41590")
    # ...and NGUYEN LAN's old card (1, superseded by card 3) leaves the registry: the spine keeps card 3.
    foreigners = foreigners.filter(pc.not_equal(foreigners["foreign_resident_id"], 1))
    foreigners = _append(foreigners, {
        "foreign_resident_id": 4, "frn": "970909-5456789", "name": "TRAN MINH", "nationality": "VNM",
        "visa_type": "D-2", "sigungu_code": "11110", "entry_date": "20250201", "registered_date": "20250301",
        "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    # FSC (a registry delivered whole): 박서준 opens a new account, so he is no longer eligible; 이영희's
    # open account vanishes from the registry (only the last build's copy still knows whose it was).
    accounts = _read(home, "fsc", "youth_leap_accounts")
    accounts = accounts.filter(pc.not_equal(accounts["account_id"], 2))
    accounts = _append(accounts, {
        "account_id": 3, "rrn": "900404-1111111", "bank_code": "004", "opened_date": "20250301",
        "monthly_contribution": 500_000, "government_match": 15_000, "status": "active",
        "updated_at": BUMPED.as_py(),
    })  # fmt: skip
    # MOHW: 이영희's livelihood benefit ends (medical aid only now), so her household may get emergency aid.
    recipients = _bump(_read(home, "mohw", "basic_livelihood_recipients"), "recipient_id", {1}, benefit_types="의료")
    unchanged = {e: _read(home, *e) for e in UNCHANGED_ENTITIES}
    return {
        ("mois", "residents"): residents, ("mois", "households"): households, ("nts", "income"): incomes,
        ("moel", "employment_insurance"): enrolments, ("police", "crime_victim_cases"): cases,
        ("moj", "foreign_residents"): foreigners, ("fsc", "youth_leap_accounts"): accounts,
        ("mohw", "basic_livelihood_recipients"): recipients, **unchanged,
    }  # fmt: skip


def _change_window(table: pa.Table, key: str, upserts: set[int], deletes: set[int] = frozenset()) -> pa.Table:
    """What incremental extraction delivers: the changed rows (`_op = 'upsert'`) and a tombstone per
    removed key (key and cursor kept, every other column NULL, `_op = 'delete'`), as extract.with_ops does."""
    live = table.filter(pc.is_in(table[key], pa.array(sorted(upserts), table[key].type)))
    live = live.append_column("_op", pa.array(["upsert"] * live.num_rows, pa.string()))
    dead = pa.table({
        f.name: pa.array(sorted(deletes), f.type) if f.name == key
        else pa.array([BUMPED.as_py()] * len(deletes), f.type) if f.name == "updated_at"
        else pa.nulls(len(deletes), f.type)
        for f in table.schema
    }).append_column("_op", pa.array(["delete"] * len(deletes), pa.string()))  # fmt: skip
    return pa.concat_tables([live, dead])


def day2_windows(snapshots: dict[tuple[str, str], pa.Table]) -> dict[tuple[str, str], pa.Table]:
    """Day 2 as the daily run reads it: windows for the entities with a cursor (MOIS residents with
    tombstones for 3 and 5, MOIS households, NTS income); the CSV drops (MOEL, police) stay snapshots."""
    residents = snapshots[("mois", "residents")]
    windows = dict(snapshots)
    windows[("mois", "residents")] = _change_window(residents, "resident_id", {4, 6}, {3, 5})
    windows[("mois", "households")] = _change_window(snapshots[("mois", "households")], "household_id", {300})
    windows[("nts", "income")] = _change_window(snapshots[("nts", "income")], "income_id", {2})
    return windows


def day3_partitions(day2: dict[tuple[str, str], pa.Table]) -> tuple[dict, dict]:
    """Day 3 (a rule changes): NTS withdrew return 1, which NTS deletes physically, so no window shows
    it; the periodic full snapshot of NTS does. MOIS windows are empty. Returns (daily, full) partitions."""
    incomes = day2[("nts", "income")]
    incomes = incomes.filter(pc.not_equal(incomes["income_id"], 1))
    full = {**day2, ("nts", "income"): incomes}
    daily = {**full}
    for entity, key in ((("mois", "residents"), "resident_id"), (("mois", "households"), "household_id")):
        daily[entity] = _change_window(day2[entity], key, set())
    return daily, full


def _snapshot(cfg: Settings) -> dict[str, list[tuple]]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        names = con.execute(
            "select table_schema, table_name from information_schema.tables where table_schema in ? order by all",
            [list(SCHEMAS)],
        ).fetchall()
        out = {}
        for s, t in names:
            cols = {c for (c,) in con.execute(
                "select column_name from information_schema.columns where table_schema = ? and table_name = ?",
                [s, t]).fetchall()}  # fmt: skip
            drop = [c for c in RUN_STATE_COLUMNS if c in cols]
            star = f"* exclude ({', '.join(drop)})" if drop else "*"
            out[f"{s}.{t}"] = con.execute(f'select {star} from "{s}"."{t}" order by all').fetchall()
        return out


def _add_birthday_person(home) -> None:
    """Day 1 gains resident 7, alone in household 400, who turns 19 on DAY2 (Youth Leap's minimum age) and has income.

    Nothing about them changes on day 2: only the date does, so the daily run must find them as a
    birthday crossing, not as a changed row.
    """
    src = home / "validated"
    path = src / "mois" / "residents" / f"ds={DS}" / "part-0.parquet"
    pq.write_table(_append(pq.read_table(path), {
        "resident_id": 7, "rrn": "060302-3123456", "name": "박하준", "sex": "M", "birth_date": "20060302",
        "household_id": 400, "sigungu_code": "26350", "address": "부산광역시 해운대구 해운대로 264",
        "moved_in_date": "20200601", "updated_at": dt.datetime(2025, 2, 28, 12, 0),
    }), path)  # fmt: skip
    path = src / "mois" / "households" / f"ds={DS}" / "part-0.parquet"
    pq.write_table(_append(pq.read_table(path), {
        "household_id": 400, "head_resident_id": 7, "sigungu_code": "26350",
        "address": "부산광역시 해운대구 해운대로 264", "registered_date": "20200601",
        "updated_at": dt.datetime(2025, 2, 28, 12, 0),
    }), path)  # fmt: skip
    path = src / "nts" / "income" / f"ds={DS}" / "part-0.parquet"
    pq.write_table(_append(pq.read_table(path), {
        "income_id": 5, "rrn": "060302-3123456", "tax_year": 2024, "earned_income": 20_000_000,
        "business_income": 0, "other_income": 0, "filed_date": "20250531",
        "updated_at": dt.datetime(2025, 2, 28, 12, 0),
    }), path)  # fmt: skip


def _project_with_a_rule_change(repo) -> None:
    """A copy of dbt_project whose Youth Leap rule is replaced on DAY3 (the old row ends on DAY2)."""
    shutil.copytree(REPO / "dbt_project", repo / "dbt_project", ignore=shutil.ignore_patterns("target", "logs"))
    seed = repo / "dbt_project" / "seeds" / "programme_thresholds.csv"
    rows = seed.read_text(encoding="utf-8").splitlines()
    header = rows[0].split(",")
    assert header[:10] == ["programme", "rule_id", "percent_of_median", "min_age", "max_age",
                           "max_earned_income_krw", "max_comprehensive_income_krw", "effective_from",
                           "effective_to", "source"], header  # fmt: skip
    current = [r for r in rows[1:] if r.startswith("youth_leap_account,") and r.split(",")[8] == ""]
    assert len(current) == 1, current
    ended = current[0].split(",")
    ended[8] = DAY2
    rows[rows.index(current[0])] = ",".join(ended)
    rows.append(f"youth_leap_account,YLA-TEST,150,19,34,75000000,63000000,{DAY3},,test")
    seed.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _clone(home_from: Settings, home_to: Settings) -> None:
    shutil.copytree(home_from.home / "validated", home_to.home / "validated")
    home_to.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(home_from.warehouse_path, home_to.warehouse_path)


def _build(cfg: Settings, args: list[str], ds: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZERODOC_HOME", str(cfg.home))
        run_dbt(args, ds=ds, cfg=cfg)


def _compiled_tests(cfg: Settings) -> dict[str, str]:
    """The SQL each data test of the last build ran, by node id (run_results.json)."""
    run = json.loads((target_dir(cfg) / "run_results.json").read_text())
    return {r["unique_id"]: r["compiled_code"] for r in run["results"] if r["unique_id"].startswith("test.")}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[tuple]]]:
    """Day 1 built once; day 2 built as the daily run in one copy and with --full-refresh in another;
    then day 3, on which a rule changes (a project copy with the new seed row), both ways again."""
    daily = Settings(home=tmp_path_factory.mktemp("daily_home"))
    write_validated_zone(daily.home)
    _add_birthday_person(daily.home)
    _build(daily, ["build"], DS)
    out = {"day1": _snapshot(daily)}
    day2 = day2_snapshots(daily.home)
    full = Settings(home=tmp_path_factory.mktemp("full_home"))
    _clone(daily, full)
    day1_copy = Settings(home=tmp_path_factory.mktemp("day1_copy_home"))
    _clone(daily, day1_copy)
    _write_day(day1_copy.home, DAY2, day2_windows(day2))
    out["day1_copy"] = day1_copy
    _write_day(daily.home, DAY2, day2_windows(day2))
    _write_day(full.home, DAY2, day2)
    _build(daily, list(DAILY_BUILD_ARGS), DAY2)
    out["day2_daily_tests"] = _compiled_tests(daily)
    _build(full, ["build", "--full-refresh"], DAY2)
    out["day2_daily"], out["day2_full"] = _snapshot(daily), _snapshot(full)
    out["day2_full_tests"] = _compiled_tests(full)

    repo = tmp_path_factory.mktemp("repo_with_rule_change")
    _project_with_a_rule_change(repo)
    daily3 = Settings(home=daily.home, repo=repo)
    full3 = Settings(home=tmp_path_factory.mktemp("full3_home"), repo=repo)
    _clone(daily3, full3)
    day3_daily, day3_full = day3_partitions(day2)
    _write_day(daily3.home, DAY3, day3_daily)
    _write_day(full3.home, DAY3, day3_full)
    _build(daily3, list(DAILY_BUILD_ARGS), DAY3)
    out["day3_daily_tests"] = _compiled_tests(daily3)
    out["day3_daily_employment_sql"] = (
        target_dir(daily3) / "compiled" / "zerodoc" / "models" / "marts" / "shared" / "employment_v1.sql"
    ).read_text()
    _build(full3, ["build", "--full-refresh"], DAY3)
    out["day3_daily"], out["day3_full"] = _snapshot(daily3), _snapshot(full3)
    return out


def _assert_same_data(daily: dict[str, list[tuple]], full: dict[str, list[tuple]], as_of: str) -> None:
    shared = [n for n in full if n.startswith("shared.") and n != "shared.build_as_of"]
    assert len(shared) == 8, shared
    assert daily["shared.build_as_of"] == full["shared.build_as_of"] == [(dt.date.fromisoformat(as_of),)]
    assert sorted(daily) == sorted(full)
    for name in full:
        if not is_run_state(name):
            assert daily[name] == full[name], f"{name}: the daily build differs from a full rebuild"


def _window(snapshot: dict[str, list[tuple]]) -> tuple:
    (row,) = snapshot["intermediate.int_build_window"]
    return row  # as_of, rules_checksum, changes_since, previous_as_of_low, previous_as_of_high, is_full


def _youth_leap_of_age(snapshot: dict[str, list[tuple]], age: int) -> list[tuple]:
    return [r for r in snapshot["shared.youth_leap_eligibility_v1"] if r[3] == age]


def test_daily_build_after_a_change_equals_a_full_rebuild(builds):
    day1, daily, full = builds["day1"], builds["day2_daily"], builds["day2_full"]
    _assert_same_data(daily, full, DAY2)
    # The daily run took the affected-key path (not a full window) and still matched.
    assert _window(daily)[3:] == (dt.date.fromisoformat(DS), dt.date.fromisoformat(DS), False)
    # The fixture really changed things: the comparison is not of two unchanged copies of day 1.
    changed = {n for n in full if not is_run_state(n) and day1.get(n) != full[n]}
    assert {
        "staging.stg_mois__residents", "staging.stg_nts__incomes", "intermediate.int_residents_deduplicated",
        "intermediate.int_incomes_latest_filing", "intermediate.int_persons", "intermediate.int_households_sized",
        "intermediate.int_persons_latest_income", "shared.income_v1", "shared.residence_v1", "shared.household_v1",
        "shared.youth_leap_eligibility_v1", "shared.benefit_notifications_v1", "shared.employment_v1",
        "shared.victim_support_eligibility_v1",
    } <= changed  # fmt: skip
    # Resident 3 (their only row) vanished, 6 is new, 5 was a duplicate row never kept.
    assert sorted(r[0] for r in day1["intermediate.int_residents_deduplicated"]) == [1, 2, 3, 4, 7]
    assert sorted(r[0] for r in daily["intermediate.int_residents_deduplicated"]) == [1, 2, 4, 6, 7]


def test_the_change_log_holds_exactly_what_staging_wrote_or_deleted(builds):
    """int_person_changes reads staging's stamped rows and deleted keys, not a comparison of tables: on
    day 2 it logs the person who moved within household 200 (4), the new one (6), the removed one (3:
    their kept row's person and household), the person whose return changed (1), the new household,
    the holder of the new Youth Leap Account (4) and the holder of the open one that vanished (2, found
    in the last build's copy), and nobody else (5 was a duplicate row never kept, so deleting it
    changes no person)."""
    day1, daily = builds["day1"], builds["day2_daily"]
    subject = {r[0]: r[1] for r in day1["staging.stg_mois__residents"]}
    (stamp,) = {r[3] for r in daily["intermediate.int_person_changes"] if r[0] != "all"}
    logged = {(r[0], r[1], r[2]) for r in daily["intermediate.int_person_changes"] if r[3] == stamp}
    new_person = {r[1] for r in daily["staging.stg_mois__residents"] if r[0] == 6}.pop()
    assert logged == {
        ("mois_residents", subject[4], 200),
        ("mois_residents", new_person, 300), ("mois_residents", subject[3], 100),
        ("nts_incomes", subject[1], None), ("mois_households", None, 300),
        ("fsc_youth_leap_accounts", subject[4], None), ("fsc_youth_leap_accounts", subject[2], None),
    }  # fmt: skip
    # Deleted keys were logged by staging, then dropped once int_person_changes had read them.
    assert daily["staging.stg_mois__residents__deleted_keys"] == []
    assert daily["staging.stg_fsc__youth_leap_accounts__deleted_keys"] == []


def test_an_account_opened_or_gone_recomputes_its_holder(builds):
    """박서준 (eligible on day 1, his old account closed) opens a new one on day 2: no longer eligible,
    and not notified again; 이영희's open account vanished, so she is no longer told she holds one."""
    day1, daily = builds["day1"], builds["day2_daily"]
    subject = {r[0]: r[1] for r in day1["staging.stg_mois__residents"]}
    # subject_pseudonym, ..., has_open_account, is_eligible, ineligibility_reason
    youth = lambda snap, who: {r[0]: r[-3:] for r in snap["shared.youth_leap_eligibility_v1"]}[subject[who]]  # noqa: E731
    assert youth(day1, 4) == (False, True, None)
    assert youth(daily, 4) == (True, False, "already_holds_account")
    assert youth(day1, 2) == (True, False, "already_holds_account")
    assert youth(daily, 2) == (False, False, "age_out_of_range")
    assert (subject[4],) in daily["intermediate.int_affected_subjects"]
    assert (subject[2],) in daily["intermediate.int_affected_subjects"]
    notified = [r for r in daily["shared.benefit_notifications_v1"] if r[1] == subject[4]]
    assert [r[-1] for r in notified] == [dt.date.fromisoformat(DS)]  # day 1's, not a second one


def test_a_livelihood_benefit_that_ended_lifts_the_households_exclusion(builds):
    """이영희's livelihood benefit (생계급여) ends on day 2: 김철수, a victim in her household, may then
    get emergency livelihood aid; on day 1 the household already received the same support."""
    day1, daily = builds["day1"], builds["day2_daily"]
    subject = {r[0]: r[1] for r in day1["staging.stg_mois__residents"]}
    # subject_pseudonym, then (eligible, rule_id, reason) for legal aid, relief fund, emergency livelihood,
    # ...; receives_livelihood_benefit and inputs last.
    kim = lambda snap: {r[0]: r for r in snap["shared.victim_support_eligibility_v1"]}[subject[1]]  # noqa: E731
    assert (kim(day1)[7], kim(day1)[9], kim(day1)[-2]) == (False, "receives_livelihood_benefit", True)
    assert (kim(daily)[7], kim(daily)[9], kim(daily)[-2]) == (True, None, False)


def test_a_deleted_keys_log_nobody_reads_keeps_only_the_latest_runs_keys(builds):
    """MOJ's old card 1 vanishes on day 2: staging deletes it and logs the key with day 2's stamp. No change
    log reads foreign residents' deletions, so day 3's run, which deletes nothing there, leaves the log empty
    instead of keeping every run's keys; a log that a change log reads is emptied by its reader."""
    day1, day2, day3 = builds["day1"], builds["day2_daily"], builds["day3_daily"]
    assert 1 in {r[0] for r in day1["staging.stg_moj__foreign_residents"]}
    assert 1 not in {r[0] for r in day2["staging.stg_moj__foreign_residents"]}
    assert [r[0] for r in day2["staging.stg_moj__foreign_residents__deleted_keys"]] == [1]
    assert day3["staging.stg_moj__foreign_residents__deleted_keys"] == []
    assert day2["staging.stg_mois__residents__deleted_keys"] == []


def test_a_periodic_snapshot_removes_what_no_window_shows(builds):
    """NTS deletes a withdrawn return physically: day 3's windows cannot show it, the full snapshot does."""
    day2, day3 = builds["day2_daily"], builds["day3_daily"]
    assert 1 in {r[7] for r in day2["intermediate.int_incomes_latest_filing"]}
    assert 1 not in {r[7] for r in day3["intermediate.int_incomes_latest_filing"]}
    assert 1 not in {r[0] for r in day3["staging.stg_nts__incomes"]}


def test_a_birthday_crossing_alone_is_recomputed(builds):
    """Resident 7 changed in no source: turning 19 on DAY2 makes them eligible, and notified, that day."""
    day1, daily = builds["day1"], builds["day2_daily"]
    (before,) = _youth_leap_of_age(day1, 18)
    (after,) = _youth_leap_of_age(daily, 19)
    assert before[0] == after[0]
    assert before[-2:] == (False, "age_out_of_range") and after[-2:] == (True, None)
    changes = daily["intermediate.int_person_changes"]
    assert after[0] not in {r[1] for r in changes} and 400 not in {r[2] for r in changes}
    assert (400,) not in daily["intermediate.int_affected_households"]
    assert (after[0],) in daily["intermediate.int_affected_subjects"]
    assert [r[-1] for r in daily["shared.benefit_notifications_v1"] if r[1] == after[0]] == [
        dt.date.fromisoformat(DAY2)
    ]


def test_a_rule_change_date_recomputes_everyone_and_equals_a_full_rebuild(builds):
    day2, daily, full = builds["day2_daily"], builds["day3_daily"], builds["day3_full"]
    _assert_same_data(daily, full, DAY3)
    # No source row changed between DAY2 and DAY3: only the rule in force did.
    assert _window(daily)[1] != _window(day2)[1] and _window(daily)[-1] is True
    assert {r[1] for r in daily["shared.youth_leap_eligibility_v1"]} == {"YLA-TEST"}
    assert {r[1] for r in day2["shared.youth_leap_eligibility_v1"]} == {"YLA-2023-06"}


AFFECTED_KEY_MODELS = ("int_households_sized", "int_persons_latest_income", "household_v1", "residence_v1",
                       "youth_leap_eligibility_v1", "benefit_notifications_v1")  # fmt: skip


def _reading_written_rows(tests: dict[str, str]) -> set[str]:
    return {uid for uid, sql in tests.items() if "zerodoc_written.main." in sql}


def test_daily_tests_of_affected_key_models_read_only_the_rows_the_run_wrote(builds):
    """On a daily run the unique tests of the affected-key models read the rows this run wrote
    (macros/written_rows.sql), not the whole model; a full build and a daily run that rewrote everyone
    (day 3: a rule changed) test whole tables. The notifications' relationships test stays whole: a
    recipient can leave the registry without their row being rewritten."""
    daily = builds["day2_daily_tests"]
    for model in AFFECTED_KEY_MODELS:
        unique = [sql for uid, sql in daily.items() if uid.startswith(f"test.zerodoc.unique_{model}_")]
        assert unique, model
        assert all(f'zerodoc_written.main."{model}"' in sql for sql in unique), model
    (notified,) = [sql for uid, sql in daily.items()
                   if uid.startswith("test.zerodoc.relationships_benefit_notifications_v1_")]  # fmt: skip
    assert "zerodoc_written" not in notified and '"shared"."benefit_notifications_v1"' in notified
    # Models rebuilt whole (and the staging/intermediate scoping) are not read from the kept rows.
    assert not any("employment_v1" in uid or "stg_" in uid for uid in _reading_written_rows(daily))
    assert _reading_written_rows(builds["day2_full_tests"]) == set()
    assert _reading_written_rows(builds["day3_daily_tests"]) == set()


def test_an_affected_key_model_writing_a_key_it_did_not_delete_fails_the_run(builds, tmp_path):
    """The written rows are enough for `unique` only because every written key was deleted first (it is
    in the affected set): a model that appends a key outside that set fails instead of passing its tests.
    (On day 2 every person of the fixture is affected, so the stray key is made up.)"""
    day1_copy = builds["day1_copy"]
    shutil.copytree(REPO / "dbt_project", tmp_path / "dbt_project", ignore=shutil.ignore_patterns("target", "logs"))
    model = tmp_path / "dbt_project" / "models" / "marts" / "shared" / "residence_v1.sql"
    sql = model.read_text(encoding="utf-8")
    assert sql.rstrip().endswith("select * from final")
    stray = "select * replace ('not-an-affected-person' as subject_pseudonym) from final limit 1"
    model.write_text(f"{sql.rstrip()}\nunion all\n({stray})\n", encoding="utf-8")
    with pytest.raises(DbtRunError) as failed:
        _build(Settings(home=day1_copy.home, repo=tmp_path), list(DAILY_BUILD_ARGS), DAY2)
    (node,) = failed.value.summary.failed
    assert node.unique_id == "model.zerodoc.residence_v1"
    assert "wrote a subject_pseudonym outside int_affected_subjects: not-an-affected-person" in node.message


def test_employment_follows_a_moved_enrolment_and_a_start_date_alone(builds, pseudonym_key):
    """employment_v1 recomputes only affected persons on a daily run: on day 2 the previous person of a
    moved enrolment (김철수 loses his only one, so his row goes) and the new one (이영희); on day 3, when
    no MOEL row changes, the person whose job starts that day (박서준), found by the date alone."""
    from zerodoc.privacy import pseudonymize

    def rows(snapshot, rrn):
        return [r for r in snapshot["shared.employment_v1"] if r[0] == pseudonymize(rrn, pseudonym_key)]

    day2 = builds["day2_daily"]
    assert rows(day2, "800101-1234567") == []
    assert [r[6] for r in rows(day2, "820202-2345678")] == [1]  # enrolment_count
    day3 = builds["day3_daily"]
    assert day3["intermediate.int_enrolment_changes"] == []
    assert "semi join affected_subjects" in builds["day3_daily_employment_sql"]
    (seo,) = rows(day3, "900404-1111111")
    # insured_since, current enrolments (job 1 was lost on DAY2), all enrolments
    assert (seo[3], seo[5], seo[6]) == (dt.date.fromisoformat(DAY3), 1, 2)
    assert day3["shared.employment_v1"] == builds["day3_full"]["shared.employment_v1"]
