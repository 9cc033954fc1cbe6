import hashlib
import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from zerodoc.catalog import agencies, entity
from zerodoc.config import settings
from zerodoc.quality.identifiers import is_valid_rrn
from zerodoc.sources.extract import extract
from zerodoc.sources.generate import generate
from zerodoc.sources.generate_agencies import brns

NEW = ["moj.foreign_residents", "nts.business_registrations", "moel.employment_insurance",
       "moel.unemployment_benefits", "police.crime_victim_cases", "mohw.basic_livelihood_recipients",
       "mohw.disability_registry", "fsc.youth_leap_accounts"]


@pytest.fixture
def generated(zerodoc_home, monkeypatch):
    for a in agencies().values():
        monkeypatch.delenv(f"AIRFLOW_CONN_{a.conn_id.upper()}", raising=False)
    cfg = settings()
    return cfg, generate(2000, 9, cfg.sources_dir)


def _tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_declared_entity_has_an_exact_plan(generated):
    _, expected = generated
    declared = {e.qualified for a in agencies().values() for e in a.entities.values()}
    assert declared == set(NEW) | {"mois.residents", "mois.households", "nts.income"}
    for q in NEW:
        e = expected[q]
        assert e["passed"] + e["quarantined"] == e["extracted"], q
        assert all(v >= 1 for v in e["defects"].values()), q


def test_same_seed_same_bytes_for_every_source(generated, tmp_path):
    cfg, _ = generated
    generate(2000, 9, tmp_path / "again")
    assert _tree_digest(tmp_path / "again") == _tree_digest(cfg.sources_dir)


@pytest.mark.parametrize("qualified", NEW)
def test_extract_counts_match_the_plan_and_rerun_is_identical(generated, qualified):
    cfg, expected = generated
    first = extract(qualified, "2026-11-20", cfg)
    assert first.rows == expected[qualified]["extracted"]
    data, manifest = first.path.read_bytes(), first.manifest_path.read_bytes()
    second = extract(qualified, "2026-11-20", cfg)
    assert (second.path.read_bytes(), second.manifest_path.read_bytes()) == (data, manifest)
    meta = pq.ParquetFile(first.path).metadata
    assert meta.num_row_groups == 1  # small: one group; large extracts use 122,880-row groups
    table = pq.read_table(first.path)
    if entity(qualified).kind == "rest":  # the stand-in is not paged JSON: no record can break
        assert json.loads(manifest)["parse_errors"] == 0 == table.num_rows - table["_parse_error"].null_count
    elif "_parse_error" in table.column_names:
        line_kinds = {"wage_thousands_separator", "amount_fullwidth_digits", "extra_column", "missing_column"}
        line_defects = {k: v for k, v in expected[qualified]["defects"].items() if k in line_kinds}
        parse_errors = pc.sum(pc.is_valid(table["_parse_error"])).as_py()
        assert json.loads(manifest)["parse_errors"] == parse_errors == sum(line_defects.values())
        flagged = pc.sum(pc.is_valid(table["_flags"])).as_py()
        assert flagged == sum(expected[qualified].get("flagged", {}).values())


@pytest.mark.parametrize("qualified", ["moel.employment_insurance", "moel.unemployment_benefits",
                                       "police.crime_victim_cases"])
def test_generated_deliveries_read_the_same_fast_or_exact(generated, qualified, monkeypatch):
    from zerodoc.sources import extract as ex
    from zerodoc.sources.csvdrop import FileStats, read_delivery_file_fast

    cfg, _ = generated
    # The generated files hold records with a field too many or too few, wrong-typed values, formula
    # text and (police) summaries whose quoted text spans lines: the fast reader must take every file
    # itself, not hand it to the exact one.
    ent = entity(qualified)
    folder = ex.delivery_dir(agencies()[ent.agency], ent, "2026-11-20", cfg)
    for path in sorted(folder.glob("*.csv")):
        assert read_delivery_file_fast(path, path.name, ent.columns, FileStats(path.name, "")) is not None, path
    fast = extract(qualified, "2026-11-20", cfg).path.read_bytes()
    monkeypatch.setattr(ex, "CSV_FAST_PATH", False)
    assert extract(qualified, "2026-11-20", cfg).path.read_bytes() == fast


def test_identifiers_have_real_formats(generated):
    cfg, _ = generated
    frn = pq.read_table(cfg.sources_dir / "moj/foreign_residents.parquet")["frn"].to_pylist()
    assert sum(r[7] in "5678" and is_valid_rrn(r) for r in frn) == len(frn) - 2  # not-foreign + bad check digit

    assert all(is_valid_brn(b) for b in brns(np.random.default_rng(1), 1000))


def is_valid_brn(s: str) -> bool:
    """The NTS rule, written out independently of the generator."""
    d = [int(c) for c in s.replace("-", "")]
    total = sum(x * w for x, w in zip(d[:9], (1, 3, 7, 1, 3, 7, 1, 3, 5), strict=True)) + d[8] * 5 // 10
    return len(s) == 12 and s[3] == s[6] == "-" and d[9] == (10 - total % 10) % 10


def test_cp949_delivery_is_really_cp949(generated):
    cfg, _ = generated
    files = sorted((cfg.sources_dir / "drop/moel/employment_insurance").rglob("*.csv"))
    raw = files[0].read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    assert "workplace_name" in raw.decode("cp949")
