"""Airflow plugin: mounts ZeroDoc's auditor pages in the API server at /zerodoc and links them in the nav."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from zerodoc.ui.app import create_app

URL_PREFIX = "/zerodoc"


class AuditorPageLink(BaseOperatorLink):
    """A task's page in the auditor section: the validate task's run report, the published dataset's
    history, dbt docs for the dbt build. Computed on the API server from the task's returned summary,
    so it also works for ``@task`` tasks (they have no operator class of our own to attach a link to)."""

    name = "ZeroDoc audit"

    def get_link(self, operator, *, ti_key) -> str:
        from zerodoc.ui.links import returned_value, task_link

        returned = returned_value(ti_key) if ti_key.task_id.startswith("validate_") else None
        return task_link(ti_key.task_id, returned)


class ZeroDocPlugin(AirflowPlugin):
    name = "zerodoc"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ZeroDoc auditor pages"}]
    global_operator_extra_links = [AuditorPageLink()]
    # Relative href (no leading slash) so it keeps working behind a proxy with a base path;
    # url_route makes Airflow show the pages inside its own UI frame.
    external_views = [
        {
            "name": "ZeroDoc audit",
            "href": "zerodoc/",
            "url_route": "zerodoc-audit",
            "destination": "nav",
            "category": "browse",
        }
    ]
