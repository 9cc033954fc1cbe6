"""Cosmos task group for the dbt project, rendered from a precompiled manifest (no dbt at DAG parse).

Not named cosmos.py: Airflow imports every plugins/ file as a top-level module named after its
stem, and a `cosmos` module there would shadow the astronomer-cosmos package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zerodoc.config import Settings
from zerodoc.transform.runner import target_dir

PROJECT_NAME = "zerodoc"
PROFILE_NAME = "zerodoc"
TARGET_NAME = "warehouse"
WAREHOUSE_POOL = "warehouse_writer"


def manifest_path(cfg: Settings | None = None) -> Path:
    """Where `dbt parse` (run at build/test time, e.g. `make dbt-manifest`) leaves the manifest."""
    return target_dir(cfg or Settings.from_env()) / "manifest.json"


def dbt_task_group(
    group_id: str = "dbt",
    *,
    cfg: Settings | None = None,
    manifest: Path | None = None,
    ds_template: str = "{{ ds }}",
    select: list[str] | None = None,
    **task_group_kwargs: Any,
):
    """A `DbtTaskGroup` with one task per model/seed (tests after each), read from `manifest`.

    LoadMode.DBT_MANIFEST only reads manifest.json: DAG parsing never runs dbt. Tasks run dbt
    in-process (ExecutionMode.LOCAL, dbtRunner) with our profiles.yml, whose warehouse path and
    pseudonym plugin come from the environment; every task takes the single `warehouse_writer`
    pool slot because DuckDB has one writer at a time. The logical date reaches dbt as var `ds`.
    """
    from cosmos import (
        DbtTaskGroup,
        ExecutionConfig,
        ExecutionMode,
        LoadMode,
        ProfileConfig,
        ProjectConfig,
        RenderConfig,
        TestBehavior,
    )
    from cosmos.constants import InvocationMode

    cfg = cfg or Settings.from_env()
    manifest = Path(manifest or manifest_path(cfg))
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} missing: run `dbt parse` at build time, never at DAG parse")
    project_dir = cfg.dbt_project_dir
    return DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            dbt_project_path=project_dir,
            manifest_path=manifest,
            project_name=PROJECT_NAME,
            install_dbt_deps=False,  # no packages; `dbt deps` would need the internet
            env_vars={"ZERODOC_HOME": str(cfg.home), "ZERODOC_WAREHOUSE": str(cfg.warehouse_path)},
            dbt_vars={"ds": ds_template},
        ),
        profile_config=ProfileConfig(
            profile_name=PROFILE_NAME,
            target_name=TARGET_NAME,
            profiles_yml_filepath=project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.DBT_RUNNER,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            select=select or [],
            enable_mock_profile=False,
        ),
        operator_args={"pool": WAREHOUSE_POOL, "install_deps": False},
        **task_group_kwargs,
    )
