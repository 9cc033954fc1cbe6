"""Where a task's output lives in the auditor section: the URLs the task log and the task's extra link show."""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any
from urllib.parse import quote, urlparse

SECTION = "zerodoc"


def base_path() -> str:
    """The API server's path prefix (``[api] base_url``), so links work behind a proxy with a base path."""
    base = os.environ.get("AIRFLOW__API__BASE_URL", "")
    if not base:
        try:
            from airflow.configuration import conf

            base = conf.get("api", "base_url", fallback="") or ""
        except Exception:  # noqa: BLE001 - outside Airflow there is no configuration to read
            base = ""
    return urlparse(base).path.rstrip("/")


def report_href(report_path: str | PurePath, prefix: str | None = None) -> str:
    """``…/validation/<run dir>/report.html`` → ``<base>/zerodoc/reports/<run dir>/report.html``."""
    p = PurePath(report_path)
    prefix = base_path() if prefix is None else prefix
    return f"{prefix}/{SECTION}/reports/{quote(p.parent.name)}/{quote(p.name)}"


def report_url(report_path: str | PurePath) -> str:
    """The same, absolute when Airflow's ``base_url`` is known (a log line should be clickable as is)."""
    base = os.environ.get("AIRFLOW__API__BASE_URL", "").rstrip("/")
    href = report_href(report_path, prefix="")
    return f"{base}{href}" if base else href


def task_link(task_id: str, returned: Any, prefix: str | None = None) -> str:
    """The auditor page for a task's result; empty when the task has none (the UI greys the link out)."""
    prefix = base_path() if prefix is None else prefix
    if task_id.startswith("validate_") and isinstance(returned, dict) and returned.get("report_path"):
        return report_href(returned["report_path"], prefix)
    if task_id.startswith("publish_"):
        return f"{prefix}/{SECTION}/publish#ds-{quote(task_id.removeprefix('publish_'))}"
    if task_id in ("dbt_build", "dbt.dbt_producer_watcher"):  # the one dbt build, either dbt task mode
        return f"{prefix}/{SECTION}/dbt-docs/"
    return ""


def returned_value(ti_key: Any) -> Any:
    """The task instance's ``return_value`` XCom, read from the metadata database (API server side)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(key="return_value", run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                               task_ids=ti_key.task_id, map_indexes=ti_key.map_index)
            .with_only_columns(XComModel.value)
        ).first()
    if row is None:
        return None
    return XComModel.deserialize_value(row)
