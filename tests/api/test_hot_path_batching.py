"""Audit batches under load and the per-snapshot staleness deadline give the same records and answers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from zerodoc.alerts import is_stale
from zerodoc.api.app import EvidenceService, _now, _request_id
from zerodoc.api.index import Snapshot
from zerodoc.audit.log import AuditLog, verify_chain


def test_records_arriving_while_the_writer_waits_share_one_batch_and_one_chain(tmp_path):
    log = AuditLog(tmp_path / "evidence.log", group_commit=True)
    log.commit_interval = 0.2
    batches: list[int] = []
    write = log._write_batch
    log._write_batch = lambda batch: (batches.append(len(batch)), write(batch))[1]

    async def load():
        first = await log.append_async(path="/v1/evidence", status=200)  # after a quiet spell: on its own
        rest = await asyncio.gather(*(log.append_async(path="/v1/evidence", status=200) for _ in range(20)))
        return [first, *rest]

    records = asyncio.run(load())
    assert batches == [1, 20]  # the 20 queued during the interval went out under one sync
    assert [r["seq"] for r in records] == list(range(1, 22))
    result = verify_chain(log.path)
    assert result.ok and result.records == 21


def test_the_cached_staleness_deadline_agrees_with_alerts_is_stale(published):
    service = EvidenceService(published)
    snap = service.indexes["residence_v1"].snapshot()
    sla = service.freshness_sla["residence_v1"]
    end = datetime.fromisoformat(snap.as_of).replace(tzinfo=UTC) + timedelta(days=1)
    for offset in (-1e6, -1, 0, 1, 3600, 1e6):  # seconds around the deadline
        now = end + timedelta(hours=sla, seconds=offset)
        service.now = lambda now=now: now
        assert service._stale(snap) == is_stale(snap.as_of, sla, now), offset
    unpublished = Snapshot(snap.dataset, "v", None, [], snap.keys[:0], snap.table.slice(0, 0))
    assert service._stale(unpublished) is True


def test_request_ids_are_distinct_version_4_uuids_and_issued_at_is_now_to_the_second():
    ids = [_request_id() for _ in range(3000)]  # crosses several refills of the random pool
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    before = datetime.now(UTC).replace(microsecond=0)
    issued = datetime.fromisoformat(_now().replace("Z", "+00:00"))
    assert before <= issued <= datetime.now(UTC) and _now().endswith("Z")
