"""The GX-on-DuckDB fix: without it GX loses every SQL result and has no regex; with it, exact counts."""

from __future__ import annotations

from pathlib import Path

import duckdb
import great_expectations as gx
import pytest
import sqlalchemy as sa

from zerodoc.quality import gx_duckdb


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    path: Path = tmp_path_factory.mktemp("gx_duckdb") / "t.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        """CREATE TABLE t AS SELECT range AS id,
                  CASE WHEN range = 3 THEN NULL ELSE 'a' || range END AS s,
                  'xab' || range AS u
           FROM range(10)"""
    )
    con.close()
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_sql(name="d", connection_string=f"duckdb:///{path}")
    asset = source.add_table_asset(name="t", table_name="t")
    yield asset.add_batch_definition_whole_table("all").get_batch()
    source.get_engine().dispose()


EXPECTED = [
    (gx.expectations.ExpectColumnValuesToNotBeNull(column="s"), 1),
    (gx.expectations.ExpectColumnValuesToBeUnique(column="id"), 0),
    (gx.expectations.ExpectColumnValuesToBeInSet(column="id", value_set=[1, 2]), 8),
    (gx.expectations.ExpectColumnValuesToBeBetween(column="id", min_value=0, max_value=5), 4),
    # regexp_matches searches, like pandas str.contains: unanchored 'ab' matches 'xab0'
    (gx.expectations.ExpectColumnValuesToMatchRegex(column="u", regex="ab[0-9]"), 0),
    (gx.expectations.ExpectColumnValuesToMatchRegex(column="s", regex="^a[0-4]$"), 5),
    (gx.expectations.ExpectColumnValuesToNotMatchRegex(column="s", regex="^a[0-4]$"), 4),
]


@pytest.mark.parametrize(("expectation", "unexpected"), EXPECTED, ids=lambda e: type(e).__name__)
def test_expectations_give_exact_counts_with_the_fix(batch, expectation, unexpected: int) -> None:
    assert gx_duckdb.installed()
    result = batch.validate(expectation, result_format="SUMMARY")
    assert result.result["unexpected_count"] == unexpected, result.exception_info


def test_without_the_fix_gx_hits_the_upstream_index_error(batch) -> None:
    """GX issues #10738 / #11579: the cursor result is read after the connection closed."""
    with gx_duckdb.disabled():
        assert not gx_duckdb.installed()
        result = batch.validate(
            gx.expectations.ExpectColumnValuesToNotBeNull(column="s"), result_format="SUMMARY"
        )
    assert gx_duckdb.installed()
    messages = [v["exception_message"] for v in result.exception_info.values() if isinstance(v, dict)]
    assert not result.success
    assert "list index out of range" in messages
    assert "unexpected_count" not in result.result


def test_without_the_fix_gx_has_no_duckdb_regex(batch) -> None:
    from great_expectations.expectations.metrics import util

    dialect = batch.data.execution_engine.engine.dialect
    column = sa.column("s")
    with gx_duckdb.disabled():
        assert util.get_dialect_regex_expression(column, "^a", dialect) is None
    expression = util.get_dialect_regex_expression(column, "^a", dialect)
    assert "regexp_matches" in str(expression.compile(dialect=dialect))


def test_install_is_idempotent_and_only_touches_duckdb() -> None:
    from great_expectations.execution_engine.sqlalchemy_execution_engine import SqlAlchemyExecutionEngine
    from great_expectations.expectations.metrics import util

    patched = SqlAlchemyExecutionEngine.__dict__["_execute_query_with_recovery"]
    gx_duckdb.install()
    assert SqlAlchemyExecutionEngine.__dict__["_execute_query_with_recovery"] is patched
    # Other dialects still get GX's own answer (SQLite: REGEXP via regexp_match).
    sqlite = sa.create_engine("sqlite://").dialect
    assert util.get_dialect_regex_expression(sa.column("s"), "^a", sa.dialects.sqlite) is not None
    engine = sa.create_engine("sqlite://")
    with engine.connect() as con:
        result = SqlAlchemyExecutionEngine._execute_query_with_recovery(con, sa.text("SELECT 1"))
        assert type(result).__name__ == "CursorResult" and sqlite.name == "sqlite"
