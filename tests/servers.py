"""Throw-away databases on the real local PostgreSQL and MariaDB, one per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def scratch_postgres() -> Iterator[str]:
    import psycopg

    name = f"zerodoc_test_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_mariadb() -> Iterator[str]:
    import pymysql

    name = f"zerodoc_test_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@contextmanager
def agency_servers() -> Iterator[dict[str, str]]:
    """Point the MOIS and NTS connections at scratch databases for the duration."""
    with scratch_postgres() as pg, scratch_mariadb() as my:
        env = {"AIRFLOW_CONN_ZERODOC_MOIS": pg, "AIRFLOW_CONN_ZERODOC_NTS": my}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
