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


def test_run_date_becomes_a_session_variable_on_every_cursor(pseudonym_key, monkeypatch):
    """The logical date reaches SQL as `zerodoc_ds` at run time, so dbt's parse does not depend on it."""
    monkeypatch.setenv("ZERODOC_DS", "2025-03-02")
    plugin = Plugin(name="dbt_plugin", plugin_config={})
    con = duckdb.connect()
    plugin.configure_connection(con)
    cur = con.cursor()
    plugin.configure_cursor(cur)
    for handle in (con, cur):
        (as_of,) = handle.execute("select cast(getvariable('zerodoc_ds') as date)").fetchone()
        assert as_of.isoformat() == "2025-03-02"
    monkeypatch.setenv("ZERODOC_DS", "2025-03-02'; drop table x; --")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        plugin.configure_cursor(con.cursor())


def test_a_new_date_keeps_dbts_partial_parse(built, monkeypatch):
    """Two runs for different dates: the second reuses the saved manifest (no full re-parse)."""
    from zerodoc.transform.runner import log_dir, run_dbt

    cfg, _ = built
    run_dbt(["parse"], ds="2025-03-02", cfg=cfg)
    log = (log_dir(cfg) / "dbt.log").read_text(encoding="utf-8")
    last_run = log[log.rfind("Running with dbt="):]
    assert "Unable to do partial parsing" not in last_run and "Starting full parse" not in last_run
