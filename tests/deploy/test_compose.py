"""docker-compose.yaml passes a real compose validator (no Docker engine runs here: `config` needs none)."""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.lb import BIND, HAPROXY_CFG, SERVER_TEMPLATE

COMPOSE = REPO / "docker-compose.yaml"
REQUIRED_ENV = {"AIRFLOW_DB_PASSWORD": "x", "AIRFLOW_JWT_SECRET": "x", "ZERODOC_PSEUDONYM_KEY": "x",
                "MOIS_DB_PASSWORD": "x", "NTS_DB_PASSWORD": "x"}


@pytest.fixture(scope="module")
def compose_cli() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        # Debian's docker-compose validates files without a Docker engine.
        for cmd in (["apt-get", "install", "-y", "-qq", "docker-compose"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "docker-compose"]):
            subprocess.run(cmd, check=False, capture_output=True, env={"DEBIAN_FRONTEND": "noninteractive",
                                                                       "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            path = shutil.which("docker-compose")
            if path:
                break
    if path is None:
        pytest.fail("docker-compose could not be installed from Debian (apt-get install docker-compose)")
    return path


def test_compose_file_is_valid(compose_cli):
    env = REQUIRED_ENV | {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([compose_cli, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_secrets_are_required_not_defaulted(compose_cli):
    out = subprocess.run([compose_cli, "-f", str(COMPOSE), "config", "-q"], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode != 0 and "AIRFLOW_DB_PASSWORD" in out.stderr


def test_topology_matches_the_native_cluster():
    from zerodoc.orchestration.cluster import components

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    native = {c.name for c in components()}
    compose_names = {"api-server": "airflow-apiserver", "scheduler": "airflow-scheduler",
                     "dag-processor": "airflow-dag-processor", "triggerer": "airflow-triggerer",
                     "evidence-api": "evidence-api"}
    for name in native - {"worker1", "worker2"}:
        assert compose_names[name] in services, name
    assert services["airflow-worker"]["deploy"]["replicas"] == 2
    for svc in ("redis", "airflow-db", "mois-postgres", "nts-mariadb"):
        assert "healthcheck" in services[svc], svc
    assert "zerodoc-data" in yaml.safe_load(COMPOSE.read_text())["volumes"]


def test_evidence_api_replicas_share_their_rate_limits_in_redis():
    from urllib.parse import urlsplit

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    api = services["evidence-api"]
    url = urlsplit(api["environment"]["ZERODOC_API_RATE_REDIS_URL"])
    broker = urlsplit(services["airflow-worker"]["environment"]["AIRFLOW__CELERY__BROKER_URL"])
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    assert url.path != broker.path  # another database than Celery's queues
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"


def test_auditor_pages_read_the_audit_log_the_evidence_api_writes():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    written = services["evidence-api"]["environment"]["AIRFLOW_CONN_ZERODOC_AUDIT"]
    # The auditors' pages are an Airflow plugin served by the API server (env from x-airflow-common).
    assert services["airflow-apiserver"]["environment"]["AIRFLOW_CONN_ZERODOC_AUDIT"] == written


def _serve_port(service: dict) -> int:
    command = service["command"]
    assert command[:2] == ["zerodoc", "serve"], command
    return int(command[command.index("--port") + 1])


def test_evidence_api_runs_as_replicas_behind_the_load_balancer():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    api, lb = services["evidence-api"], services["evidence-lb"]
    assert api["deploy"]["replicas"] >= 2
    # Replicas have no host port (two could not bind the same one) and no fixed name; only the LB is published.
    assert "ports" not in api and "container_name" not in api
    published = [p for svc in services.values() for p in svc.get("ports", []) if str(p).endswith(":8000")]
    assert published == lb["ports"] == ["8000:8000"]
    # A pinned official HAProxy image, with the config file of this repository where that image reads it.
    assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+", lb["image"]), lb["image"]
    source, target, mode = lb["volumes"][0].split(":")
    assert (REPO / source).resolve() == HAPROXY_CFG and target == "/usr/local/etc/haproxy/haproxy.cfg" and mode == "ro"
    # The config's upstream is this service on the port it serves, and the LB listens where it is published.
    (template,) = SERVER_TEMPLATE.finditer(HAPROXY_CFG.read_text())
    assert template["host"] == "evidence-api" and int(template["port"]) == _serve_port(api)
    assert int(template["slots"]) >= api["deploy"]["replicas"]
    (bind,) = BIND.finditer(HAPROXY_CFG.read_text())
    assert bind["port"] == lb["ports"][0].split(":")[1]
    assert api["expose"] == [_serve_port(api)]
    assert lb["depends_on"]["evidence-api"]["condition"] == "service_healthy"


def test_healthchecks_ask_routes_that_exist(cfg):
    from urllib.parse import urlsplit

    from zerodoc.api.app import create_app

    services = yaml.safe_load(COMPOSE.read_text())["services"]
    api, lb = services["evidence-api"], services["evidence-lb"]
    (url,) = [a for a in api["healthcheck"]["test"] if a.startswith("http://")]
    url = urlsplit(url)
    assert url.port == _serve_port(api)
    routes = {r.path for r in create_app(cfg, rate_per_sec=0).routes if "GET" in getattr(r, "methods", ())}
    assert url.path in routes, (url.path, sorted(routes))  # /docs is not served (docs_url=None)
    # The LB's own check: its monitor URI, on the port it binds (run for real in test_replicas.py).
    (script,) = [a for a in lb["healthcheck"]["test"] if "/dev/tcp/" in a]
    text = HAPROXY_CFG.read_text()
    (monitor,) = re.findall(r"^\s*monitor-uri (\S+)$", text, re.M)
    (bind,) = BIND.finditer(text)
    assert f"/dev/tcp/127.0.0.1/{bind['port']}" in script and f"GET {monitor} " in script


def test_only_the_load_balancer_may_name_the_client():
    """The replicas honour X-Forwarded-For from HAProxy's fixed address and nobody else's (tests/api/test_cli.py
    shows what trusting it changes), and HAProxy sets the header rather than appending to what a client sent."""
    import ipaddress

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    trusted = services["evidence-api"]["environment"]["ZERODOC_API_FORWARDED_ALLOW_IPS"]
    lb_address = services["evidence-lb"]["networks"]["default"]["ipv4_address"]
    assert trusted == lb_address
    (subnet,) = [c["subnet"] for c in compose["networks"]["default"]["ipam"]["config"]]
    assert ipaddress.ip_address(lb_address) in ipaddress.ip_network(subnet)
    assert re.search(r"^\s*http-request set-header X-Forwarded-For %\[src\]$", HAPROXY_CFG.read_text(), re.M)
