"""Shared fixtures: an isolated data root per test session and real services (started if down)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Airflow reads its configuration on first import: point it at a throw-away home before any test
# imports it, so tests never touch a developer's Airflow and parse DAGs with no connections.
_AIRFLOW_HOME = Path(os.environ.get("PYTEST_AIRFLOW_HOME", "/tmp")) / f"zerodoc-pytest-airflow-{os.getpid()}"
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "True"
for _k in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
    del os.environ[_k]

SERVICE_START = {
    5432: "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    3306: "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    6379: (
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
        "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
}


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_service(port: int, timeout: float = 60.0) -> None:
    """Start the local service on `port` if it is down, and wait until it accepts connections."""
    if _port_open(port):
        return
    subprocess.run(SERVICE_START[port], shell=True, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.5)
    pytest.fail(f"service on 127.0.0.1:{port} is down and did not start: {SERVICE_START[port]}")


@pytest.fixture(scope="session", autouse=True)
def _pseudonym_key() -> None:
    os.environ.setdefault("ZERODOC_PSEUDONYM_KEY", secrets.token_hex(32))


@pytest.fixture
def zerodoc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty data root for one test."""
    home = tmp_path / "zerodoc_home"
    home.mkdir()
    monkeypatch.setenv("ZERODOC_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def postgres_up() -> None:
    ensure_service(5432)


@pytest.fixture(scope="session")
def mariadb_up() -> None:
    ensure_service(3306)


@pytest.fixture(scope="session")
def redis_up() -> None:
    ensure_service(6379)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(__file__).resolve().parents[1] / "test-artifacts"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path
