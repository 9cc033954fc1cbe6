"""The audit process: records from several processes over its Unix socket, one chain, acks only after fsync."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zerodoc.audit import service
from zerodoc.audit.log import AuditError, read_records, verify_chain

SENDER = """
import asyncio, sys
from pathlib import Path
from zerodoc.audit.service import AuditProcessLog

async def main(state, tag, n):
    log = AuditProcessLog(Path(state))
    await asyncio.gather(*(
        log.append_async(request_id=f"{tag}-{i}", method="POST", path="/v1/evidence", decision="allowed", status=200)
        for i in range(n)
    ))
    log.close()
    print("acked", n)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def _audit_pids(state: Path) -> list[int]:
    """Live audit processes serving this state directory (by their command line)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"zerodoc.audit.service" in argv and os.fsencode(state) in argv:
            found.append(int(entry))
    return found


def _wait_gone(state: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _audit_pids(state):
            return True
        time.sleep(0.05)
    return False


def test_records_of_several_processes_make_one_chain_through_one_audit_process(tmp_path):
    state = tmp_path / "state"
    senders = [
        subprocess.Popen([sys.executable, "-c", SENDER, str(state), f"w{w}", "300"], stdout=subprocess.PIPE)
        for w in range(3)
    ]
    for p in senders:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == b"acked 300"
    records = list(read_records(state / "audit" / "evidence.log"))
    assert len(records) == 900
    assert {r["request_id"] for r in records} == {f"w{w}-{i}" for w in range(3) for i in range(300)}
    assert [r["seq"] for r in records] == list(range(1, 901))
    assert verify_chain(state / "audit" / "evidence.log").ok
    # The three senders raced to start it; one served them all and leaves once they are gone.
    assert len(_audit_pids(state)) <= 1
    assert _wait_gone(state, service.IDLE_EXIT_SECONDS + 5)


def test_a_record_that_cannot_be_written_is_refused_and_the_next_one_is_written(tmp_path):
    state = tmp_path / "state"
    log_path = state / "audit" / "evidence.log"
    log_path.mkdir(parents=True)  # opening a directory for writing fails, even for root
    log = service.AuditProcessLog(state)

    async def one(tag: str):
        return await log.append_async(request_id=tag, method="POST", path="/v1/evidence", status=200)

    async def scenario():
        with pytest.raises(AuditError, match="could not write the record"):
            await one("refused")
        log_path.rmdir()
        await one("written")
        log.close()

    asyncio.run(scenario())
    assert [r["request_id"] for r in read_records(log_path)] == ["written"]
    assert verify_chain(log_path).ok


def test_a_worker_sends_segments_and_a_malformed_line_is_refused_alone(tmp_path):
    """The usual record travels as record_segments; a line that is neither segments nor a record's JSON
    gets a refusal ack of its own, and the records around it are written and chained."""
    import socket

    from zerodoc.audit.log import SEGMENT_SEP, record_segments

    state = tmp_path / "state"
    log = service.AuditProcessLog(state)
    granted = {"request_id": "r1", "method": "POST", "path": "/v1/evidence", "consumer": "c", "fields": ["a"],
               "decision": "allowed", "status": 200, "reason": "granted", "subject_pseudonym": "ab" * 32}  # fmt: skip
    assert record_segments(granted) is not None

    async def scenario():
        await log.append_fields_async(granted)
        log.close()

    asyncio.run(scenario())
    good = SEGMENT_SEP + record_segments({**granted, "request_id": "r2"}) + b"\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(service.socket_path(state)))
        s.sendall(good + SEGMENT_SEP + b"only" + SEGMENT_SEP + b"two\n" + b"[1]\n" + good.replace(b"r2", b"r3"))
        acks = b""
        while acks.count(b"\n") < 4:
            acks += s.recv(4096)
    assert acks == (
        b"+1\n-1 record segments are not four pieces\n-1 record has fields an audit record cannot carry\n+1\n"
    )
    log_path = state / "audit" / "evidence.log"
    assert [r["request_id"] for r in read_records(log_path)] == ["r1", "r2", "r3"]
    assert verify_chain(log_path).ok


def test_one_audit_process_per_state_directory(tmp_path):
    state = tmp_path / "state"
    service.ensure_running(state)
    (pid,) = _audit_pids(state)
    second = subprocess.run([sys.executable, "-m", "zerodoc.audit.service", "--state-dir", str(state)], timeout=30)
    assert second.returncode == 3
    assert _audit_pids(state) == [pid]
    os.kill(pid, signal.SIGTERM)  # no workers connected: it exits at once
    assert _wait_gone(state, 5)
    assert not service.socket_path(state).exists()


def test_waiting_records_fail_when_the_audit_process_dies_and_a_new_one_takes_over(tmp_path):
    state = tmp_path / "state"
    log_path = state / "audit" / "evidence.log"
    log = service.AuditProcessLog(state)

    async def scenario():
        await log.append_async(request_id="before", method="POST", path="/v1/evidence", status=200)
        (pid,) = _audit_pids(state)
        os.kill(pid, signal.SIGSTOP)  # it holds the next record unacknowledged...
        waiting = asyncio.ensure_future(
            log.append_async(request_id="cut-off", method="POST", path="/v1/evidence", status=200)
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()  # no ack, no answer
        os.kill(pid, signal.SIGKILL)  # ...and dies: the waiting caller is refused, not left hanging
        with pytest.raises(AuditError, match="went away"):
            await asyncio.wait_for(waiting, 10)
        # The spawning log starts a new audit process for the next record (at most once a second).
        deadline = time.monotonic() + 10
        while True:
            try:
                await log.append_async(request_id="after", method="POST", path="/v1/evidence", status=200)
                break
            except AuditError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert _audit_pids(state) and pid not in _audit_pids(state)
        log.close()

    asyncio.run(scenario())
    ids = [r["request_id"] for r in read_records(log_path)]
    assert ids[0] == "before" and ids[-1] == "after"
    assert set(ids) <= {"before", "cut-off", "after"}  # "cut-off" may be durable: refused, never answered
    assert verify_chain(log_path).ok


def test_without_spawning_a_missing_audit_process_is_an_error_at_once(tmp_path):
    state = tmp_path / "state"
    log = service.AuditProcessLog(state, spawn=False)

    async def scenario():
        started = time.monotonic()
        with pytest.raises(AuditError, match="no audit process"):
            await log.append_async(request_id="x", method="POST", path="/v1/evidence", status=200)
        assert time.monotonic() - started < 2
        assert not _audit_pids(state)

    asyncio.run(scenario())
    with pytest.raises(AuditError):
        log.append(request_id="y", method="POST", path="/v1/evidence", status=200)


def test_the_lock_dies_with_a_killed_audit_process(tmp_path):
    """kill -9 leaves the socket file behind; the lock tells the next one the old process is gone."""
    state = tmp_path / "state"
    service.ensure_running(state)
    (pid,) = _audit_pids(state)
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(state, 5)
    with open(service.socket_path(state).with_suffix(".lock"), "a+b") as fh:
        deadline = time.monotonic() + 5
        while True:  # free again once the kernel has closed the dead process's files
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    log = service.AuditProcessLog(state)
    assert log.append(request_id="z", method="POST", path="/v1/evidence", status=200)["request_id"] == "z"
    assert [r["request_id"] for r in read_records(state / "audit" / "evidence.log")] == ["z"]
