"""The state watch that replaces a stat / pragma per request, and the answers built from templates."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from zerodoc.api.consent import ConsentRegistry
from zerodoc.api.index import KEY_BYTES, Snapshot, compact_columns
from zerodoc.api.signing import canonical_bytes, verify_evidence
from zerodoc.api.watch import ChangeWatch
from zerodoc.fsutil import write_json_atomic
from zerodoc.privacy import pseudonymize

from .support import ALICE, bearer, body


def test_generation_moves_exactly_when_something_changed_in_a_watched_directory(tmp_path):
    watched, other = tmp_path / "state", tmp_path / "elsewhere"
    watched.mkdir()
    other.mkdir()
    watch = ChangeWatch([watched])
    assert watch.active and watch.covers(watched) and not watch.covers(other)
    g = watch.generation()
    assert watch.generation() == g  # nothing happened
    (other / "x.json").write_text("{}")
    assert watch.generation() == g  # not a watched directory
    write_json_atomic(watched / "consumers.json", {"consumers": {}})  # tmp + rename, as the CLI writes
    g2 = watch.generation()
    assert g2 != g and watch.generation() == g2
    with open(watched / "consumers.json", "r+b") as fh:  # an edit in place
        fh.write(b" ")
    assert watch.generation() != g2


def test_a_pinned_generation_holds_for_its_thread_until_unpinned(tmp_path):
    """One read per request: a change after the pin is seen by the next request, and at once by other threads."""
    watch = ChangeWatch([tmp_path])
    before = watch.generation()
    watch.pin()
    (tmp_path / "consumers.json").write_text("{}")
    assert watch.generation() == before  # this request's checks all see the state it started with
    seen_elsewhere: list[int] = []
    other = threading.Thread(target=lambda: seen_elsewhere.append(watch.generation()))
    other.start()
    other.join()
    assert seen_elsewhere[0] != before
    watch.unpin()
    assert watch.generation() == seen_elsewhere[0]  # the change, once; nothing new since
    (tmp_path / "keys.json").write_text("{}")
    watch.pin()  # a change that completed before the pin is seen under it
    assert watch.generation() not in (before, seen_elsewhere[0])
    watch.unpin()
    watch.close()


def test_a_removed_directory_or_no_watch_means_every_call_is_a_change(tmp_path, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    watch = ChangeWatch([d])
    watch.generation()
    d.rmdir()
    first = watch.generation()
    assert not watch.active and watch.generation() != first != watch.generation()
    monkeypatch.setenv("ZERODOC_API_WATCH", "off")
    off = ChangeWatch([tmp_path])
    assert not off.active and off.generation() != off.generation()
    assert not ChangeWatch([tmp_path / "missing"]).covers(tmp_path / "missing")


def test_a_consent_revoked_by_another_process_is_refused_at_once_with_the_watch(cfg):
    other = ConsentRegistry(cfg)  # creates the state directory
    mine = ConsentRegistry(cfg, watch=ChangeWatch([cfg.state_dir]))
    assert mine.watch is not None
    assert ConsentRegistry(cfg, watch=ChangeWatch([cfg.home])).watch is None  # not its directory: not trusted
    subject = pseudonymize(ALICE, cfg.pseudonym_key)
    now = datetime.now(UTC)
    consent = other.record(
        subject_pseudonym=subject,
        consumer="welfare-portal",
        purpose="basic_livelihood_application",
        datasets=["residence_v1"],
        valid_from=now - timedelta(days=1),
        valid_to=now + timedelta(days=1),
        recorded_by="test",
    )
    ask = dict(subject_pseudonym=subject, consumer="welfare-portal", purpose="basic_livelihood_application", now=now)
    for _ in range(3):  # the later checks come from the cache, no pragma
        assert mine.check(consent.consent_id, dataset="residence_v1", **ask) is None
    other.revoke(consent.consent_id, subject)
    assert mine.check(consent.consent_id, dataset="residence_v1", **ask) == "consent_revoked"


def test_the_app_watches_its_state_and_still_sees_a_revoked_key_and_a_rotation(client, keys, published):
    from zerodoc.api.consumers import revoke_consumer
    from zerodoc.api.signing import rotate_signing_key

    service = client.app.state.service
    assert service.watch.active and service.consumers._watch is service.watch
    assert service.consents.watch is service.watch
    for name, index in service.indexes.items():  # a dataset not published at start keeps its stat
        assert (index.watch is service.watch) == (name in ("residence_v1", "income_v1")), name
    first = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert first.status_code == 200
    new_kid = rotate_signing_key(service.cfg.state_dir)
    second = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert second.json()["kid"] == new_kid != first.json()["kid"]
    revoke_consumer("welfare-portal", service.cfg)
    third = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert third.status_code == 401


def test_evidence_bytes_are_the_canonical_json_the_signature_covers(client, keys, published):
    jwks = client.get("/.well-known/jwks.json").json()
    for fields in (None, ["sigungu_name"], ["household_size", "sido_name"]):
        r = client.post(
            "/v1/evidence", json=body(**({"fields": fields} if fields else {})), headers=bearer(keys["welfare-portal"])
        )
        assert r.status_code == 200, r.text
        raw = r.content
        start = raw.index(b'"evidence":') + len(b'"evidence":')
        answer = r.json()
        signed = canonical_bytes(answer["evidence"])
        assert raw[start : start + len(signed)] == signed  # the bytes sent are the canonical bytes
        assert verify_evidence(answer, jwks)
        if fields:
            assert sorted(answer["evidence"]["fields"]) == sorted(fields)


def test_lookup_json_is_canonical_bytes_of_lookup_for_every_type():
    n = 50
    keys = sorted(os.urandom(KEY_BYTES) for _ in range(n))
    table = compact_columns(
        pa.table(
            {
                "name": pa.array([["강남구", 'q"uote\\', None, "x"][i % 4] for i in range(n)]),
                "size": pa.array([None if i % 7 == 0 else i - 20 for i in range(n)], pa.int32()),
                "big": pa.array([2**40 + i for i in range(n)], pa.int64()),
                "ratio": pa.array([None if i % 5 == 0 else i / 3 for i in range(n)], pa.float64()),
                "flag": pa.array([None if i % 6 == 0 else i % 2 == 0 for i in range(n)]),
                "on": pa.array([datetime(2025, 1, 1 + i % 28).date() for i in range(n)]),
                "nothing": pa.nulls(n),
            }
        )
    )
    snap = Snapshot("d", "v", None, [], np.array(keys, dtype=f"S{KEY_BYTES}"), table)
    for names in (tuple(table.column_names), ("size", "name"), ("on",)):
        for k in keys:
            row = snap.lookup(k.hex())
            assert snap.lookup_json(k.hex(), names) == canonical_bytes({f: row[f] for f in names})
            json.loads(snap.lookup_json(k.hex(), names))
    assert snap.lookup_json(b"\xff".hex() * KEY_BYTES, ("on",)) is None


def test_a_watch_gives_its_descriptor_back(tmp_path):
    import gc

    before = len(os.listdir("/proc/self/fd"))
    for _ in range(200):  # more than the 128 inotify instances a user may hold
        watch = ChangeWatch([tmp_path])
        assert watch.active, watch.reason
        del watch
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before + 1
    closed = ChangeWatch([tmp_path])
    closed.close()
    assert not closed.active and closed.generation() != closed.generation()
