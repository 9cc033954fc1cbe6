"""The agencies beyond MOIS/NTS income: foreign residents, business registrations, employment
insurance, welfare registries, Youth Leap Accounts and crime-victim cases.

Each entity draws from its own RNG stream (`default_rng([seed, k])`), so adding one never changes
the bytes of another. Defects are planted on disjoint rows; `expected` states every count.
CSV entities are written as agency drop deliveries (CP949 or UTF-8 with/without BOM) with
line-level defects the extractor must turn into parse-error rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# The drop folders hold one delivery, dated the registry snapshot day.
DELIVERY_DATE = "2026-11-01"
UPDATED_FROM = dt.datetime(2026, 10, 1)
ROW_GROUP = 122_880
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
BRN_WEIGHTS = np.array([1, 3, 7, 1, 3, 7, 1, 3, 5])
RRN_WEIGHTS = np.array([2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5])

NATIONALITIES = {"CHN": 0.36, "VNM": 0.13, "THA": 0.08, "USA": 0.06, "UZB": 0.05, "PHL": 0.04,
                 "NPL": 0.04, "KHM": 0.04, "IDN": 0.04, "MNG": 0.03, "RUS": 0.03, "KAZ": 0.03,
                 "JPN": 0.02, "MMR": 0.02, "LKA": 0.03}
LATIN_FAMILY = ["NGUYEN", "TRAN", "WANG", "LI", "ZHANG", "LIU", "CHEN", "SMITH", "JOHNSON", "SATO",
                "IVANOV", "KARIMOV", "SANTOS", "REYES", "SHRESTHA", "PERERA", "SOK", "BATBAYAR"]
LATIN_GIVEN = ["AN", "MINH", "WEI", "FANG", "JUN", "MARIA", "JOHN", "YUKI", "OLGA", "AZIZ", "RAM",
               "DARA", "SITI", "AUNG", "BOLD", "HOA", "LAN", "TUAN"]
VISAS = {"E-9": 0.2, "F-4": 0.25, "F-5": 0.1, "F-6": 0.07, "D-2": 0.1, "H-2": 0.08, "E-7": 0.05,
         "D-4": 0.05, "F-2": 0.05, "G-1": 0.05}
BUSINESS_TYPES = ["도매 및 소매업", "숙박 및 음식점업", "제조업", "건설업", "부동산업", "정보통신업",
                  "운수 및 창고업",
                  "전문, 과학 및 기술 서비스업", "교육 서비스업", "협회 및 단체, 수리 및 기타 개인 서비스업"]
TRADE_WORDS = ["상사", "식당", "공업사", "건설", "부동산", "커피", "마트", "디자인", "학원", "세탁소", "약국", "치킨"]
CRIME_TYPES = {"폭행": 0.3, "사기": 0.25, "절도": 0.15, "성폭력": 0.08, "강도": 0.03, "상해": 0.12,
               "살인미수": 0.01, "협박": 0.06}
DISABILITY_TYPES = ["지체", "뇌병변", "시각", "청각", "언어", "지적", "자폐성", "정신", "신장", "심장",
                    "호흡기", "간", "안면", "장루·요루", "뇌전증"]
BANKS = ["004", "088", "020", "081", "011", "003", "023", "027", "031", "032"]
BENEFIT_TYPES = ["생계", "의료", "주거", "교육"]


def _k(n: int, per: int) -> int:
    """Defect count: one per `per` rows, at least one so every kind is planted at any scale."""
    return max(1, n // per)


def _disjoint(rng: np.random.Generator, n: int, counts: dict[str, int]) -> dict[str, np.ndarray]:
    pick = rng.permutation(n)
    out, c = {}, 0
    for name, k in counts.items():
        out[name] = np.sort(pick[c : c + k])
        c += k
    return out


def _ymd(d: np.ndarray) -> np.ndarray:
    return np.char.replace(np.datetime_as_string(d, unit="D").astype("U10"), "-", "").astype(object)


def _dates(rng: np.random.Generator, n: int, lo: str, hi: str) -> np.ndarray:
    lo64, hi64 = np.datetime64(lo), np.datetime64(hi)
    return lo64 + rng.integers(0, int((hi64 - lo64).astype(int)), n).astype("timedelta64[D]")


def _updated(rng: np.random.Generator, n: int) -> np.ndarray:
    """Last-change times spread over October 2026, whole seconds (a cursor for incremental runs)."""
    secs = rng.integers(0, 31 * 86400, n)
    return np.datetime64(UPDATED_FROM, "s") + secs.astype("timedelta64[s]")


def _frn(rng: np.random.Generator, n: int) -> np.ndarray:
    """Foreign registration numbers: 7th digit 5-8, check digit with base 13 (all born before 2020)."""
    birth = _dates(rng, n, "1955-01-01", "2006-12-31")
    years = birth.astype("datetime64[Y]").astype(int) + 1970
    months = birth.astype("datetime64[M]").astype(int) % 12 + 1
    days = (birth - birth.astype("datetime64[M]")).astype(int) + 1
    female = rng.random(n) < 0.45
    s = 5 + female.astype(int) + 2 * (years >= 2000).astype(int)
    d = np.empty((n, 13), dtype=np.int64)
    yy = years % 100
    d[:, 0], d[:, 1], d[:, 2], d[:, 3] = yy // 10, yy % 10, months // 10, months % 10
    d[:, 4], d[:, 5], d[:, 6] = days // 10, days % 10, s
    d[:, 7:12] = rng.integers(0, 10, (n, 5))
    d[:, 12] = (13 - (d[:, :12] * RRN_WEIGHTS).sum(axis=1) % 11) % 10
    return _digits(d, (6,))


def _digits(d: np.ndarray, dashes: tuple[int, ...]) -> np.ndarray:
    chars = (d + ord("0")).astype(np.uint8)
    parts, prev = [], 0
    for pos in dashes:
        parts += [chars[:, prev:pos], np.full((len(d), 1), ord("-"), dtype=np.uint8)]
        prev = pos
    parts.append(chars[:, prev:])
    buf = np.hstack(parts)
    return buf.view(f"S{buf.shape[1]}").ravel().astype(str).astype(object)


def brns(rng: np.random.Generator, n: int) -> np.ndarray:
    """Valid business registration numbers `XXX-XX-XXXXX` (office code, type code, serial, check)."""
    d = np.empty((n, 10), dtype=np.int64)
    office = rng.integers(101, 900, n)
    kind = rng.integers(1, 80, n)  # 01-79: individual taxable business
    d[:, 0], d[:, 1], d[:, 2] = office // 100, office // 10 % 10, office % 10
    d[:, 3], d[:, 4] = kind // 10, kind % 10
    d[:, 5:9] = rng.integers(0, 10, (n, 4))
    total = (d[:, :9] * BRN_WEIGHTS).sum(axis=1) + d[:, 8] * 5 // 10
    d[:, 9] = (10 - total % 10) % 10
    return _digits(d, (3, 5))


def _with_updated(cols: dict, rng: np.random.Generator, n: int) -> pa.Table:
    arrays = {k: (v if isinstance(v, pa.Array) else pa.array(v)) for k, v in cols.items()}
    arrays["updated_at"] = pa.array(_updated(rng, n).astype("datetime64[us]"), pa.timestamp("us"))
    return pa.table(arrays)


def _dup(tbl: pa.Table, rows: np.ndarray) -> pa.Table:
    return pa.concat_tables([tbl, tbl.take(pa.array(rows))]) if len(rows) else tbl


def _write_parquet(tbl: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(tbl, tmp, row_group_size=ROW_GROUP, compression="zstd")
    tmp.replace(path)


def _bump_digit(s: str, pos: int) -> str:
    return s[:pos] + str((int(s[pos]) + 1) % 10) + s[pos + 1 :]


def _choice(rng, options: dict[str, float] | list[str], n: int) -> np.ndarray:
    if isinstance(options, dict):
        keys = np.array(list(options), dtype=object)
        p = np.array(list(options.values()))
        return keys[rng.choice(len(keys), n, p=p / p.sum())]
    arr = np.array(options, dtype=object)
    return arr[rng.integers(0, len(arr), n)]


def _hangul_names(rng, n: int) -> np.ndarray:
    from zerodoc.sources.generate import GIVEN_SYLLABLES, SURNAMES

    sur = np.array(list(SURNAMES), dtype=object)
    syl = np.array(GIVEN_SYLLABLES, dtype=object)
    return sur[rng.integers(0, len(sur), n)] + syl[rng.integers(0, len(syl), n)] + syl[rng.integers(0, len(syl), n)]


# ---- CSV deliveries -------------------------------------------------------------------------------


def _csv_lines(tbl: pa.Table, line_defects: dict[int, str], formula_rows: dict[int, str]) -> list[str]:
    """Render rows as CSV text lines, applying per-row text defects the way legacy exports produce them."""
    cols = tbl.column_names
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    pylists = {c: tbl[c].to_pylist() for c in cols}
    for i in range(tbl.num_rows):
        row = []
        for c in cols:
            v = pylists[c][i]
            if v is None:
                row.append("")
            elif isinstance(v, dt.datetime):
                row.append(v.strftime("%Y-%m-%d %H:%M:%S"))
            else:
                row.append(str(v))
        defect = line_defects.get(i)
        if defect:
            kind, col = defect.split(":", 1)
            j = cols.index(col)
            if kind == "thousands":
                row[j] = f"{int(row[j]):,}"
            elif kind == "fullwidth":
                row[j] = row[j].translate(FULLWIDTH)
            elif kind == "extra_column":
                row.append("비고")
            elif kind == "missing_column":
                row.pop()
        if i in formula_rows:
            row[cols.index(formula_rows[i])] = "=cmd|' /C calc'!A0"
        w.writerow(row)
    return out.getvalue().splitlines(keepends=True)


def _write_drop(lines: list[str], folder: Path, files: list[tuple[str, str, bool]]) -> None:
    """Split the data lines over `files` [(name, encoding, bom)], each file with the header."""
    folder.mkdir(parents=True, exist_ok=True)
    header, body = lines[0], lines[1:]
    chunks = np.array_split(np.arange(len(body)), len(files))
    for (name, encoding, bom), idx in zip(files, chunks, strict=True):
        text = header + "".join(body[i] for i in idx)
        data = text.encode(encoding)
        if bom:
            data = b"\xef\xbb\xbf" + data
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)


# ---- entities --------------------------------------------------------------------------------------


def generate_agencies(persons: int, seed: int, out_dir: Path, rrn: np.ndarray, adult: np.ndarray,
                      sig_codes: np.ndarray) -> dict:
    """Write every further agency's stand-ins and drop files; return their expected counts."""
    expected: dict = {}
    adults = rrn[adult]
    drop = out_dir / "drop"

    # ---- MOJ foreign residents (PostgreSQL) -----------------------------------------------------
    rng = np.random.default_rng([seed, 1])
    n = max(persons // 20, 50)
    plan = {"rrn_not_foreign": _k(n, 400), "bad_check_digit": _k(n, 400), "impossible_registered_date": _k(n, 1000),
            "null_nationality": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    frn = _frn(rng, n)
    entry = _dates(rng, n, "2005-01-01", "2026-10-01")
    cols = {
        "foreign_resident_id": np.arange(1, n + 1, dtype=np.int64),
        "frn": frn,
        "name": _choice(rng, LATIN_FAMILY, n) + " " + _choice(rng, LATIN_GIVEN, n),
        "nationality": _choice(rng, NATIONALITIES, n),
        "visa_type": _choice(rng, VISAS, n),
        "sigungu_code": sig_codes[rng.integers(0, len(sig_codes), n)].astype(object),
        "entry_date": _ymd(entry),
        "registered_date": _ymd(entry + rng.integers(1, 90, n).astype("timedelta64[D]")),
    }
    d = _disjoint(rng, n, plan)
    for i in d["rrn_not_foreign"]:
        cols["frn"][i] = cols["frn"][i][:7] + "1" + cols["frn"][i][8:]
    for i in d["bad_check_digit"]:
        cols["frn"][i] = _bump_digit(cols["frn"][i], 13)
    for i in d["impossible_registered_date"]:
        cols["registered_date"][i] = cols["registered_date"][i][:4] + "0231"
    cols["nationality"][d["null_nationality"]] = None
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    _write_parquet(tbl, out_dir / "moj" / "foreign_residents.parquet")
    expected["moj.foreign_residents"] = _counts(tbl.num_rows, plan, dup="duplicate_keys")

    # ---- NTS business registrations (MariaDB) ---------------------------------------------------
    rng = np.random.default_rng([seed, 2])
    n = max(persons // 10, 50)
    plan = {"brn_bad_check_digit": _k(n, 400), "brn_malformed": _k(n, 1000), "invalid_owner_rrn": _k(n, 1000),
            "impossible_opened_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    opened = _dates(rng, n, "1990-01-01", "2026-10-01")
    closed = opened + rng.integers(200, 6000, n).astype("timedelta64[D]")
    is_closed = (rng.random(n) < 0.18) & (closed < np.datetime64("2026-10-01"))
    cols = {
        "business_registration_id": np.arange(1, n + 1, dtype=np.int64),
        "brn": brns(rng, n),
        "owner_rrn": adults[rng.integers(0, len(adults), n)].astype(object),
        "trade_name": _hangul_names(rng, n) + " " + _choice(rng, TRADE_WORDS, n),
        "business_type": _choice(rng, BUSINESS_TYPES, n),
        "opened_date": _ymd(opened),
        "closed_date": pa.array(_ymd(closed), mask=~is_closed),
    }
    d = _disjoint(rng, n, plan)
    for i in d["brn_bad_check_digit"]:
        cols["brn"][i] = _bump_digit(cols["brn"][i], 11)
    for i in d["brn_malformed"]:
        cols["brn"][i] = cols["brn"][i].replace("-", "")[:9]
    for i in d["invalid_owner_rrn"]:
        cols["owner_rrn"][i] = cols["owner_rrn"][i][:7] + "9" + cols["owner_rrn"][i][8:]
    for i in d["impossible_opened_date"]:
        cols["opened_date"][i] = cols["opened_date"][i][:4] + "1332"
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    _write_parquet(tbl, out_dir / "nts" / "business_registrations.parquet")
    # The check digit needs a BRN expectation (quality's valid_business_registration_number): until a
    # suite uses it, those rows pass, so they are stated apart from `quarantined`.
    expected["nts.business_registrations"] = _counts(
        tbl.num_rows, plan, dup="duplicate_keys", unchecked=("brn_bad_check_digit",))

    # ---- MOEL employment-insurance enrolments (CSV drop, CP949 legacy + UTF-8) -----------------
    expected["moel.employment_insurance"] = employment_insurance_delivery(
        np.random.default_rng([seed, 3]), max(persons // 4, 50), adults,
        drop / "moel" / "employment_insurance" / DELIVERY_DATE)

    # ---- MOEL unemployment benefits (CSV drop, UTF-8 with and without BOM) ----------------------
    rng = np.random.default_rng([seed, 4])
    n = max(persons // 25, 50)
    plan = {"amount_fullwidth_digits": _k(n, 1000), "extra_column": _k(n, 1000), "invalid_rrn": _k(n, 1000),
            "impossible_claim_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    claim = _dates(rng, n, "2024-01-01", "2026-10-01")
    days = rng.choice(np.array([120, 150, 180, 210, 240, 270], dtype=np.int32), n)
    daily = rng.integers(64_192, 66_001, n).astype(np.int64)  # 2025 floor/cap of the daily benefit
    cols = {
        "benefit_id": np.arange(1, n + 1, dtype=np.int64),
        "rrn": adults[rng.integers(0, len(adults), n)].astype(object),
        "claim_date": _ymd(claim),
        "benefit_start_date": _ymd(claim + np.timedelta64(7, "D")),
        "benefit_days": days,
        "daily_amount": daily,
        "total_paid": daily * rng.integers(0, days + 1),
    }
    d = _disjoint(rng, n, plan)
    for i in d["invalid_rrn"]:
        cols["rrn"][i] = cols["rrn"][i][:7] + "0" + cols["rrn"][i][8:]
    for i in d["impossible_claim_date"]:
        cols["claim_date"][i] = cols["claim_date"][i][:4] + "0431"
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    line_defects = {int(i): "fullwidth:daily_amount" for i in d["amount_fullwidth_digits"]}
    line_defects |= {int(i): "extra_column:benefit_id" for i in d["extra_column"]}
    lines = _csv_lines(tbl, line_defects, {})
    _write_drop(lines, drop / "moel" / "unemployment_benefits" / DELIVERY_DATE,
                [("UB_20261101_a.csv", "utf-8", True), ("UB_20261101_b.csv", "utf-8", False)])
    expected["moel.unemployment_benefits"] = _counts(tbl.num_rows, plan, dup="duplicate_keys")

    # ---- Police crime-victim cases (CSV drop, UTF-8) ----------------------------------------------
    rng = np.random.default_rng([seed, 5])
    n = max(persons // 100, 50)
    plan = {"missing_column": _k(n, 1000), "invalid_victim_rrn": _k(n, 1000),
            "impossible_incident_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    incident = _dates(rng, n, "2023-01-01", "2026-10-01")
    cols = {
        "case_id": np.arange(1, n + 1, dtype=np.int64),
        "victim_rrn": rrn[rng.integers(0, len(rrn), n)].astype(object),
        "crime_type": _choice(rng, CRIME_TYPES, n),
        "incident_date": _ymd(incident),
        "reported_date": _ymd(incident + rng.integers(0, 20, n).astype("timedelta64[D]")),
        "police_station_code": np.char.add("PS", rng.integers(1001, 1260, n).astype(str)).astype(object),
        "sigungu_code": sig_codes[rng.integers(0, len(sig_codes), n)].astype(object),
        # Free-text summaries span lines inside quotes, as case systems export them.
        "summary": np.where(rng.random(n) < 0.05, "피해 진술 접수\n추가 조사 예정", "피해 진술 접수").astype(object),
    }
    d = _disjoint(rng, n, plan)
    for i in d["invalid_victim_rrn"]:
        cols["victim_rrn"][i] = cols["victim_rrn"][i][:7] + "9" + cols["victim_rrn"][i][8:]
    for i in d["impossible_incident_date"]:
        cols["incident_date"][i] = cols["incident_date"][i][:4] + "0229" if int(cols["incident_date"][i][:4]) % 4 \
            else cols["incident_date"][i][:4] + "0230"
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    lines = _csv_lines(tbl, {int(i): "missing_column:case_id" for i in d["missing_column"]}, {})
    # Embedded newlines: a record may span several physical lines; split files only between records.
    _write_records(lines, drop / "police" / "crime_victim_cases" / DELIVERY_DATE / "VICTIM_20261101.csv")
    expected["police.crime_victim_cases"] = _counts(tbl.num_rows, plan, dup="duplicate_keys")

    # ---- MOHW basic livelihood recipients, disability registry; FSC Youth Leap Accounts (REST) -----
    rng = np.random.default_rng([seed, 6])
    n = max(persons // 30, 50)
    plan = {"invalid_rrn": _k(n, 1000), "negative_benefit": _k(n, 1000),
            "impossible_selected_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    kinds = np.array([",".join(BENEFIT_TYPES[: k]) for k in range(1, 5)], dtype=object)
    cols = {
        "recipient_id": np.arange(1, n + 1, dtype=np.int64),
        "rrn": rrn[rng.integers(0, len(rrn), n)].astype(object),
        "household_size": rng.choice(np.array([1, 2, 3, 4, 5], dtype=np.int32), n, p=[0.6, 0.2, 0.1, 0.07, 0.03]),
        "benefit_types": kinds[rng.integers(0, 4, n)],
        "monthly_benefit": (rng.integers(200, 2000, n) * 1000).astype(np.int64),
        "selected_date": _ymd(_dates(rng, n, "2010-01-01", "2026-10-01")),
    }
    d = _disjoint(rng, n, plan)
    for i in d["invalid_rrn"]:
        cols["rrn"][i] = cols["rrn"][i][:2] + "13" + cols["rrn"][i][4:]
    cols["monthly_benefit"][d["negative_benefit"]] *= -1
    for i in d["impossible_selected_date"]:
        cols["selected_date"][i] = cols["selected_date"][i][:4] + "0632"
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    _write_parquet(tbl, out_dir / "mohw" / "basic_livelihood_recipients.parquet")
    expected["mohw.basic_livelihood_recipients"] = _counts(tbl.num_rows, plan, dup="duplicate_keys")

    rng = np.random.default_rng([seed, 7])
    n = max(persons // 20, 50)
    plan = {"invalid_rrn": _k(n, 1000), "unknown_severity": _k(n, 1000),
            "impossible_registered_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    cols = {
        "registration_id": np.arange(1, n + 1, dtype=np.int64),
        "rrn": rrn[rng.integers(0, len(rrn), n)].astype(object),
        "disability_type": _choice(rng, DISABILITY_TYPES, n),
        "severity": _choice(rng, {"심한 장애": 0.38, "심하지 않은 장애": 0.62}, n),
        "registered_date": _ymd(_dates(rng, n, "1995-01-01", "2026-10-01")),
    }
    d = _disjoint(rng, n, plan)
    for i in d["invalid_rrn"]:
        cols["rrn"][i] = cols["rrn"][i][:7] + "9" + cols["rrn"][i][8:]
    cols["severity"][d["unknown_severity"]] = "3급"  # the grade system abolished in July 2019
    for i in d["impossible_registered_date"]:
        cols["registered_date"][i] = cols["registered_date"][i][:4] + "0931"
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    _write_parquet(tbl, out_dir / "mohw" / "disability_registry.parquet")
    expected["mohw.disability_registry"] = _counts(tbl.num_rows, plan, dup="duplicate_keys")

    rng = np.random.default_rng([seed, 8])
    n = max(persons // 30, 50)
    plan = {"contribution_over_cap": _k(n, 1000), "invalid_rrn": _k(n, 1000),
            "impossible_opened_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    contrib = (rng.integers(1, 71, n) * 10_000).astype(np.int64)  # up to KRW 700,000 a month
    cols = {
        "account_id": np.arange(1, n + 1, dtype=np.int64),
        "rrn": adults[rng.integers(0, len(adults), n)].astype(object),
        "bank_code": _choice(rng, BANKS, n),
        "opened_date": _ymd(_dates(rng, n, "2023-06-15", "2026-10-01")),
        "monthly_contribution": contrib,
        "government_match": (np.minimum(contrib, 700_000) * 0.03).astype(np.int64) // 10 * 10,
        "status": _choice(rng, {"active": 0.93, "closed": 0.07}, n),
    }
    d = _disjoint(rng, n, plan)
    cols["monthly_contribution"][d["contribution_over_cap"]] = 1_000_000
    for i in d["invalid_rrn"]:
        cols["rrn"][i] = cols["rrn"][i][:2] + "13" + cols["rrn"][i][4:]
    for i in d["impossible_opened_date"]:
        cols["opened_date"][i] = cols["opened_date"][i][:4] + "0230"
    tbl = _dup(_with_updated(cols, rng, n), d["duplicate_keys"])
    _write_parquet(tbl, out_dir / "fsc" / "youth_leap_accounts.parquet")
    expected["fsc.youth_leap_accounts"] = _counts(tbl.num_rows, plan, dup="duplicate_keys")
    return expected


def employment_insurance_delivery(rng: np.random.Generator, n: int, adults: np.ndarray, folder: Path,
                                  files: int = 2) -> dict:
    """MOEL employment-insurance enrolments as a CP949 drop delivery of `n` rows over `files` files."""
    plan = {"wage_thousands_separator": _k(n, 1000), "invalid_rrn": _k(n, 1000),
            "impossible_acquired_date": _k(n, 1000), "duplicate_keys": _k(n, 1000)}
    flags = {"formula_text": _k(n, 2000)}
    acquired = _dates(rng, n, "2000-01-01", "2026-10-01")
    lost = acquired + rng.integers(30, 4000, n).astype("timedelta64[D]")
    has_lost = (rng.random(n) < 0.3) & (lost < np.datetime64("2026-10-01"))
    cols = {
        "enrolment_id": np.arange(1, n + 1, dtype=np.int64),
        "rrn": adults[rng.integers(0, len(adults), n)].astype(object),
        "employer_brn": brns(rng, n),
        "workplace_name": _hangul_names(rng, n) + " " + _choice(rng, TRADE_WORDS, n),
        "acquired_date": _ymd(acquired),
        "lost_date": pa.array(_ymd(lost), mask=~has_lost),
        "monthly_wage": (rng.lognormal(np.log(3_000_000), 0.45, n) // 1000 * 1000).astype(np.int64),
    }
    d = _disjoint(rng, n, {**plan, **flags})
    for i in d["invalid_rrn"]:
        cols["rrn"][i] = cols["rrn"][i][:2] + "13" + cols["rrn"][i][4:]
    for i in d["impossible_acquired_date"]:
        cols["acquired_date"][i] = cols["acquired_date"][i][:4] + "0230"
    tbl = _with_updated(cols, rng, n)
    line_defects = {int(i): "thousands:monthly_wage" for i in d["wage_thousands_separator"]}
    tbl = _dup(tbl, d["duplicate_keys"])
    lines = _csv_lines(tbl, line_defects, {int(i): "workplace_name" for i in d["formula_text"]})
    _write_drop(lines, folder, [(f"EI_ACQ_20261101_{k + 1:02d}.csv", "cp949", False) for k in range(files)])
    return _counts(tbl.num_rows, plan, dup="duplicate_keys", flagged=flags)


def _write_records(lines: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes("".join(lines).encode("utf-8"))
    tmp.replace(path)


def _counts(rows: int, plan: dict[str, int], dup: str, unchecked: tuple[str, ...] = (),
            flagged: dict[str, int] | None = None) -> dict:
    quarantined = sum(v * (2 if k == dup else 1) for k, v in plan.items() if k not in unchecked)
    out = {"extracted": rows, "quarantined": quarantined, "passed": rows - quarantined, "defects": dict(plan)}
    if unchecked:
        out["unchecked"] = {k: plan[k] for k in unchecked}
    if flagged:
        out["flagged"] = dict(flagged)
    return out
