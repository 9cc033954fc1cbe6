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


def _row_groups(con, table: str) -> int:
    return con.execute(f"select count(distinct row_group_id) from pragma_storage_info('{table}')").fetchone()[0]


def _table_with_deleted_rows(path, percent: int) -> None:
    """shared.residence_v1 replaced by 300k rows of which `percent` % are deleted, written without vacuum."""
    with duckdb.connect(str(path)) as con:
        con.execute("set max_vacuum_tasks = 0")
        con.execute("create or replace table shared.residence_v1 as"
                    " select range as i, md5(cast(range as varchar)) as s from range(300000)")
        con.execute("checkpoint")
        con.execute(f"delete from shared.residence_v1 where hash(i) % 100 < {percent}")


def test_connections_start_with_vacuum_off(pseudonym_key):
    plugin = Plugin(name="dbt_plugin", plugin_config={})
    con = duckdb.connect()
    plugin.configure_connection(con)
    assert con.execute("select current_setting('max_vacuum_tasks')").fetchone()[0] == 0


def test_without_vacuum_a_checkpoint_keeps_deleted_rows_in_place(tmp_path):
    """Why the plugin turns vacuum off: with DuckDB's default a checkpoint after many deletes rewrites the
    table's row groups (merges them), which a daily run's scattered deletes triggered every day."""
    groups = {}
    for tasks in (0, 100):
        path = tmp_path / f"v{tasks}.duckdb"
        with duckdb.connect(str(path)) as con:
            con.execute(f"set max_vacuum_tasks = {tasks}")
            con.execute("create table t as select range as i, md5(cast(range as varchar)) as s from range(1000000)")
            con.execute("checkpoint")
            before = _row_groups(con, "t")
            con.execute("delete from t where hash(i) % 100 < 30")
            con.execute("checkpoint")
            groups[tasks] = (before, _row_groups(con, "t"))
    assert groups[0][0] == groups[0][1]
    assert groups[100][1] < groups[100][0]


def test_vacuum_is_allowed_once_deleted_rows_reach_a_fifth_of_a_table(built, tmp_path):
    """macros/vacuum.sql (on-run-end): below 20 % deleted rows the closing checkpoint keeps vacuum off,
    from 20 % on it allows it and says which tables are due."""
    import shutil

    from zerodoc.config import Settings
    from zerodoc.transform.runner import log_dir, run_dbt

    cfg, _ = built
    mine = Settings(home=tmp_path / "home")
    mine.warehouse_path.parent.mkdir(parents=True)
    shutil.copyfile(cfg.warehouse_path, mine.warehouse_path)

    def last_run_log() -> str:
        log = (log_dir(mine) / "dbt.log").read_text(encoding="utf-8")
        return log[log.rfind("Running with dbt="):]

    _table_with_deleted_rows(mine.warehouse_path, 10)
    run_dbt(["run-operation", "vacuum_when_due"], ds="2025-03-01", cfg=mine)
    assert "vacuum due" not in last_run_log()
    assert "set global max_vacuum_tasks = 0" in last_run_log()

    _table_with_deleted_rows(mine.warehouse_path, 30)
    run_dbt(["run-operation", "vacuum_when_due"], ds="2025-03-01", cfg=mine)
    assert "vacuum due (deleted rows >= 0.2 of shared.residence_v1)" in last_run_log()
    assert "reset global max_vacuum_tasks" in last_run_log()
