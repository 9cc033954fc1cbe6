"""Deterministic synthetic agency records, vectorised so ten million persons take seconds.

Defects are planted at fixed rates on disjoint rows, so tests can assert exact quarantine
counts; `expected_counts()` states them.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from zerodoc.config import REPO_ROOT, Settings

# The registry snapshot the generator describes; fixed so a seed always gives the same data.
REFERENCE_DATE = dt.date(2026, 11, 1)
UPDATED_AT = dt.datetime(2026, 11, 1, 3, 0, 0)
RRN_CHECK_UNTIL = dt.date(2020, 10, 1)  # numbers issued from October 2020 carry no check digit
WEIGHTS = np.array([2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5])
TAX_YEARS = (2024, 2025)
ROW_GROUP = 122_880

# Most common Korean surnames with their approximate shares (Statistics Korea census).
SURNAMES = {
    "김": 21.5, "이": 14.7, "박": 8.4, "최": 4.7, "정": 4.3, "강": 2.4, "조": 2.1, "윤": 2.1,
    "장": 2.0, "임": 1.7, "한": 1.5, "오": 1.5, "서": 1.5, "신": 1.4, "권": 1.4, "황": 1.4,
    "안": 1.3, "송": 1.3, "류": 1.2, "전": 1.1, "홍": 1.1, "고": 0.9, "문": 0.9, "양": 0.9,
    "손": 0.9, "배": 0.8, "백": 0.8, "허": 0.6, "유": 0.6, "남": 0.6, "심": 0.5, "노": 0.4,
}
GIVEN_SYLLABLES = list(
    "민서준지현우도하윤예은수진영호성연재유주희태경혜선아정동상철미나원석훈승보혁채린다빈규"
)
ROADS = ["세종대로", "테헤란로", "올림픽로", "중앙대로", "해운대로", "달구벌대로", "경인로",
         "한밭대로", "무등로", "문수로", "충장로", "중앙로", "시청로", "번영로", "평화로", "대학로"]
HOUSEHOLD_SIZES = np.array([1, 2, 3, 4, 5, 6, 7])
HOUSEHOLD_SHARES = np.array([0.335, 0.285, 0.195, 0.14, 0.035, 0.007, 0.003])


@dataclass(frozen=True)
class DefectPlan:
    """How many rows of each kind are planted; every count is a pure function of `persons`."""

    persons: int

    @property
    def resident_bad_check_digit(self) -> int:
        return self.persons // 400

    @property
    def resident_bad_month(self) -> int:
        return self.persons // 400

    @property
    def resident_null_name(self) -> int:
        return self.persons // 500

    @property
    def resident_impossible_birth_date(self) -> int:
        return self.persons // 1000

    @property
    def resident_duplicate_keys(self) -> int:
        return self.persons // 1000

    def households(self, n_households: int) -> dict[str, int]:
        return {"impossible_registered_date": n_households // 1000, "duplicate_keys": n_households // 2000}

    def income(self, n_income: int) -> dict[str, int]:
        return {
            "invalid_rrn": n_income // 1000,
            "negative_income": n_income // 2000,
            "null_income": n_income // 2000,
            "duplicate_keys": n_income // 2000,
        }


def load_regions(path: Path = REPO_ROOT / "dbt_project" / "seeds" / "regions.csv") -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _rrn_strings(birth: np.ndarray, sex_female: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Valid resident registration numbers, unique per person."""
    n = len(birth)
    years = birth.astype("datetime64[Y]").astype(int) + 1970
    months = birth.astype("datetime64[M]").astype(int) % 12 + 1
    days = (birth - birth.astype("datetime64[M]")).astype(int) + 1
    century_2000 = years >= 2000
    s = 1 + sex_female.astype(int) + 2 * century_2000.astype(int)
    # Unique trailing digits within each (birth date, sex digit) group: a rank-based serial
    # spread over 0..99999 by a multiplier coprime to 10^5.
    key = birth.astype(np.int64) * 10 + s
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1]
    rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = rank_sorted
    group_offset = (key * 7919) % 100_000
    serial = (group_offset + rank * 3137) % 100_000
    digits = np.empty((n, 13), dtype=np.int64)
    yy = years % 100
    digits[:, 0], digits[:, 1] = yy // 10, yy % 10
    digits[:, 2], digits[:, 3] = months // 10, months % 10
    digits[:, 4], digits[:, 5] = days // 10, days % 10
    digits[:, 6] = s
    for i in range(5):
        digits[:, 7 + i] = (serial // 10 ** (4 - i)) % 10
    check = (11 - (digits[:, :12] * WEIGHTS).sum(axis=1) % 11) % 10
    post_2020 = birth >= np.datetime64(RRN_CHECK_UNTIL)
    digits[:, 12] = np.where(post_2020, rng.integers(0, 10, n), check)
    return _digits_to_rrn(digits)


def _digits_to_rrn(digits: np.ndarray) -> np.ndarray:
    chars = (digits + ord("0")).astype(np.uint8)
    dash = np.full((len(digits), 1), ord("-"), dtype=np.uint8)
    buf = np.hstack([chars[:, :6], dash, chars[:, 6:]])
    return buf.view("S14").ravel().astype(str)


def _yyyymmdd(d: np.ndarray) -> np.ndarray:
    return np.datetime_as_string(d, unit="D").astype("U10")


def _random_dates_between(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    span = np.maximum((hi - lo).astype(np.int64), 1)
    return lo + (rng.random(len(lo)) * span).astype(np.int64).astype("timedelta64[D]")


def generate(persons: int, seed: int, out_dir: Path) -> dict:
    """Write the agency stand-ins under out_dir/<agency>/<entity>.parquet and return expected counts."""
    if persons < 1000:
        raise ValueError("--persons must be at least 1000 so every defect kind is planted")
    rng = np.random.default_rng(seed)
    regions = load_regions()
    plan = DefectPlan(persons)

    # ---- persons ---------------------------------------------------------------------------
    ref = np.datetime64(REFERENCE_DATE)
    ages_days = (rng.beta(2.0, 2.6, persons) * 100 * 365.25).astype(np.int64)
    birth = ref - ages_days.astype("timedelta64[D]")
    female = rng.random(persons) < 0.5
    rrn = _rrn_strings(birth, female, rng)
    surnames = np.array(list(SURNAMES))
    sur_p = np.array(list(SURNAMES.values()))
    syl = np.array(GIVEN_SYLLABLES)
    name = pc.binary_join_element_wise(
        pa.array(surnames[rng.choice(len(surnames), persons, p=sur_p / sur_p.sum())]),
        pa.array(syl[rng.integers(0, len(syl), persons)]),
        pa.array(syl[rng.integers(0, len(syl), persons)]),
        "",
    ).to_numpy(zero_copy_only=False).astype(object)

    # ---- households: consecutive persons share one ----------------------------------------
    sizes = rng.choice(HOUSEHOLD_SIZES, size=persons, p=HOUSEHOLD_SHARES)
    ends = np.cumsum(sizes)
    n_households = int(np.searchsorted(ends, persons) + 1)
    sizes = sizes[:n_households]
    sizes[-1] -= int(ends[n_households - 1] - persons)
    household_of = np.repeat(np.arange(1, n_households + 1, dtype=np.int64), sizes)
    head_idx = np.r_[0, np.cumsum(sizes)[:-1]]
    region_idx = rng.integers(0, len(regions), n_households)
    sig_codes = np.array([r["sigungu_code"] for r in regions])
    region_label = np.array([f"{r['sido_name']} {r['sigungu_name']}" for r in regions], dtype=object)
    roads = np.array(ROADS, dtype=object)
    hh_address = (
        region_label[region_idx]
        + " "
        + roads[rng.integers(0, len(roads), n_households)]
        + " "
        + rng.integers(1, 400, n_households).astype(str).astype(object)
    )
    hh_registered = _random_dates_between(
        np.full(n_households, np.datetime64("1990-01-01")), np.full(n_households, ref), rng
    )
    moved_in = _random_dates_between(birth, np.full(persons, ref), rng)

    residents = {
        "resident_id": np.arange(1, persons + 1, dtype=np.int64),
        "rrn": rrn.astype(object),
        "name": name,
        "sex": np.where(female, "F", "M").astype(object),
        "birth_date": np.char.replace(_yyyymmdd(birth), "-", "").astype(object),
        "household_id": household_of,
        "sigungu_code": sig_codes[region_idx][household_of - 1].astype(object),
        "address": hh_address[household_of - 1],
        "moved_in_date": np.char.replace(_yyyymmdd(moved_in), "-", "").astype(object),
    }

    # ---- income (NTS): adults, two tax years, ~72% file -------------------------------------
    adult = ages_days >= 19 * 365
    filer_idx = np.flatnonzero(adult & (rng.random(persons) < 0.72))
    per_year = len(filer_idx)
    inc_person = np.tile(filer_idx, len(TAX_YEARS))
    tax_year = np.repeat(np.array(TAX_YEARS, dtype=np.int32), per_year)
    n_income = len(inc_person)
    earned = (rng.lognormal(np.log(32_000_000), 0.75, n_income) // 1000 * 1000).astype(np.int64)
    earned[rng.random(n_income) < 0.12] = 0
    business = np.where(
        rng.random(n_income) < 0.11, (rng.lognormal(np.log(25_000_000), 1.0, n_income) // 1000) * 1000, 0
    ).astype(np.int64)
    other = np.where(rng.random(n_income) < 0.2, rng.integers(0, 5_000, n_income) * 1000, 0).astype(np.int64)
    filed = np.array(
        [np.datetime64(f"{y + 1}-05-31") for y in TAX_YEARS], dtype="datetime64[D]"
    ).repeat(per_year) - rng.integers(0, 30, n_income).astype("timedelta64[D]")
    income = {
        "income_id": np.arange(1, n_income + 1, dtype=np.int64),
        "rrn": rrn[inc_person].astype(object),
        "tax_year": tax_year,
        "earned_income": earned,
        "business_income": business,
        "other_income": other,
        "filed_date": np.char.replace(_yyyymmdd(filed), "-", "").astype(object),
    }

    # ---- defects on disjoint rows ------------------------------------------------------------
    pre_2020 = np.flatnonzero(birth < np.datetime64(RRN_CHECK_UNTIL))
    picks = rng.permutation(pre_2020)
    cursor = 0

    def take(k: int) -> np.ndarray:
        nonlocal cursor
        out = picks[cursor : cursor + k]
        cursor += k
        return out

    bad_check = take(plan.resident_bad_check_digit)
    rr = residents["rrn"]
    for i in bad_check:
        s = rr[i]
        rr[i] = s[:13] + str((int(s[13]) + 1) % 10)
    for i in take(plan.resident_bad_month):
        rr[i] = rr[i][:2] + "13" + rr[i][4:]
    residents["name"][take(plan.resident_null_name)] = None
    for i in take(plan.resident_impossible_birth_date):
        residents["birth_date"][i] = residents["birth_date"][i][:4] + "0230"
    dup_src = take(plan.resident_duplicate_keys)

    hh_plan = plan.households(n_households)
    hh_pick = rng.permutation(n_households)
    hh_bad_date = hh_pick[: hh_plan["impossible_registered_date"]]
    hh_dup = hh_pick[
        hh_plan["impossible_registered_date"] : hh_plan["impossible_registered_date"] + hh_plan["duplicate_keys"]
    ]
    households = {
        "household_id": np.arange(1, n_households + 1, dtype=np.int64),
        "head_resident_id": residents["resident_id"][head_idx],
        "sigungu_code": sig_codes[region_idx].astype(object),
        "address": hh_address,
        "registered_date": np.char.replace(_yyyymmdd(hh_registered), "-", "").astype(object),
    }
    for i in hh_bad_date:
        households["registered_date"][i] = households["registered_date"][i][:4] + "1301"

    inc_plan = plan.income(n_income)
    inc_pick = rng.permutation(n_income)
    c = 0
    inc_sets = {}
    for k, v in inc_plan.items():
        inc_sets[k] = inc_pick[c : c + v]
        c += v
    for i in inc_sets["invalid_rrn"]:
        s = income["rrn"][i]
        income["rrn"][i] = s[:7] + "9" + s[8:]  # gender digit 9 is never issued today
    income["earned_income"][inc_sets["negative_income"]] = -income["earned_income"][inc_sets["negative_income"]] - 1000
    earned_arr = pa.array(income["earned_income"], mask=np.isin(np.arange(n_income), inc_sets["null_income"]))

    # ---- write -----------------------------------------------------------------------------
    res_tbl = _append_duplicates(_table(residents, UPDATED_AT), dup_src)
    # Nobody is cancelled in the snapshot itself; zerodoc.sources.changes plants soft deletes.
    res_tbl = res_tbl.append_column("deleted_at", pa.nulls(res_tbl.num_rows, pa.timestamp("us")))
    hh_tbl = _append_duplicates(_table(households, UPDATED_AT), hh_dup)
    income["earned_income"] = earned_arr
    inc_tbl = _append_duplicates(_table(income, UPDATED_AT), inc_sets["duplicate_keys"])

    out_dir.mkdir(parents=True, exist_ok=True)
    for rel, tbl in (("mois/residents", res_tbl), ("mois/households", hh_tbl), ("nts/income", inc_tbl)):
        path = out_dir / f"{rel}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(tbl, tmp, row_group_size=ROW_GROUP, compression="zstd")
        tmp.replace(path)

    expected = {
        "persons": persons,
        "seed": seed,
        "mois.residents": {
            "extracted": res_tbl.num_rows,
            "quarantined": plan.resident_bad_check_digit
            + plan.resident_bad_month
            + plan.resident_null_name
            + plan.resident_impossible_birth_date
            + 2 * plan.resident_duplicate_keys,
        },
        "mois.households": {
            "extracted": hh_tbl.num_rows,
            "quarantined": hh_plan["impossible_registered_date"] + 2 * hh_plan["duplicate_keys"],
        },
        "nts.income": {
            "extracted": inc_tbl.num_rows,
            "quarantined": inc_plan["invalid_rrn"]
            + inc_plan["negative_income"]
            + inc_plan["null_income"]
            + 2 * inc_plan["duplicate_keys"],
        },
    }
    for k in ("mois.residents", "mois.households", "nts.income"):
        expected[k]["passed"] = expected[k]["extracted"] - expected[k]["quarantined"]
    # Further agencies draw from their own RNG streams: the three entities above stay byte-identical.
    from zerodoc.sources.generate_agencies import generate_agencies

    expected.update(generate_agencies(persons, seed, out_dir, rrn, adult, sig_codes))
    return expected


def _table(cols: dict, updated_at: dt.datetime) -> pa.Table:
    n = len(next(iter(cols.values())))
    arrays = {k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in cols.items()}
    arrays["updated_at"] = pa.array(np.full(n, np.datetime64(updated_at, "us")), pa.timestamp("us"))
    return pa.table(arrays)


def _append_duplicates(tbl: pa.Table, src_rows: np.ndarray) -> pa.Table:
    """Duplicate keys as agency systems produce them: a second row with the same key."""
    if len(src_rows) == 0:
        return tbl
    return pa.concat_tables([tbl, tbl.take(pa.array(np.sort(src_rows)))])


def write_expected(expected: dict, cfg: Settings) -> Path:
    from zerodoc.fsutil import write_json_atomic

    path = cfg.sources_dir / "_expected.json"
    write_json_atomic(path, expected)
    return path
