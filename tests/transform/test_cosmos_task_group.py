"""The Cosmos watcher task group renders from a precompiled manifest without invoking dbt at parse time."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from zerodoc.config import Settings
from zerodoc.transform.runner import target_dir

from .conftest import write_validated_zone


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    """`dbt parse` as the build step would run it: the only dbt invocation in this module."""
    from zerodoc.transform.cosmos_task_group import ensure_manifest

    home = tmp_path_factory.mktemp("cosmos_home")
    write_validated_zone(home)
    cfg = Settings(home=home)
    ensure_manifest(cfg)
    return cfg


def test_task_group_builds_from_the_manifest_without_running_dbt(manifest, monkeypatch):
    from airflow.sdk import DAG
    from dbt.cli.main import dbtRunner

    from zerodoc.transform.cosmos_task_group import WAREHOUSE_POOL, dbt_task_group, manifest_path, model_task_ids

    def forbidden(*args, **kwargs):
        raise AssertionError("dbt was invoked at DAG parse time")

    real_popen = subprocess.Popen

    def popen_without_dbt(cmd, *args, **kwargs):
        if "dbt" in " ".join(map(str, cmd if isinstance(cmd, list | tuple) else [cmd])):
            forbidden()
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(dbtRunner, "invoke", forbidden)
    monkeypatch.setattr(subprocess, "Popen", popen_without_dbt)

    with DAG("cosmos_probe", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:
        group = dbt_task_group(cfg=manifest)

    assert manifest_path(manifest).exists()
    assert manifest_path(manifest) != target_dir(manifest) / "manifest.json"  # `dbt build` rewrites that one
    task_ids = set(dag.task_dict)
    for model in (
        "stg_mois__residents",
        "household_v1",
        "living_population_by_region_v1",
        "youth_leap_eligibility_v1",
        "benefit_notifications_v1",
    ):
        assert f"{group.group_id}.{model}.run" in task_ids, model
        assert f"{group.group_id}.{model}.test" in task_ids, model
    assert any(t.startswith(f"{group.group_id}.standard_median_incomes") for t in task_ids), sorted(task_ids)
    # Order follows the manifest's lineage: the household mart waits for the person spine.
    upstream = dag.task_dict[f"{group.group_id}.household_v1.run"].upstream_task_ids
    assert f"{group.group_id}.int_persons.test" in upstream
    assert model_task_ids(group, "household_v1") == ["dbt.household_v1.run", "dbt.household_v1.test"]
    # One dbt process, the producer, is the one writer: only it takes the warehouse pool slot.
    producer = dag.task_dict["dbt.dbt_producer_watcher"]
    assert type(producer).__name__ == "ZeroDocDbtProducer"
    assert {t.task_id for t in dag.tasks if t.pool == WAREHOUSE_POOL} == {producer.task_id}
    assert producer.vars == {"ds": "{{ ds }}"}
    sensors = [t for t in dag.tasks if hasattr(t, "model_unique_id")]
    assert len(sensors) == len(dag.tasks) - 2  # everything but the producer and its done marker
    assert {type(t).__name__ for t in sensors} == {
        "ZeroDocDbtRunWatcherOperator", "ZeroDocDbtTestWatcherOperator", "ZeroDocDbtSeedWatcherOperator",
    }
    # live: consumers start with the producer and wait for its reports in the triggerer
    assert all(t.deferrable for t in sensors)
    assert not dag.task_dict["dbt.stg_mois__residents.run"].upstream_task_ids


def test_not_live_consumers_start_after_the_producer_ends(manifest):
    """dag.test() runs one task at a time: a consumer started before the producer would wait forever."""
    from airflow.sdk import DAG

    from zerodoc.transform.cosmos_task_group import dbt_task_group

    with DAG("cosmos_probe_2", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:
        dbt_task_group(cfg=manifest, live=False)
    sensors = [t for t in dag.tasks if hasattr(t, "model_unique_id")]
    roots = {t.task_id for t in sensors if t.upstream_task_ids == {"dbt.dbt_producer_watcher"}}
    assert "dbt.stg_mois__residents.run" in roots and "dbt.regions.seed" in roots
    assert all(dag.task_dict[r].trigger_rule == "all_done" for r in roots)
    assert all(t.upstream_task_ids for t in dag.tasks if t.task_id != "dbt.dbt_producer_watcher")


def test_consumer_retry_never_runs_dbt_itself(manifest):
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowFailException

    from zerodoc.transform.cosmos_task_group import dbt_task_group

    with DAG("cosmos_probe_3", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:
        dbt_task_group(cfg=manifest)
    sensor = dag.task_dict["dbt.income_v1.run"]
    with pytest.raises(AirflowFailException, match=r"model\.zerodoc\.income_v1: the producer .* never runs dbt"):
        sensor._fallback_to_non_watcher_run(2, {})


def test_run_results_feed_only_this_build(tmp_path):
    from zerodoc.transform.cosmos_task_group import node_results

    path = tmp_path / "run_results.json"
    path.write_text('{"results": [{"unique_id": "model.zerodoc.income_v1", "status": "error", "message": "boom"}]}')
    assert node_results(path, since=0) == [("model.zerodoc.income_v1", "error", "boom")]
    assert node_results(path, since=path.stat().st_mtime + 1) == []  # a previous build's file
    assert node_results(tmp_path / "missing.json", since=0) == []


def test_json_events_reach_the_callback_line_by_line():
    import os
    import sys

    from zerodoc.transform.cosmos_task_group import dbt_json_events

    lines: list[str] = []
    before = os.environ.get("DBT_LOG_FORMAT")
    with dbt_json_events(lines.append):
        assert os.environ["DBT_LOG_FORMAT"] == "json"
        sys.stdout.write('{"a": 1}\n{"b"')
        sys.stdout.write(': 2}\n')
    assert lines == ['{"a": 1}', '{"b": 2}']
    assert os.environ.get("DBT_LOG_FORMAT") == before


def test_mode_setting(monkeypatch):
    from zerodoc.transform.cosmos_task_group import dbt_tasks_mode

    monkeypatch.delenv("ZERODOC_DBT_TASKS", raising=False)
    monkeypatch.delenv("ZERODOC_DEPLOYMENT", raising=False)
    assert dbt_tasks_mode() == "single"
    assert dbt_tasks_mode("cluster") == "watcher"
    monkeypatch.setenv("ZERODOC_DBT_TASKS", "watcher")
    assert dbt_tasks_mode() == "watcher"
    monkeypatch.setenv("ZERODOC_DBT_TASKS", "per-model")
    with pytest.raises(ValueError, match="ZERODOC_DBT_TASKS must be one of"):
        dbt_tasks_mode()


def test_single_task_mode_set_up_parses_a_new_home_once(tmp_path, monkeypatch):
    """Set-up leaves dbt's partial-parse state so the first build does not parse the whole project."""
    from zerodoc.transform.cosmos_task_group import ensure_manifest_for_mode, manifest_path

    monkeypatch.delenv("ZERODOC_DBT_TASKS", raising=False)
    monkeypatch.setenv("ZERODOC_HOME", str(tmp_path))
    cfg = Settings(home=tmp_path)
    assert ensure_manifest_for_mode(cfg, "embedded") is None
    state = target_dir(cfg) / "partial_parse.msgpack"
    assert state.is_file() and not manifest_path(cfg).exists()  # no per-model manifest to publish
    parsed = state.stat().st_mtime_ns
    assert ensure_manifest_for_mode(cfg, "embedded") is None
    assert state.stat().st_mtime_ns == parsed  # a parsed home is not parsed again


def test_missing_manifest_fails_loudly_instead_of_parsing(tmp_path):
    from zerodoc.transform.cosmos_task_group import dbt_task_group

    with pytest.raises(FileNotFoundError, match="dbt parse"):
        dbt_task_group(cfg=Settings(home=tmp_path), manifest=tmp_path / "nope.json")


def test_model_task_ids_for_models_with_and_without_tests():
    from types import SimpleNamespace

    from zerodoc.transform.cosmos_task_group import model_task_ids

    ids = ["dbt.income_v1.run", "dbt.income_v1.test", "dbt.income_v1_extra_run", "dbt.build_as_of_run"]
    group = SimpleNamespace(group_id="dbt", iter_tasks=lambda: [SimpleNamespace(task_id=i) for i in ids])
    assert model_task_ids(group, "income_v1") == ["dbt.income_v1.run", "dbt.income_v1.test"]
    assert model_task_ids(group, "build_as_of") == ["dbt.build_as_of_run"]
    with pytest.raises(KeyError, match="no task"):
        model_task_ids(group, "residence_v1")


def test_a_test_dbt_skipped_does_not_fail_the_healthy_model_it_touches(manifest):
    """A relationships test between a broken and a healthy model is skipped by dbt: it counts for neither."""
    from types import SimpleNamespace

    from airflow.sdk import DAG

    from zerodoc.transform.cosmos_task_group import dbt_task_group

    with DAG("cosmos_probe_4", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:
        dbt_task_group(cfg=manifest)
    producer = dag.task_dict["dbt.dbt_producer_watcher"]
    producer.tests_per_model = {"model.zerodoc.a": ["test.zerodoc.t1", "test.zerodoc.rel"],
                                "model.zerodoc.b": ["test.zerodoc.rel"]}
    producer.test_results_per_model = {"model.zerodoc.a": {"test.zerodoc.t1": "pass"}}
    pushed: list = []
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.append((key, value)))
    producer._drop_skipped_test(ti, "test.zerodoc.rel")
    # a's other test passed: its aggregate is pass; b has no test left that ran, so no aggregate
    assert pushed == [("model__zerodoc__a_tests_status", "pass")]
    assert producer.tests_per_model == {"model.zerodoc.a": ["test.zerodoc.t1"], "model.zerodoc.b": []}
