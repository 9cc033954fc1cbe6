"""docker-compose.yaml passes a real compose validator (no Docker engine runs here: `config` needs none)."""

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

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
