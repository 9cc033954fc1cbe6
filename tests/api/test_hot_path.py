"""The evidence hot path's shortcuts give the same answers, records and denials as the long way."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jws

from zerodoc.api.consent import ConsentRegistry
from zerodoc.api.signing import ACCEPTED_ALGS, ALG, canonical_bytes, load_or_create_keys, verify_evidence
from zerodoc.audit.log import REDACTED, AuditError, AuditLog, canonical_json, read_records, verify_chain
from zerodoc.privacy import pseudonymize

from .support import ALICE, audit_records, bearer, body


def test_signature_is_byte_for_byte_what_joserfc_produces(tmp_path):
    keys = load_or_create_keys(tmp_path)
    evidence = {"fields": {"sigungu_name": "강남구", "household_size": 3}, "status": "ok", "as_of": "2025-06-30"}
    ours = keys.sign(evidence)
    theirs = jws.detach_content(
        jws.serialize_compact(
            {"alg": ALG, "kid": keys.kid}, canonical_bytes(evidence), keys.active, algorithms=ACCEPTED_ALGS
        )
    )
    assert ours == theirs  # Ed25519 is deterministic: same header, same bytes, same signature
    assert verify_evidence({"evidence": evidence, "signature": ours, "kid": keys.kid}, keys.jwks())
    assert not verify_evidence({"evidence": {**evidence, "status": "no"}, "signature": ours}, keys.jwks())


def test_async_appends_from_an_event_loop_chain_and_each_line_is_the_canonical_record(tmp_path):
    path = tmp_path / "evidence.log"
    log = AuditLog(path, group_commit=True)

    async def many():
        return await asyncio.gather(
            *(
                log.append_async(method="POST", path="/v1/evidence", consent_id=f'cns_{i},"method":"x"', status=200)
                for i in range(50)
            )
        )

    records = asyncio.run(many())
    assert sorted(r["seq"] for r in records) == list(range(1, 51))
    assert verify_chain(path).ok and verify_chain(path).records == 50
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines == [canonical_json(r) + b"\n" for r in read_records(path)]
    assert json.loads(lines[0])["consent_id"].endswith(',"method":"x"')  # a look-alike key in a value is just text


def test_an_id_anywhere_in_a_record_is_redacted_and_clean_records_are_untouched(tmp_path):
    log = AuditLog(tmp_path / "evidence.log")
    dirty = log.append(path="/v1/900101-1234567", fields=["ok", "850505-2345678"], purpose="plain", status=404)
    assert dirty["path"] == REDACTED and dirty["fields"] == ["ok", REDACTED] and dirty["purpose"] == "plain"
    # Two values side by side must not be read as one ID across their boundary.
    clean = log.append(consent_id="900101", reason="1234567", path="/v1/evidence")
    assert (clean["consent_id"], clean["reason"]) == ("900101", "1234567")
    assert verify_chain(tmp_path / "evidence.log").ok


def test_async_append_failure_reaches_the_awaiting_caller(tmp_path):
    log = AuditLog(tmp_path / "evidence.log", group_commit=True)

    async def attempt():
        with pytest.raises(AuditError):
            await log.append_async(reason=object())
        return await log.append_async(reason="after")

    assert asyncio.run(attempt())["seq"] == 1


def test_consent_revoked_through_another_connection_is_refused_at_once(cfg):
    mine, other = ConsentRegistry(cfg), ConsentRegistry(cfg)  # two workers, two connections
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
    assert mine.check(consent.consent_id, dataset="residence_v1", **ask) is None
    assert mine.check(consent.consent_id, dataset="residence_v1", **ask) is None  # now from the cache
    other.revoke(consent.consent_id, subject)
    assert mine.check(consent.consent_id, dataset="residence_v1", **ask) == "consent_revoked"


def test_fast_lane_answers_are_audited_and_other_methods_take_the_framework(client, keys, audit_path):
    assert client.get("/livez").json() == {"status": "ok"}
    r = client.post("/v1/evidence", json=body(), headers=bearer(keys["welfare-portal"]))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    answer = r.json()
    assert set(answer) == {"status", "evidence", "signature", "kid"}
    assert verify_evidence(answer, client.get("/.well-known/jwks.json").json())
    wrong = client.get("/v1/evidence", headers=bearer(keys["welfare-portal"]))
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    records = audit_records(audit_path)
    assert [(r["path"], r["status"], r["reason"]) for r in records] == [
        ("/v1/evidence", 200, "granted"),
        ("/v1/evidence", 405, "method_not_allowed"),
    ]
    assert sorted(records[0]["fields"]) == sorted(answer["evidence"]["fields"])


def _both_ways(client, monkeypatch):
    """A TestClient of the same app that skips the fast lane (FastAPI's routing, middleware and route
    handler), and the issued_at text frozen so that answers from either one can be compared byte for byte."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from zerodoc.api import app as api

    frozen = api._now()
    monkeypatch.setattr(api, "_now", lambda: frozen)
    app = client.app

    async def framework(scope, receive, send):
        await FastAPI.__call__(app, scope, receive, send)

    other = TestClient(framework)
    other.portal = client.portal  # the same event loop: the audit channel opened at start-up serves both
    return other


def test_the_fast_lane_answers_and_denies_byte_for_byte_as_the_framework_route(
    client, keys, published, consents, audit_path, monkeypatch
):
    """Every denial path of evidence and bundles, and granted answers, through the raw ASGI lane and
    through FastAPI's route: the same status, headers and body bytes, and the same audit record."""
    framework = _both_ways(client, monkeypatch)
    welfare = bearer(keys["welfare-portal"])
    subject = pseudonymize(ALICE, published.pseudonym_key)
    now = datetime.now(UTC)
    revoked = consents.record(
        subject_pseudonym=subject, consumer="welfare-portal", purpose="basic_livelihood_application",
        datasets=["residence_v1"], valid_from=now - timedelta(days=1), valid_to=now + timedelta(days=1),
        recorded_by="test",
    ).consent_id  # fmt: skip
    consents.revoke(revoked, subject)
    household = consents.record(
        subject_pseudonym=subject, consumer="welfare-portal", purpose="basic_livelihood_application",
        datasets=["household_v1"], valid_from=now - timedelta(days=1), valid_to=now + timedelta(days=1),
        recorded_by="test",
    ).consent_id  # fmt: skip
    as_json = {**welfare, "Content-Type": "application/json"}
    cases = [  # (path, body: a dict sent as JSON, bytes, or a list of chunks sent without a length, headers)
        ("/v1/evidence", body(), welfare),  # granted
        ("/v1/evidence", body(fields=["sido_name"]), welfare),
        ("/v1/evidence", body(), {}),  # no key
        ("/v1/evidence", body(), bearer("zdk_not-a-key")),
        ("/v1/evidence", body(), {"Authorization": "Basic abc"}),
        ("/v1/evidence", body(), bearer(keys["citizen-portal"])),  # role
        ("/v1/evidence", b"x" * 5000, as_json),  # too large, declared
        ("/v1/evidence", [b"{" * 3000, b"}" * 3000], as_json),  # too large, found while reading
        ("/v1/evidence", b"{not json", as_json),
        ("/v1/evidence", b"[1, 2]", as_json),
        ("/v1/evidence", {"purpose": "basic_livelihood_application"}, welfare),  # missing fields
        ("/v1/evidence", {**body(), "x'--": 1}, welfare),  # unknown field
        ("/v1/evidence", {**body(), "subject_id": 9}, welfare),  # wrong type
        ("/v1/evidence", body(evidence_type="passport"), welfare),
        ("/v1/evidence", body(purpose="Not A Purpose"), welfare),
        ("/v1/evidence", body(subject_id="900101-1234567' OR 1=1"), welfare),
        ("/v1/evidence", body(consent_id=" "), welfare),
        ("/v1/evidence", body(purpose="youth_leap_account_eligibility"), welfare),  # purpose not granted
        ("/v1/evidence", body(fields=["household_id"]), welfare),  # field not granted
        ("/v1/evidence", body(consent_id="cns_never-recorded"), welfare),  # consent missing
        ("/v1/evidence", body(consent_id=revoked), welfare),  # consent revoked
        ("/v1/evidence", body(evidence_type="household"), welfare),  # consent scope
        ("/v1/evidence", body(evidence_type="household", consent_id=household), welfare),  # not published: 503
        ("/v1/bundles/crime-victim-support", body(), welfare),  # not granted
        ("/v1/bundles/crime-victim-support", body(), bearer(keys["victim-support-center"])),
        ("/v1/bundles/crime-victim-support", b"{}", as_json),
    ]
    seen = set()
    for path, sent, headers in cases:
        answers, records = [], []
        for way in (client, framework):
            if isinstance(sent, dict):
                r = way.post(path, json=sent, headers=headers)
            else:
                r = way.post(path, content=sent if isinstance(sent, bytes) else iter(sent), headers=headers)
            answers.append((r.status_code, sorted(r.headers.items()), r.content))
            records.append(audit_records(audit_path)[-1])
        assert answers[0] == answers[1], (path, sent)
        varying = {"request_id", "seq", "ts", "prev_hash", "hash"}
        fast, slow = ({k: v for k, v in rec.items() if k not in varying} for rec in records)
        assert fast == slow and records[0]["seq"] + 1 == records[1]["seq"], (path, sent)
        seen.add(fast["reason"])
    assert seen == {
        "granted", "unauthorized", "role_not_allowed", "body_too_large", "invalid_json", "invalid_request",
        "unknown_evidence_type", "invalid_purpose", "invalid_subject_id", "invalid_consent_id",
        "purpose_not_granted", "field_not_granted", "consent_missing", "consent_revoked", "consent_scope",
        "dataset_unavailable",
    }  # fmt: skip
