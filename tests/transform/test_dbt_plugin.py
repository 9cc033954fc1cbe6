"""The dbt-duckdb plugin: zd_pseudonym on every connection and cursor, equal to the Python pseudonym."""

from __future__ import annotations

import duckdb
import pytest

from zerodoc.config import ConfigError
from zerodoc.privacy import pseudonymize
from zerodoc.transform.dbt_plugin import Plugin


def test_macro_on_connection_and_each_cursor(pseudonym_key):
    plugin = Plugin(name="dbt_plugin", plugin_config={})
    con = duckdb.connect()
    plugin.configure_connection(con)
    cur = con.cursor()
    # A cursor is a separate DuckDB connection: TEMP macros of the parent are not visible there.
    with pytest.raises(duckdb.CatalogException):
        cur.execute("select zd_pseudonym('800101-1234567')")
    plugin.configure_cursor(cur)
    expected = pseudonymize("800101-1234567", pseudonym_key)
    assert cur.execute("select zd_pseudonym('800101-1234567')").fetchone()[0] == expected
    assert con.execute("select zd_pseudonym('8001011234567')").fetchone()[0] == expected
    assert con.execute("select zd_pseudonym(null)").fetchone()[0] is None


def test_missing_key_fails_when_the_profile_loads(monkeypatch):
    monkeypatch.delenv("ZERODOC_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ConfigError, match="ZERODOC_PSEUDONYM_KEY"):
        Plugin(name="dbt_plugin", plugin_config={})


def test_dbt_duckdb_resolves_the_module_path(pseudonym_key):
    from dbt.adapters.duckdb.plugins import BasePlugin

    plugin = BasePlugin.create("zerodoc.transform.dbt_plugin")
    assert isinstance(plugin, Plugin)
