"""The PostgreSQL audit backend: one chain across processes, committed before append returns, tampering found."""

from __future__ import annotations

import multiprocessing
import secrets
import threading

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from zerodoc.audit.cli import audit_verify
from zerodoc.audit.log import AuditError, AuditLog, Search, open_audit_log
from zerodoc.audit.pg import TABLE, PostgresAuditLog, redacted

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def audit_dsn(postgres_up) -> str:
    """A fresh database of its own, dropped afterwards."""
    name = f"zd_audit_test_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(log, n: int = 5) -> None:
    for i in range(n):
        log.append(
            path="/v1/evidence",
            consumer="welfare-portal" if i % 2 == 0 else "youth-account-service",
            purpose="basic_livelihood_application",
            evidence_type="residence",
            dataset="residence_v1",
            subject_pseudonym=f"{i % 3:064x}",
            fields=["sido_name"],
            decision="allowed" if i != 3 else "denied",
            status=200 if i != 3 else 403,
            reason="granted" if i != 3 else "consent_missing",
        )


def _tamper(dsn: str, sql: str) -> None:
    """What a superuser can do: switch off the append-only triggers and edit the table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
        conn.execute(sql)
        conn.execute(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")


def test_configuration_selects_the_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("ZERODOC_AUDIT_DSN", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_ZERODOC_AUDIT", raising=False)
    assert isinstance(open_audit_log(tmp_path), AuditLog)
    monkeypatch.setenv("AIRFLOW_CONN_ZERODOC_AUDIT", "postgresql+psycopg2://zd:s3cret@db:5432/audit")
    log = open_audit_log(tmp_path)
    assert isinstance(log, PostgresAuditLog)
    assert log.describe() == "postgresql://zd:***@db:5432/audit"
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", "postgres://other@db2/audit")
    assert open_audit_log(tmp_path).describe() == "postgresql://other@db2/audit"
    assert redacted("postgresql://u@h/d") == "postgresql://u@h/d"


def test_records_are_committed_chained_and_searchable(audit_dsn):
    log = PostgresAuditLog(audit_dsn)
    _fill(log, 6)
    # Committed when append returned: another session sees every row.
    with psycopg.connect(audit_dsn) as conn:
        rows = conn.execute(f"SELECT seq, consumer, decision FROM {TABLE} ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[3][1:] == ("youth-account-service", "denied")
    result = log.verify()
    assert result.ok and result.records == 6 and result.message == "chain intact: 6 records"
    newest = log.search(Search(limit=1))
    assert newest[0]["seq"] == 6 and newest[0]["hash"] == result.head_hash

    assert [r["seq"] for r in log.search(Search(subject_pseudonym=f"{0:064x}"))] == [4, 1]
    assert [r["seq"] for r in log.search(Search(consumer="welfare-portal", limit=2))] == [5, 3]
    assert [r["seq"] for r in log.search(Search(decision="denied"))] == [4]
    assert log.search(Search(paths=("/v1/bundles/crime-victim-support",))) == []
    ts = [r["ts"] for r in log.search(Search(limit=10))][::-1]
    assert [r["seq"] for r in log.search(Search(since=ts[2], until=ts[4]))] == [4, 3]


def test_the_file_and_postgres_backends_answer_searches_alike(audit_dsn, tmp_path):
    pg, local = PostgresAuditLog(audit_dsn), AuditLog(tmp_path / "evidence.log")
    _fill(pg, 7)
    _fill(local, 7)
    for query in (
        Search(),
        Search(consumer="welfare-portal", limit=3),
        Search(subject_pseudonym=f"{1:064x}", decision="allowed"),
        Search(paths=("/v1/evidence",), limit=2),
    ):
        assert [r["seq"] for r in pg.search(query)] == [r["seq"] for r in local.search(query)]


def _append_many(dsn: str, n: int) -> None:
    log = PostgresAuditLog(dsn, group_commit=True)
    for _ in range(n):
        log.append(decision="allowed", status=200, reason="health", path="/v1/health")


def test_concurrent_processes_extend_one_chain(audit_dsn):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(audit_dsn, 60)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    result = PostgresAuditLog(audit_dsn).verify()
    assert result.ok, result.message
    assert result.records == 240


def test_group_commit_chains_concurrent_appends_and_reports_failures(audit_dsn):
    log = PostgresAuditLog(audit_dsn, group_commit=True)
    seqs: list[int] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            rec = log.append(decision="allowed", status=200, reason="health")
            with lock:
                seqs.append(rec["seq"])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 201))
    with pytest.raises(AuditError):
        log.append(reason=object())  # cannot be serialised: its caller fails, nobody hangs
    assert log.append(reason="after")["seq"] == 201
    assert log.verify().ok


def test_unreachable_database_fails_the_append(postgres_up):
    log = PostgresAuditLog("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(AuditError, match="cannot append to audit log postgresql://postgres@127.0.0.1:1/nowhere"):
        log.append(decision="denied", status=401, reason="unauthorized")


def test_the_table_refuses_updates_deletes_and_truncation(audit_dsn):
    _fill(PostgresAuditLog(audit_dsn), 2)
    for sql in (f"UPDATE {TABLE} SET decision = 'allowed'", f"DELETE FROM {TABLE}", f"TRUNCATE {TABLE}"):
        with psycopg.connect(audit_dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException) as err:
            conn.execute(sql)
        assert "the evidence audit log is append-only" in str(err.value)


@pytest.mark.parametrize(
    ("sql", "bad_seq", "message"),
    [
        (
            f'UPDATE {TABLE} SET record = replace(record, \'"decision":"allowed"\', \'"decision":"denied"\') '
            "WHERE seq = 3",
            3,
            "record 3 was modified (hash mismatch)",
        ),
        (f"UPDATE {TABLE} SET decision = 'allowed' WHERE seq = 4", 4, "record 4: column decision disagrees"),
        (f"DELETE FROM {TABLE} WHERE seq = 2", 2, "expected seq 2, found seq 3 (a record was removed or inserted)"),
        # Hiding a deletion by renumbering the rows after it.
        (f"DELETE FROM {TABLE} WHERE seq = 5; UPDATE {TABLE} SET seq = 5 WHERE seq = 6", 5, "record 5 carries seq 6"),
        (f"UPDATE {TABLE} SET hash = repeat('0', 64) WHERE seq = 1", 1, "record 1 was modified (hash mismatch)"),
    ],
)
def test_tampering_a_row_is_found(audit_dsn, sql, bad_seq, message):
    log = PostgresAuditLog(audit_dsn)
    _fill(log, 6)
    assert log.verify().ok
    _tamper(audit_dsn, sql)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert message in result.message


def test_cli_verifies_the_configured_database(audit_dsn, zerodoc_home, monkeypatch):
    app = typer.Typer()
    app.command()(audit_verify)
    runner = CliRunner()
    monkeypatch.setenv("ZERODOC_AUDIT_DSN", audit_dsn)
    _fill(PostgresAuditLog(audit_dsn), 4)
    ok = runner.invoke(app, [])
    assert ok.exit_code == 0, ok.output
    assert f"evidence log   {audit_dsn}: OK: chain intact: 4 records; head hash" in ok.output
    _tamper(audit_dsn, f"DELETE FROM {TABLE} WHERE seq = 3")
    bad = runner.invoke(app, [])
    assert bad.exit_code == 1
    assert f"evidence log   {audit_dsn}: BROKEN: expected seq 3, found seq 4" in bad.output
    monkeypatch.delenv("ZERODOC_AUDIT_DSN")
    explicit = runner.invoke(app, ["--dsn", audit_dsn])
    assert explicit.exit_code == 1 and "BROKEN" in explicit.output


def test_a_role_with_only_insert_and_select_writes_and_verifies(audit_dsn):
    PostgresAuditLog(audit_dsn).append(decision="allowed", status=200, reason="health")  # creates the table
    role = f"zd_audit_writer_{secrets.token_hex(3)}"
    with psycopg.connect(audit_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA zerodoc_audit TO {role}")
        conn.execute(f"GRANT INSERT, SELECT ON {TABLE} TO {role}")
    try:
        writer_dsn = audit_dsn.replace("postgres@", f"{role}@")
        writer = PostgresAuditLog(writer_dsn, group_commit=True)
        assert writer.append(decision="denied", status=401, reason="unauthorized")["seq"] == 2
        assert writer.verify().ok and writer.verify().records == 2
        with psycopg.connect(writer_dsn, autocommit=True) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"UPDATE {TABLE} SET decision = 'allowed'")
    finally:
        with psycopg.connect(audit_dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_chained_in_postgres_exactly_as_the_file_chains(audit_dsn, tmp_path):
    from zerodoc.audit.log import record_hash

    odd = {
        "consent_id": 'cns_동의 "quoted" \\ back\nslash \u0000 nul',
        "purpose": "basic_livelihood_application",
        "fields": ["sido_name", "시군구"],
        "decision": "denied",
        "status": 403,
        "reason": "consent_missing",
        "path": "/v1/evidence",
    }
    log = PostgresAuditLog(audit_dsn, group_commit=True)
    first = log.append(**odd)
    second = log.append(decision="allowed", status=200, reason="health")
    # What the callers get back is the record as stored, and hashes as zerodoc.audit.log computes them.
    for rec in (first, second):
        assert rec["hash"] == record_hash(rec)
    assert second["prev_hash"] == first["hash"] and (first["seq"], second["seq"]) == (1, 2)
    stored = log.search(Search(limit=2))[::-1]
    assert stored == [first, second]
    assert log.verify().ok
