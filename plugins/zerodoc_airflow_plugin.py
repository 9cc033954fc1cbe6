"""Airflow plugin: mounts ZeroDoc's auditor pages in the API server at /zerodoc and links them in the nav."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from zerodoc.ui.app import create_app

URL_PREFIX = "/zerodoc"


class ZeroDocPlugin(AirflowPlugin):
    name = "zerodoc"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "ZeroDoc auditor pages"}]
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
