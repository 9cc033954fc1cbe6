"""dbt-duckdb plugin that creates the `zd_pseudonym` TEMP macro on every connection and cursor dbt uses."""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from zerodoc.config import pseudonym_key_from_env
from zerodoc.privacy import duckdb_macro_sql


class Plugin(BasePlugin):
    """Temp objects in DuckDB belong to one connection, and every dbt cursor is a new one: set both."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        # Read the key once, when the profile is loaded, so a missing key fails before any model runs.
        self._macro_sql = duckdb_macro_sql(pseudonym_key_from_env())

    def configure_connection(self, conn) -> None:
        # Executed on the raw DuckDB handle, not through dbt's add_query, so the pads are never logged.
        conn.execute(self._macro_sql)

    def configure_cursor(self, cursor) -> None:
        cursor.execute(self._macro_sql)
