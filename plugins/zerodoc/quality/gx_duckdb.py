"""Make Great Expectations 1.24's SQL path work on DuckDB (duckdb_engine); drop once upstream fixes both bugs.

Two upstream defects, each patched narrowly and only for the ``duckdb`` dialect:

1. Empty metric results, then ``IndexError`` in ``SqlAlchemyExecutionEngine.resolve_metric_bundle``
   (great-expectations issues #10738 and #11579; PR #11635 only turns it into a clearer error).
   Root cause: ``SqlAlchemyExecutionEngine.execute_query`` returns the ``CursorResult`` *after* its
   ``with engine.connect()`` block has closed the connection. Drivers that buffer rows client-side
   (psycopg, pymysql) survive that; DuckDB's cursor streams, and the pool's reset-on-return
   (a ``ROLLBACK``) discards the pending result, so ``fetchall()`` returns ``[]`` and ``res[0]``
   raises. Fix: ``_execute_query_with_recovery`` (the single place every GX query goes through while
   the connection is still open) buffers the rows (``result.freeze()``) for DuckDB. Queries GX sends
   are aggregates or ``LIMIT``-ed samples unless result_format is ``COMPLETE``, so buffering is small.

2. No regex support for DuckDB: ``get_dialect_regex_expression`` returns None for duckdb_engine's
   dialect, so ``expect_column_values_to_match_regex`` (and the ``not_match`` / ``_list`` variants)
   raise ``NotImplementedError: Regex is not supported for dialect duckdb``. Fix: for DuckDB use
   ``regexp_matches(column, pattern)``, which is a *search* (like pandas ``str.contains`` that the
   Pandas engine uses), so both engines give the same answer; DuckDB's ``~`` is not used because its
   semantics differ from PostgreSQL's.

``install()`` is idempotent and ``uninstall()`` restores the originals (tests use it to prove the
failures come back without the patch). To drop this module: delete it, remove ``install()`` from
``zerodoc.quality``, and run ``tests/quality/test_gx_duckdb.py`` against the fixed GX release, which
should then pass with ``disabled()`` too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

_REGEX_CONSUMERS = (
    "great_expectations.expectations.metrics.util",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_not_match_regex",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_match_regex_list",
    "great_expectations.expectations.metrics.column_map_metrics.column_values_not_match_regex_list",
    "great_expectations.expectations.metrics.column_aggregate_metrics.column_values_match_regex_values",
    "great_expectations.expectations.metrics.column_aggregate_metrics.column_values_not_match_regex_values",
)

_originals: dict[str, Any] = {}


def _is_duckdb(dialect: Any) -> bool:
    """True for duckdb_engine's dialect (instance or class); GX hands over either, or a module."""
    return getattr(dialect, "name", None) == "duckdb"


def _buffering(original: Callable[..., Any]) -> Callable[..., Any]:
    def _execute_query_with_recovery(connection: sa.Connection, query: Any) -> Any:
        result = original(connection, query)
        if _is_duckdb(connection.dialect) and result.returns_rows:
            # Rows must be read before GX closes the connection (see module docstring, defect 1).
            return result.freeze()()
        return result

    _execute_query_with_recovery.__wrapped__ = original  # type: ignore[attr-defined]
    return staticmethod(_execute_query_with_recovery)


def _with_duckdb_regex(original: Callable[..., Any]) -> Callable[..., Any]:
    def get_dialect_regex_expression(column: Any, regex: str, dialect: Any, positive: bool = True) -> Any:
        if _is_duckdb(dialect):
            matches = sa.func.regexp_matches(column, sa.literal(regex), type_=sa.Boolean)
            return matches if positive else sa.not_(matches)
        return original(column, regex, dialect, positive)

    get_dialect_regex_expression.__wrapped__ = original  # type: ignore[attr-defined]
    return get_dialect_regex_expression


def install() -> None:
    """Apply both patches (idempotent)."""
    if _originals:
        return
    from great_expectations.execution_engine import sqlalchemy_execution_engine as see

    engine_cls = see.SqlAlchemyExecutionEngine
    _originals["execute"] = engine_cls.__dict__["_execute_query_with_recovery"]
    engine_cls._execute_query_with_recovery = _buffering(_originals["execute"].__func__)

    util = importlib.import_module(_REGEX_CONSUMERS[0])
    original_regex = util.get_dialect_regex_expression
    _originals["regex"] = original_regex
    patched = _with_duckdb_regex(original_regex)
    for name in _REGEX_CONSUMERS:
        module = importlib.import_module(name)
        if getattr(module, "get_dialect_regex_expression", None) is original_regex:
            module.get_dialect_regex_expression = patched


def uninstall() -> None:
    """Restore GX's own code (used by tests to show the upstream failures)."""
    if not _originals:
        return
    from great_expectations.execution_engine import sqlalchemy_execution_engine as see

    see.SqlAlchemyExecutionEngine._execute_query_with_recovery = _originals.pop("execute")
    original_regex = _originals.pop("regex")
    for name in _REGEX_CONSUMERS:
        module = importlib.import_module(name)
        if hasattr(module, "get_dialect_regex_expression"):
            module.get_dialect_regex_expression = original_regex


def installed() -> bool:
    return bool(_originals)


@contextmanager
def disabled() -> Iterator[None]:
    """Run a block against unpatched GX, then put the patches back if they were on."""
    was_installed = installed()
    uninstall()
    try:
        yield
    finally:
        if was_installed:
            install()
