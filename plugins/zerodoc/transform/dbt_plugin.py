"""dbt-duckdb plugin: the `zd_pseudonym` TEMP macro and the run's date (`zerodoc_ds`) on every connection and cursor."""

from __future__ import annotations

import os
import re
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from zerodoc.config import pseudonym_key_from_env
from zerodoc.privacy import duckdb_macro_sql

DS_ENV = "ZERODOC_DS"
_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def ds_variable_sql() -> str | None:
    """`SET VARIABLE zerodoc_ds` from ZERODOC_DS (the run's logical date), or None when it is not set.

    The date reaches SQL at run time (macros/as_of_date.sql, the sources' external_location), not
    through `--vars`: dbt re-parses the whole project whenever vars change, i.e. every day.
    """
    ds = os.environ.get(DS_ENV)
    if not ds:
        return None
    if not _DS.match(ds):
        raise ValueError(f"{DS_ENV} must be YYYY-MM-DD, got {ds!r}")
    return f"set variable zerodoc_ds = '{ds}'"


class Plugin(BasePlugin):
    """Temp objects in DuckDB belong to one connection, and every dbt cursor is a new one: set both."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # Read the key once, when the profile is loaded, so a missing key fails before any model runs.
        self._macro_sql = duckdb_macro_sql(pseudonym_key_from_env())

    def configure_connection(self, conn) -> None:
        # Executed on the raw DuckDB handle, not through dbt's add_query, so the pads are never logged.
        _configure(conn, self._macro_sql)
        # GLOBAL settings: once per database, not per cursor.
        conn.execute(f"set checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        # No vacuum by default: the run's on-run-end hook (macros/vacuum.sql) allows it for the closing
        # checkpoint once deleted rows make up its dead_fraction (20 %) of an incremental table.
        conn.execute("set max_vacuum_tasks = 0")

    def configure_cursor(self, cursor) -> None:
        _configure(cursor, self._macro_sql)


# A daily run commits many small deletes and inserts; DuckDB checkpoints whenever the WAL passes
# checkpoint_threshold (16 MB by default), which cost ~1 s per affected-key model at 1M persons. One
# checkpoint when the run closes the database does the same work once.
CHECKPOINT_THRESHOLD = "1GB"


def _configure(handle, macro_sql: str) -> None:
    """What belongs to one DuckDB connection (every dbt cursor is a new one): the TEMP macro, the date."""
    handle.execute(macro_sql)
    ds_sql = ds_variable_sql()
    if ds_sql:
        handle.execute(ds_sql)
