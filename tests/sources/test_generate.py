import hashlib

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zerodoc.quality.identifiers import is_valid_rrn
from zerodoc.sources.generate import DefectPlan, generate, load_regions


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    return out, generate(5000, 7, out)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes(generated, tmp_path):
    out, _ = generated
    generate(5000, 7, tmp_path)
    for rel in ("mois/residents.parquet", "mois/households.parquet", "nts/income.parquet"):
        assert _digest(out / rel) == _digest(tmp_path / rel), rel


def test_other_seed_other_data(generated, tmp_path):
    out, _ = generated
    generate(5000, 8, tmp_path)
    assert _digest(out / "mois/residents.parquet") != _digest(tmp_path / "mois/residents.parquet")


def test_defect_plan_is_exact(generated):
    out, expected = generated
    res = pq.read_table(out / "mois/residents.parquet")
    plan = DefectPlan(5000)
    assert res.num_rows == 5000 + plan.resident_duplicate_keys
    assert res["name"].null_count == plan.resident_null_name
    invalid = sum(not is_valid_rrn(r) for r in res["rrn"].to_pylist())
    assert invalid == plan.resident_bad_check_digit + plan.resident_bad_month
    impossible = sum(r.endswith("0230") for r in res["birth_date"].to_pylist())
    assert impossible == plan.resident_impossible_birth_date
    assert expected["mois.residents"]["extracted"] == res.num_rows
    assert expected["mois.residents"]["passed"] + expected["mois.residents"]["quarantined"] == res.num_rows


def test_valid_people_have_unique_valid_numbers(generated):
    out, _ = generated
    res = pq.read_table(out / "mois/residents.parquet").slice(0, 5000)
    rrns = res["rrn"].to_pylist()
    assert pc.count_distinct(res["rrn"]).as_py() == 5000
    assert sum(is_valid_rrn(r) for r in rrns) == 5000 - 2 * (5000 // 400)
    # numbers issued from October 2020 on are valid without a check digit; some must exist
    assert any(r[:2] in {"21", "22", "23", "24", "25", "26"} and r[7] in "34" for r in rrns)


def test_names_are_hangul_and_regions_real(generated):
    out, _ = generated
    res = pq.read_table(out / "mois/residents.parquet")
    names = [n for n in res["name"].to_pylist() if n]
    assert all(all("가" <= ch <= "힣" for ch in n) and 2 <= len(n) <= 4 for n in names)
    codes = {r["sigungu_code"] for r in load_regions()}
    assert set(res["sigungu_code"].to_pylist()) <= codes


def test_too_small_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 1000"):
        generate(10, 1, tmp_path)
