"""Boundary validation: GX suites on DuckDB, split into validated and quarantine, with audit reports."""

from __future__ import annotations

import logging

# GX logs one INFO line per public-API function at import ("Skipping registering function ...");
# under Airflow's INFO root logger that floods every task log. Its warnings still come through.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

# Importing `expectations` registers the custom expectations with GX.
from zerodoc.quality import expectations, gx_duckdb  # noqa: E402

gx_duckdb.install()
# One GX module pins its own logger to INFO at import; let it inherit the level above instead.
logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.NOTSET)

__all__ = ["expectations", "gx_duckdb"]
