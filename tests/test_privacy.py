import hashlib
import hmac

import duckdb

from zerodoc.privacy import contains_rrn, duckdb_macro_sql, pseudonymize


def test_pseudonym_is_hmac_of_digits():
    key = b"k" * 40
    want = hmac.new(key, b"8001011234567", hashlib.sha256).hexdigest()
    assert pseudonymize("800101-1234567", key) == want == pseudonymize("8001011234567", key)


def test_duckdb_macro_matches_python_for_many_ids_and_keys():
    for key in (b"short-key-16byte", b"x" * 64, b"y" * 100):
        con = duckdb.connect()
        con.execute(duckdb_macro_sql(key))
        ids = [f"{i:06d}-{(i % 8) + 1}{i * 7919 % 1000000:06d}" for i in range(1, 200)]
        got = con.execute("select zd_pseudonym(x) from unnest(?) t(x)", [ids]).fetchall()
        assert [g[0] for g in got] == [pseudonymize(i, key) for i in ids]
        assert con.execute("select zd_pseudonym(NULL)").fetchone()[0] is None


def test_different_keys_give_unlinkable_pseudonyms():
    assert pseudonymize("800101-1234567", b"a" * 32) != pseudonymize("800101-1234567", b"b" * 32)


def test_contains_rrn():
    assert contains_rrn("id 800101-1234567 x")
    assert contains_rrn("8001011234567")
    assert not contains_rrn("3d1020e20b11b8118d8d68facaa4")
    assert not contains_rrn("800101-9234567")
    assert not contains_rrn("ffd0749440071234567890123e92de")  # digits inside a hex pseudonym
    assert not contains_rrn("0.3693082865714")  # the fraction of a ratio
    assert contains_rrn("id=8001011234567.")  # a sentence may end right after an ID


def test_no_false_alarms_on_pseudonyms():
    hits = [p for i in range(20_000) if contains_rrn(p := pseudonymize(f"{i:06d}-1000000", b"k" * 32))]
    assert hits == []
