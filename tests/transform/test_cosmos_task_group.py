"""The Cosmos task group renders from a precompiled manifest without invoking dbt at parse time."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from zerodoc.config import Settings
from zerodoc.transform.runner import run_dbt

from .conftest import DS, write_validated_zone


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    """`dbt parse` as the build step would run it: the only dbt invocation in this module."""
    home = tmp_path_factory.mktemp("cosmos_home")
    write_validated_zone(home)
    cfg = Settings(home=home)
    run_dbt(["parse"], ds=DS, cfg=cfg)
    return cfg


def test_task_group_builds_from_the_manifest_without_running_dbt(manifest, monkeypatch):
    from airflow.sdk import DAG
    from dbt.cli.main import dbtRunner

    from zerodoc.transform.cosmos_task_group import WAREHOUSE_POOL, dbt_task_group, manifest_path

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
    assert {t.pool for t in dag.tasks} == {WAREHOUSE_POOL}
    assert all(t.vars == {"ds": "{{ ds }}"} for t in dag.tasks if hasattr(t, "vars"))


def test_missing_manifest_fails_loudly_instead_of_parsing(tmp_path):
    from zerodoc.transform.cosmos_task_group import dbt_task_group

    with pytest.raises(FileNotFoundError, match="dbt parse"):
        dbt_task_group(cfg=Settings(home=tmp_path), manifest=tmp_path / "nope.json")
