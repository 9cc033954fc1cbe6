"""publish_shared in both dbt task modes: parses with no connections, per-model tasks, one writer."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from zerodoc.catalog import datasets
from zerodoc.config import Settings

SHARED_MODELS = sorted(d.model for d in datasets().values())


@pytest.fixture(scope="module")
def manifest_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose render manifest exists, written as `zerodoc run` writes it (dbt parse)."""
    from zerodoc.transform.cosmos_task_group import ensure_manifest

    home = tmp_path_factory.mktemp("manifest_home")
    ensure_manifest(Settings(home=home))
    # Import Cosmos once up front: on two loaded cores its first import alone can approach
    # DagBag's 30 s import timeout, which is not what these tests measure.
    import cosmos.converter  # noqa: F401

    return home


def _publish_dag(monkeypatch: pytest.MonkeyPatch, home: Path, mode: str):
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    monkeypatch.setenv("ZERODOC_HOME", str(home))
    monkeypatch.setenv("ZERODOC_DBT_TASKS", mode)
    bag = DagBag(dag_folder=str(REPO / "dags" / "publish_shared.py"))
    assert bag.import_errors == {}
    return bag.dags["publish_shared"]


def test_watcher_mode_has_one_task_per_model_and_one_writer(monkeypatch, manifest_home):
    dag = _publish_dag(monkeypatch, manifest_home, "watcher")
    ids = set(dag.task_dict)
    for model in (*SHARED_MODELS, "stg_mois__residents", "int_persons"):
        assert {f"dbt.{model}.run", f"dbt.{model}.test"} <= ids, model
    assert "dbt_build" not in ids
    producer = dag.task_dict["dbt.dbt_producer_watcher"]
    # The one dbt process holds the one warehouse slot; per-model tasks only read its reports.
    assert (producer.pool, producer.pool_slots) == ("warehouse_writer", 1)
    assert {t.task_id for t in dag.tasks if t.pool == "warehouse_writer"} == {producer.task_id}
    assert producer.vars == {"ds": "{{ ti.xcom_pull(task_ids='resolve_ds') }}"}
    assert producer.task_id in dag.task_dict["resolve_ds"].downstream_task_ids
    # Embedded deployment: consumers start once the producer ends (dag.test runs one task at a time).
    assert dag.task_dict["dbt.stg_mois__residents.run"].upstream_task_ids == {producer.task_id}
    for t in dag.tasks:
        assert t.owner == "zerodoc-platform" and t.retries >= 1, t.task_id


def test_each_dataset_publishes_after_its_own_model_and_the_writer(monkeypatch, manifest_home):
    dag = _publish_dag(monkeypatch, manifest_home, "watcher")
    released = dag.task_dict["warehouse_released"]
    assert released.upstream_task_ids == {"dbt.dbt_producer_watcher"} and released.trigger_rule == "all_done"
    for name, spec in datasets().items():
        publish = dag.task_dict[f"publish_{name}"]
        assert publish.upstream_task_ids == {
            f"gate_{name}", "resolve_ds", "warehouse_released", f"dbt.{spec.model}.run", f"dbt.{spec.model}.test",
        }, name
        assert publish.trigger_rule == "all_success" and not publish.downstream_task_ids
    assert "dbt.dbt_producer_watcher" in dag.doc_md and "dbt.<model>.run" in dag.doc_md


def test_cluster_deployment_consumers_follow_the_build_live(monkeypatch, manifest_home):
    monkeypatch.setenv("ZERODOC_DEPLOYMENT", "cluster")
    monkeypatch.delenv("ZERODOC_DBT_TASKS", raising=False)
    from zerodoc.transform.cosmos_task_group import dbt_tasks_mode

    assert dbt_tasks_mode() == "watcher"
    dag = _publish_dag(monkeypatch, manifest_home, "watcher")
    first = dag.task_dict["dbt.stg_mois__residents.run"]
    assert first.upstream_task_ids == {"resolve_ds"} and first.deferrable


def test_missing_manifest_falls_back_to_one_dbt_task_and_says_why(monkeypatch, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="zerodoc.orchestration.factory"):
        dag = _publish_dag(monkeypatch, tmp_path, "watcher")
    assert "dbt_build" in dag.task_dict and not any(t.startswith("dbt.") for t in dag.task_dict)
    assert f"{tmp_path}/dbt/render/manifest.json is missing" in caplog.text
    assert "falls back to one dbt_build task" in caplog.text


def test_single_mode_is_one_dbt_build_task_in_the_pool(monkeypatch, manifest_home):
    dag = _publish_dag(monkeypatch, manifest_home, "single")
    build = dag.task_dict["dbt_build"]
    assert (build.pool, build.pool_slots) == ("warehouse_writer", 1)
    assert not any(t.startswith("dbt.") for t in dag.task_dict)
    for name in datasets():
        assert dag.task_dict[f"publish_{name}"].upstream_task_ids == {f"gate_{name}", "dbt_build", "resolve_ds"}
