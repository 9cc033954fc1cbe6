"""The evidence API: FastAPI app factory, request handling, error envelope and auditing.

Every request under /v1/ is appended to the hash-chained audit log, and fsync'd, before its
response is returned: the request pipeline produces an Outcome (the response plus its audit
record) and the route awaits the record's fsync before handing the response to the server;
the exception handlers do the same for everything else. If the audit log cannot be written,
no evidence leaves.

The evidence and bundle routes run their pipeline on the event loop itself: it is ~0.2 ms of
CPU (lookups in memory, one SQLite read, an Ed25519 signature), less than a thread-pool hop
costs, and the wait for the fsync is an awaited future, not a parked thread. Routes that scan
the audit log, and any request while an index still has its first load to do, use the pool.

Order of checks on every authenticated route: key -> role -> rate limit -> body size -> body
shape -> grant -> consent -> data. A caller without rights is refused before anything about
the subject is looked at, so 403 bodies are the same whether or not the subject exists.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from zerodoc.alerts import DEFAULT_FRESHNESS_HOURS, freshness_hours, is_stale
from zerodoc.api import schemas
from zerodoc.api.consent import ConsentError, ConsentRegistry, parse_utc, utc_iso
from zerodoc.api.consumers import NAME_PATTERN, Consumer, ConsumerRegistry
from zerodoc.api.datasets import (
    DATASET_COLUMNS,
    EVIDENCE_TYPES,
    FALLBACK_DOCUMENTS,
    SHARED_TABLES,
    VICTIM_SUPPORT_AREAS,
    VICTIM_SUPPORT_DATASET,
)
from zerodoc.api.index import DatasetUnavailable, Snapshot
from zerodoc.api.policy import Grant, load_policy, policy_path
from zerodoc.api.ratelimit import SharedRateLimiter
from zerodoc.api.served import build_indexes, build_shared_tables
from zerodoc.api.signing import canonical_bytes, load_or_create_keys
from zerodoc.api.watch import ChangeWatch
from zerodoc.audit import service as audit_service
from zerodoc.audit.log import AuditError, GroupCommitLog, Search, audit_dsn, open_audit_log
from zerodoc.config import Settings
from zerodoc.config import settings as load_settings
from zerodoc.privacy import contains_rrn, pseudonymize
from zerodoc.publish import store

log = logging.getLogger(__name__)

# YYMMDD-SXXXXXX with a plausible month and day; the check digit is not checked because it
# is only valid for numbers issued before October 2020. S is 1-4 (citizens) or 5-8 (foreigners).
SUBJECT_ID = re.compile(r"^\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])-[1-8]\d{6}$")
PURPOSE = re.compile(r"^[a-z][a-z0-9_]{2,63}$")
MAX_BODY_BYTES = 4096
NO_STORE = {"Cache-Control": "no-store"}
DEFAULT_RATE_PER_SEC = 200.0
DEFAULT_CONSENT_DAYS_MAX = 366 * 5
# 0: a batch goes as soon as the previous one is durable. With 2 workers and 64 connections
# (bench/api_bench.py, busy machine) 4 ms showed no CPU saving (327-361 vs 293-299 us/answer) and
# answers/s from 2,427 to 5,116 against 4,463-5,374 at 0; in one process it did save CPU (batches
# of 14 instead of 4). Off until a quiet measurement says otherwise.
AUDIT_COMMIT_INTERVAL_MS = 0.0
SIGNED_ROUTES = ("/v1/evidence", "/v1/bundles/crime-victim-support")
# Where an evidence template is cut (EvidenceService._evidence_template): private-use characters,
# which no envelope value can hold (purposes, names, versions and dates are checked ASCII text).
_MARKS = {"fields": "\ue000fields\ue000", "issued_at": "\ue000issued\ue000", "subject_pseudonym": "\ue000subject\ue000"}


class EvidenceAPI(FastAPI):
    """FastAPI with an exact-match fast lane for the hot routes (evidence, bundle, /livez).

    Those requests go straight to their handler instead of through the middleware stack, route
    matching and dependency solving, which cost about as much CPU as a constant answer. The routes
    stay registered with FastAPI too (OpenAPI, 405s, anything not an exact match). /livez takes the
    lane as it always has (a Request, its handler's Response); evidence and bundles take the raw
    lane: plain ASGI callables that read the body's messages and send their answer's two messages.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fast_lane: dict[tuple[str, str], Callable[[Request], Any]] = {}
        self.raw_lane: dict[tuple[str, str], Callable[[dict, Any, Any], Any]] = {}

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI signature
        if scope["type"] == "http":
            key = (scope["method"], scope["path"])
            handler = self.fast_lane.get(key)
            if handler is not None:
                scope["app"] = self
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
            raw = self.raw_lane.get(key)
            if raw is not None:
                scope["app"] = self
                await raw(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _JSONBytes(Response):
    """Already-serialised JSON with the same headers Response(..., headers=NO_STORE) would send,
    without building them per answer (Starlette's init_headers costs as much as the signature's b64)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200):
        self.body, self.status_code, self.background = body, status_code, None
        self.raw_headers = [
            (b"cache-control", b"no-store"),
            (b"content-length", str(len(body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]


@dataclass(frozen=True)
class Outcome:
    """A response that may leave only once its audit record (None: not audited) is durable."""

    response: Response
    audit: dict[str, Any] | None = None


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _request_id() -> str:
    """A random (version 4) UUID; the 16 random bytes come from a pool refilled 256 requests at a time."""
    global _RANDOM_POOL, _RANDOM_AT
    with _RANDOM_LOCK:  # handle() also runs in the thread pool
        at = _RANDOM_AT
        if at >= len(_RANDOM_POOL):
            _RANDOM_POOL, at = os.urandom(16 * 256), 0
        _RANDOM_AT = at + 16
        h = _RANDOM_POOL[at : at + 16].hex()
    # RFC 9562 version 4: version nibble 4, variant bits 10 (the nibble is one of 8, 9, a, b).
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_RANDOM_POOL, _RANDOM_AT, _RANDOM_LOCK = b"", 0, threading.Lock()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _now() -> str:
    """UTC now to the second, ISO 8601 with Z; formatted once per second, not once per answer."""
    global _NOW_TEXT
    at = int(time.time())
    if _NOW_TEXT[0] != at:
        _NOW_TEXT = (at, datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    return _NOW_TEXT[1]


_NOW_TEXT: tuple[int, str] = (-1, "")


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    """One request header straight from the ASGI scope (no Headers object on the hot path)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: dict[str, Any]) -> str | None:
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _parse_body(raw: bytes, required: tuple[str, ...], optional: dict[str, type] | None = None) -> dict[str, Any]:
    """Validate the request body by hand: error messages must never echo the subject_id back.

    Required fields are strings; optional ones have the given type (str, list of str, int).
    """
    optional = optional or {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(422, "invalid_json", "request body is not valid JSON") from None
    if type(body) is dict and len(body) == len(required) and all(type(body.get(k)) is str for k in required):
        return body  # the usual request: exactly the required fields, all text
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "request body must be a JSON object")
    missing = [k for k in required if k not in body]
    if missing:
        raise ApiError(422, "invalid_request", f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(body) - set(required) - set(optional))
    if extra:
        # Names only if they look like field names: a key can carry an ID or an injection string.
        shown = [k for k in extra if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", k)]
        raise ApiError(422, "invalid_request", f"unknown field(s): {', '.join(shown) if shown else '(not shown)'}")
    not_text = [k for k in required if not isinstance(body[k], str)]
    for k, kind in optional.items():
        v = body.get(k)
        if v is None:
            continue
        ok = (
            (kind is str and isinstance(v, str))
            or (kind is int and isinstance(v, int) and not isinstance(v, bool))
            or (kind is list and isinstance(v, list) and all(isinstance(x, str) for x in v))
        )
        if not ok:
            not_text.append(k)
    if not_text:
        raise ApiError(422, "invalid_request", f"field(s) of the wrong type: {', '.join(not_text)}")
    return body


def _check_purpose(purpose: str) -> None:
    if not PURPOSE.fullmatch(purpose):
        raise ApiError(422, "invalid_purpose", "purpose must be a lowercase snake_case purpose code")


def _check_subject(subject_id: str) -> None:
    if not SUBJECT_ID.fullmatch(subject_id):
        raise ApiError(422, "invalid_subject_id", "subject_id must be a resident registration number YYMMDD-SXXXXXX")


class _Pseudonymizer:
    """pseudonymize() of an ID that passed _check_subject (YYMMDD-SXXXXXX), no regex, the GIL kept.

    HMAC-SHA256 from the key's inner and outer SHA-256 states, copied per call (RFC 2104, as
    hmac.HMAC does): hmac.digest gives the same bytes but lets go of the GIL for the call, which
    hands it to the audit writer thread and back, twice the context switches for a 1 us hash.
    """

    def __init__(self, key: bytes):
        if len(key) > 64:  # SHA-256's block: longer keys are hashed first
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, subject_id: str) -> str:
        inner = self._inner.copy()
        inner.update((subject_id[:6] + subject_id[7:]).encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


def _check_consent_id(consent_id: str) -> str:
    consent_id = consent_id.strip()
    if not consent_id or len(consent_id) > 128 or contains_rrn(consent_id):
        raise ApiError(
            422,
            "invalid_consent_id",
            "consent_id must be a non-empty consent reference of at most 128 characters "
            "that contains no resident registration number",
        )
    return consent_id


CONSENT_MESSAGES = {
    "consent_missing": "no consent matching this subject, consumer and purpose",
    "consent_revoked": "the consent was revoked by the subject",
    "consent_expired": "the consent is not valid at this time",
    "consent_scope": "the consent does not cover this dataset",
}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _open_audit(cfg: Settings) -> GroupCommitLog:
    """PostgreSQL when configured; else the local file, written by the server's one audit process.

    ZERODOC_AUDIT_PROCESS: ``auto`` (default) a worker starts the audit process when none answers;
    ``external`` a supervisor runs it (``python -m zerodoc.audit.service``), none means 503s; ``off``
    each worker writes the file itself (a writer thread per worker, the file's flock between them).
    """
    mode = os.environ.get("ZERODOC_AUDIT_PROCESS", "auto").strip().lower()
    if audit_dsn() or mode == "off" or not audit_service.usable(cfg.state_dir):
        return open_audit_log(cfg.state_dir, group_commit=True)
    if mode not in ("auto", "external"):
        raise ValueError(f"ZERODOC_AUDIT_PROCESS must be auto, external or off, not {mode!r}")
    return audit_service.AuditProcessLog(cfg.state_dir, spawn=mode == "auto")


class EvidenceService:
    """Everything a request needs, built once at start: policy, keys, consumers, indexes, audit log."""

    def __init__(self, cfg: Settings, rate_per_sec: float | None = None, burst: float | None = None):
        self.cfg = cfg
        self.freshness_sla = freshness_hours(cfg)
        self.pseudonym_key = cfg.pseudonym_key  # fail at start, not at the first request
        self._pseudonymize = _Pseudonymizer(self.pseudonym_key)
        self.policy = load_policy(policy_path(cfg))
        self._keys = load_or_create_keys(cfg.state_dir)
        self._keys_index = cfg.state_dir / "signing" / "keys.json"
        self._keys_stamp = self._stat(self._keys_index)
        self._keys_lock = threading.Lock()
        self.audit = _open_audit(cfg)
        # Optionally space batches under load (GroupCommitLog.commit_interval); off by default, see above.
        self.audit.commit_interval = _env_float("ZERODOC_AUDIT_COMMIT_INTERVAL_MS", AUDIT_COMMIT_INTERVAL_MS) / 1000
        rate = (
            rate_per_sec if rate_per_sec is not None else _env_float("ZERODOC_API_RATE_PER_SEC", DEFAULT_RATE_PER_SEC)
        )
        burst = burst if burst is not None else _env_float("ZERODOC_API_RATE_BURST", max(1.0, rate))
        # One bucket per key holder for all worker processes: N workers must not mean N x the limit.
        self.limiter = SharedRateLimiter(cfg.state_dir / "ratelimit" / "buckets.bin", rate, burst)
        self.now: Callable[[], datetime] = _utcnow
        self._stale_after: dict[tuple[str | None, float], datetime] = {}
        self._templates: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, bytes]] = {}
        self._all_serving = False
        self.indexes = build_indexes(self.policy, cfg)  # granted per-subject datasets; households via residence
        self.shared_tables = build_shared_tables(cfg)
        # One inotify descriptor instead of a stat per file (keys, consumers, CURRENT.json) and an
        # SQLite pragma (consents) on every request; whatever it does not cover keeps its check.
        self.watch = ChangeWatch(
            [cfg.state_dir, self._keys_index.parent, *(index.pointer.parent for index in self.indexes.values())]
        )
        self._keys_seen: int | None = None
        self._keys_watched = self.watch.covers(self._keys_index.parent)
        self.consumers = ConsumerRegistry(cfg, watch=self.watch)
        self.consents = ConsentRegistry(cfg, watch=self.watch)
        for index in self.indexes.values():
            if self.watch.covers(index.pointer.parent):
                index.watch = self.watch
        if not self.watch.active:
            log.info("no state watch (%s): files are checked on every request", self.watch.reason)

    @staticmethod
    def _stat(path: Any) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    @property
    def keys(self):
        """The signing keys, reloaded when `zerodoc keys rotate` rewrote keys.json (one stat, when it may have)."""
        if self._keys_watched:
            generation = self.watch.generation()
            if generation == self._keys_seen:
                return self._keys
            keys = self._keys_checked()
            self._keys_seen = generation  # read before the stat: a change after it moves the generation again
            return keys
        return self._keys_checked()

    def _keys_checked(self):
        stamp = self._stat(self._keys_index)
        if stamp != self._keys_stamp:
            with self._keys_lock:
                if stamp != self._keys_stamp:
                    self._keys = load_or_create_keys(self.cfg.state_dir)
                    self._keys_stamp = stamp
        return self._keys

    def warm(self) -> None:
        for index in self.indexes.values():
            try:
                index.snapshot()
            except DatasetUnavailable as exc:
                log.warning("evidence API starting without %s: %s", index.dataset, exc)

    # ---- the request pipeline ------------------------------------------------------------
    def handle(
        self,
        scope: dict[str, Any],
        raw: bytes | None,
        roles: tuple[str, ...],
        op: Callable[[dict[str, Any], Consumer, bytes], Outcome],
    ) -> Outcome:
        """Authenticate, authorise the role, rate-limit and size-check; then run op. Always audited.

        raw is None when the body was larger than MAX_BODY_BYTES (it was not read further).
        """
        # Audit context, filled in as the request is understood; written on every exit path.
        ctx: dict[str, Any] = {"request_id": _request_id(), "method": scope["method"], "path": scope["path"]}
        self.watch.pin()  # one look for changed state files per request, not one per check
        try:
            consumer = self.consumers.authenticate(_bearer(scope))
            if consumer is None:
                # Unauthenticated floods share one bucket per client address: each is audited (fsync).
                client = scope.get("client")
                wait = self.limiter.take(f"anonymous:{client[0] if client else 'unknown'}")
                if wait is not None:
                    raise ApiError(
                        429,
                        "rate_limited",
                        "too many requests for this API key; retry after the time in Retry-After",
                        {"Retry-After": str(max(1, int(wait + 0.999)))},
                    )
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing, unknown or revoked API key; send 'Authorization: Bearer <key>'",
                    {"WWW-Authenticate": "Bearer"},
                )
            ctx["consumer"] = consumer.name
            if consumer.role not in roles:
                raise ApiError(403, "role_not_allowed", "this API key's role may not use this endpoint")
            wait = self.limiter.take(consumer.name)
            if wait is not None:
                raise ApiError(
                    429,
                    "rate_limited",
                    "too many requests for this API key; retry after the time in Retry-After",
                    {"Retry-After": str(max(1, int(wait + 0.999)))},
                )
            if raw is None:
                raise ApiError(413, "body_too_large", f"request body larger than {MAX_BODY_BYTES} bytes")
            return op(ctx, consumer, raw)
        except ApiError as err:
            return self.deny(ctx, err)
        except Exception as exc:  # noqa: BLE001 - a bug must still be audited, and its text may hold the ID
            log.error("unhandled %s in %s (request %s)", type(exc).__name__, ctx["path"], ctx["request_id"])
            return self.deny(ctx, ApiError(500, "internal_error", "internal error"))
        finally:
            self.watch.unpin()

    @staticmethod
    def _audit_unavailable() -> JSONResponse:
        return JSONResponse(
            _error_body("audit_unavailable", "the request could not be recorded; try again later"),
            status_code=503,
            headers=NO_STORE,
        )

    def answer(
        self,
        ctx: dict[str, Any],
        payload: dict[str, Any] | bytes,
        *,
        status: int = 200,
        decision: str = "allowed",
        reason: str,
        fields: list[str] | None = None,
    ) -> Outcome:
        """The answer and its audit record; `respond` releases it once the record is durable."""
        audit = {**ctx, "fields": fields or [], "decision": decision, "status": status, "reason": reason}
        if isinstance(payload, bytes):
            response: Response = _JSONBytes(payload, status)
        else:
            response = JSONResponse(payload, status_code=status, headers=NO_STORE)
        return Outcome(response, audit)

    def deny(self, ctx: dict[str, Any], err: ApiError) -> Outcome:
        audit = {**ctx, "fields": [], "decision": "denied", "status": err.status, "reason": err.code}
        response = JSONResponse(
            _error_body(err.code, err.message), status_code=err.status, headers={**NO_STORE, **err.headers}
        )
        return Outcome(response, audit)

    def deny_request(self, request: Request, err: ApiError) -> Outcome:
        """Errors raised outside our handlers (unknown route, wrong method, framework validation)."""
        if not request.url.path.startswith("/v1/"):
            body = _error_body(err.code, err.message)
            return Outcome(JSONResponse(body, status_code=err.status, headers=err.headers))
        ctx = {"request_id": str(uuid.uuid4()), "method": request.method, "path": request.url.path}
        return self.deny(ctx, err)

    def deny_scope(self, scope: dict[str, Any], err: ApiError) -> Outcome:
        """deny_request for a fast-lane request (its path is one of the /v1/ routes)."""
        return self.deny({"request_id": _request_id(), "method": scope["method"], "path": scope["path"]}, err)

    async def respond(self, outcome: Outcome) -> Response:
        """The response, once its audit record is fsync'd; 503 and no answer if it cannot be."""
        if outcome.audit is not None:
            try:
                await self.audit.append_fields_async(outcome.audit)  # a dict answer() or deny() made for it
            except AuditError:
                log.exception("audit log write failed; refusing to answer")
                return self._audit_unavailable()
        return outcome.response

    def inline_ready(self) -> bool:
        """No index has a first load to do, so no request can block on one (unpublished ones answer 503).

        Never with the Redis rate limit: its take() waits on the network (up to its timeout when
        Redis is silent), which on the event loop would stall every request of the worker.
        """
        if self.limiter.remote:
            return False
        if self._all_serving:  # an index never goes back to serving nothing: checked until all serve
            return True
        if all(index.serving_version is not None for index in self.indexes.values()):
            self._all_serving = True
            return True
        return all(index.serving_version is not None or not index.pointer.exists() for index in self.indexes.values())

    # ---- evidence --------------------------------------------------------------------------
    def _authorise(
        self, ctx: dict[str, Any], consumer: Consumer, dataset: str, body: dict[str, Any]
    ) -> tuple[Grant, Snapshot]:
        """Purpose, subject and consent checks shared by evidence and bundles; returns grant and data."""
        purpose = body["purpose"]
        _check_purpose(purpose)
        ctx["purpose"] = purpose
        _check_subject(body["subject_id"])
        ctx["subject_pseudonym"] = self._pseudonymize(body["subject_id"])
        # The consent reference must not smuggle an identifier into the audit log either.
        consent_id = _check_consent_id(body["consent_id"])
        ctx["consent_id"] = consent_id
        grant = self.policy.grant_for(consumer.name, dataset, purpose)
        if grant is None:
            raise ApiError(
                403,
                "purpose_not_granted",
                f"consumer {consumer.name!r} is not granted {dataset} for purpose {purpose!r}",
            )
        requested = body.get("fields")
        if requested is not None and (not requested or not set(requested) <= set(grant.fields)):
            raise ApiError(
                403,
                "field_not_granted",
                f"requested field(s) not granted for this purpose; granted: {list(grant.fields)}",
            )
        refused = self.consents.check(
            consent_id,
            subject_pseudonym=ctx["subject_pseudonym"],
            consumer=consumer.name,
            purpose=purpose,
            dataset=dataset,
            # _now() is utc_iso(datetime.now(UTC)) formatted once a second; a replaced clock (tests) is asked
            **({"stamp": _now()} if self.now is _utcnow else {"now": self.now()}),
        )
        if refused:
            raise ApiError(403, refused, CONSENT_MESSAGES[refused])
        try:
            snap = self.indexes[dataset].snapshot()
        except DatasetUnavailable as exc:
            raise ApiError(503, "dataset_unavailable", str(exc), {"Retry-After": "60"}) from None
        ctx["dataset_version"] = snap.version
        return grant, snap

    def _fallback_reason(self, grant: Grant, snap: Snapshot, pseudonym: str) -> str | None:
        """Why this one person's evidence must come on paper, or None."""
        if snap.is_quarantined(pseudonym):
            return "records_quarantined"
        if grant.max_age_days is not None:
            if snap.as_of is None:
                return "data_stale"
            try:
                as_of = date.fromisoformat(snap.as_of[:10])
            except ValueError:
                return "data_stale"
            if (self.now().date() - as_of).days > grant.max_age_days:
                return "data_stale"
        return None

    def _signed(
        self,
        ctx: dict[str, Any],
        evidence: dict[str, Any],
        *,
        fields: list[str],
        document: str | None = None,
        reason: str | None = None,
    ) -> Outcome:
        keys = self.keys
        # The answer is assembled around the signed bytes: the evidence is serialised once.
        signed = canonical_bytes(evidence)
        if document is not None:
            head = _json({"status": evidence["status"], "document": document, "reason": reason})[:-1]
        elif evidence["status"] == "ok":
            head = b'{"status":"ok"'
        else:
            head = _json({"status": evidence["status"]})[:-1]
        # A JWS compact string is base64url text and dots: nothing in it needs JSON escaping.
        signature = keys.sign_bytes(signed).encode("ascii")
        payload = b"".join((head, b',"evidence":', signed, b',"signature":"', signature, b'",', keys.kid_tail))
        if document is not None:
            return self.answer(ctx, payload, decision="needs_document", reason=reason or "needs_document")
        return self.answer(ctx, payload, reason="granted", fields=fields)

    def _signed_bytes(
        self, ctx: dict[str, Any], signed: bytes, head: bytes, *, reason: str, fields: list[str]
    ) -> Outcome:
        """The answer around evidence already serialised as canonical_bytes (evidence_op's templates)."""
        keys = self.keys
        signature = keys.sign_bytes(signed).encode("ascii")
        payload = b"".join((head, b',"evidence":', signed, b',"signature":"', signature, b'",', keys.kid_tail))
        return self.answer(ctx, payload, reason=reason, fields=fields)

    def _envelope(
        self, ctx: dict[str, Any], consumer: Consumer, snap: Snapshot, evidence_type: str, purpose: str
    ) -> dict[str, Any]:
        return {
            "status": "ok",
            "evidence_type": evidence_type,
            "dataset": snap.dataset,
            "dataset_version": snap.version,
            "as_of": snap.as_of,
            "stale": self._stale(snap),
            "validation_run_ids": snap.validation_run_ids,
            "purpose": purpose,
            "consumer": consumer.name,
            "subject_pseudonym": ctx["subject_pseudonym"],
        }

    def _stale(self, snap: Snapshot) -> bool:
        """alerts.is_stale for the snapshot now, its deadline worked out once per (as_of, SLA)."""
        sla = self.freshness_sla.get(snap.dataset, DEFAULT_FRESHNESS_HOURS)
        deadline = self._stale_after.get((snap.as_of, sla))
        if deadline is None:
            if snap.as_of is None:
                return True
            # stale when hours since the end of as_of exceed the SLA (alerts.age_hours)
            end_of_as_of = datetime.fromisoformat(str(snap.as_of)[:10]).replace(tzinfo=UTC) + timedelta(days=1)
            deadline = self._stale_after[(snap.as_of, sla)] = end_of_as_of + timedelta(hours=sla)
        if self.now is _utcnow:
            return time.time() > deadline.timestamp()
        return self.now() > deadline

    def _needs_document(self, ctx: dict[str, Any], envelope: dict[str, Any], reason: str) -> Outcome:
        document = FALLBACK_DOCUMENTS.get(envelope["dataset"], "the certificate the service normally asks for")
        evidence = {**envelope, "status": "needs_document", "document": document, "reason": reason, "issued_at": _now()}
        return self._signed(ctx, evidence, fields=[], document=document, reason=reason)

    def evidence_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        body = _parse_body(raw, ("evidence_type", "subject_id", "purpose", "consent_id"), {"fields": list})
        evidence_type = body["evidence_type"]
        if evidence_type not in EVIDENCE_TYPES:
            raise ApiError(422, "unknown_evidence_type", f"evidence_type must be one of {sorted(EVIDENCE_TYPES)}")
        dataset = EVIDENCE_TYPES[evidence_type]
        ctx.update(evidence_type=evidence_type, dataset=dataset)
        grant, snap = self._authorise(ctx, consumer, dataset, body)
        fallback = self._fallback_reason(grant, snap, ctx["subject_pseudonym"])
        if fallback:
            envelope = self._envelope(ctx, consumer, snap, evidence_type, body["purpose"])
            return self._needs_document(ctx, envelope, fallback)
        requested = body.get("fields")
        names = grant.fields if not requested else tuple(f for f in grant.fields if f in requested)
        pseudonym = ctx["subject_pseudonym"]
        fields = snap.lookup_json(pseudonym, names)
        if fields is None:
            raise ApiError(404, "subject_not_found", f"no {evidence_type} record for this subject")
        # canonical_bytes({**envelope, "fields": ..., "issued_at": ...}) from a template of the envelope.
        head, mid, tail, end = self._evidence_template(ctx, consumer, snap, evidence_type, body["purpose"])
        signed = b"".join((head, fields, mid, _now().encode("ascii"), tail, pseudonym.encode("ascii"), end))
        return self._signed_bytes(ctx, signed, b'{"status":"ok"', reason="granted", fields=list(names))

    def _evidence_template(
        self, ctx: dict[str, Any], consumer: Consumer, snap: Snapshot, evidence_type: str, purpose: str
    ) -> tuple[bytes, bytes, bytes, bytes]:
        """The canonical bytes of an evidence answer around its fields, issued_at and subject_pseudonym.

        Per consumer, dataset version, evidence type, purpose and staleness: everything else in the
        envelope. Made by serialising the envelope with marks in those three places and cutting there,
        so the joined bytes are exactly canonical_bytes of the whole answer.
        """
        stale = self._stale(snap)
        # Everything _envelope puts in but the subject; households' run ids follow residence's version.
        key = (consumer.name, evidence_type, purpose, stale, snap.dataset, snap.version, snap.as_of,
               *snap.validation_run_ids)  # fmt: skip
        template = self._templates.get(key)
        if template is None:
            envelope = self._envelope(ctx, consumer, snap, evidence_type, purpose)
            envelope["stale"] = stale  # the staleness the key was made with
            text = canonical_bytes({**envelope, **_MARKS})
            cuts = []
            for name, mark in _MARKS.items():
                quoted = canonical_bytes(mark)
                if text.count(quoted) != 1:
                    raise RuntimeError(f"evidence template: the mark for {name} is not there exactly once")
                at = text.index(quoted)
                # fields is a JSON object put in whole; issued_at and the pseudonym go inside their quotes
                cuts.append((at, at + len(quoted)) if name == "fields" else (at + 1, at + len(quoted) - 1))
            (a0, a1), (b0, b1), (c0, c1) = sorted(cuts)  # sorted keys: fields < issued_at < subject_pseudonym
            template = (text[:a0], text[a1:b0], text[b1:c0], text[c1:])
            if len(self._templates) > 4096:  # versions come and go: never grow without bound
                self._templates.clear()
            self._templates[key] = template
        return template

    def bundle_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        body = _parse_body(raw, ("subject_id", "purpose", "consent_id"))
        dataset = VICTIM_SUPPORT_DATASET
        ctx.update(evidence_type="crime_victim_support_bundle", dataset=dataset)
        grant, snap = self._authorise(ctx, consumer, dataset, body)
        envelope = self._envelope(ctx, consumer, snap, "crime_victim_support_bundle", body["purpose"])
        fallback = self._fallback_reason(grant, snap, ctx["subject_pseudonym"])
        if fallback:
            return self._needs_document(ctx, envelope, fallback)
        row = snap.lookup(ctx["subject_pseudonym"])
        if row is None:
            raise ApiError(404, "subject_not_found", "no crime-victim support record for this subject")
        granted = set(grant.fields)
        areas: dict[str, Any] = {}
        for area, (eligible_col, rule_col, reason_col) in VICTIM_SUPPORT_AREAS.items():
            if eligible_col in granted:
                areas[area] = {
                    "eligible": row[eligible_col],
                    "rule_id": row.get(rule_col) if rule_col in granted else None,
                    "reason": row.get(reason_col) if reason_col in granted else None,
                }
        evidence = {**envelope, "areas": areas}
        if "inputs" in granted:
            try:
                evidence["inputs"] = json.loads(row["inputs"]) if row["inputs"] is not None else None
            except (TypeError, ValueError):
                evidence["inputs"] = row["inputs"]
        evidence["issued_at"] = _now()
        returned = [c for c in DATASET_COLUMNS[dataset] if c in granted]
        return self._signed(ctx, evidence, fields=returned)

    # ---- consent (citizen-service role) ----------------------------------------------------
    def consent_record_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        body = _parse_body(
            raw,
            ("subject_id", "consumer", "purpose", "valid_to"),
            {"datasets": list, "valid_from": str},
        )
        if "datasets" not in body or body["datasets"] is None:
            raise ApiError(422, "invalid_request", "missing field(s): datasets")
        _check_subject(body["subject_id"])
        ctx["subject_pseudonym"] = pseudonymize(body["subject_id"], self.pseudonym_key)
        _check_purpose(body["purpose"])
        if body["purpose"] not in self.policy.purposes:
            raise ApiError(422, "unknown_purpose", "purpose is not declared in the access policy")
        ctx["purpose"] = body["purpose"]
        if not NAME_PATTERN.fullmatch(body["consumer"]):
            raise ApiError(422, "invalid_consumer", "consumer must be a consumer name (lowercase letters, digits, '-')")
        datasets = body["datasets"]
        if not datasets or len(datasets) > 16 or any(d not in DATASET_COLUMNS for d in datasets):
            raise ApiError(422, "invalid_datasets", f"datasets must be 1-16 of {sorted(DATASET_COLUMNS)}")
        now = self.now()
        try:
            valid_from = parse_utc(body["valid_from"]) if body.get("valid_from") else now
            valid_to = parse_utc(body["valid_to"])
        except (ConsentError, ValueError):
            raise ApiError(422, "invalid_validity", "valid_from/valid_to must be ISO 8601 with a UTC offset") from None
        if valid_to <= max(valid_from, now) or (valid_to - valid_from).days > DEFAULT_CONSENT_DAYS_MAX:
            raise ApiError(422, "invalid_validity", "valid_to must be in the future and within 5 years of valid_from")
        consent = self.consents.record(
            subject_pseudonym=ctx["subject_pseudonym"],
            consumer=body["consumer"],
            purpose=body["purpose"],
            datasets=datasets,
            valid_from=valid_from,
            valid_to=valid_to,
            recorded_by=consumer.name,
        )
        ctx["consent_id"] = consent.consent_id
        return self.answer(ctx, _consent_json(consent), status=201, reason="consent_recorded")

    def consent_revoke_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        body = _parse_body(raw, ("consent_id", "subject_id"))
        _check_subject(body["subject_id"])
        ctx["subject_pseudonym"] = pseudonymize(body["subject_id"], self.pseudonym_key)
        ctx["consent_id"] = _check_consent_id(body["consent_id"])
        try:
            consent = self.consents.revoke(ctx["consent_id"], ctx["subject_pseudonym"])
        except ConsentError:
            raise ApiError(404, "consent_not_found", "no such consent for this subject") from None
        return self.answer(ctx, _consent_json(consent), reason="consent_revoked")

    # ---- access log and chain check ---------------------------------------------------------
    def access_log_search_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        body = _parse_body(
            raw,
            (),
            {"subject_id": str, "consumer": str, "decision": str, "since": str, "until": str, "limit": int},
        )
        return self._access_log(ctx, consumer, body)

    def access_log_query_op(self, ctx: dict[str, Any], consumer: Consumer, query: dict[str, str]) -> Outcome:
        allowed = {"consumer", "decision", "since", "until", "limit"}
        if set(query) - allowed:
            raise ApiError(422, "invalid_request", f"query parameters allowed: {sorted(allowed)}")
        body: dict[str, Any] = dict(query)
        if "limit" in body:
            try:
                body["limit"] = int(body["limit"])
            except ValueError:
                raise ApiError(422, "invalid_request", "limit must be a whole number") from None
        return self._access_log(ctx, consumer, body)

    def _access_log(self, ctx: dict[str, Any], consumer: Consumer, body: dict[str, Any]) -> Outcome:
        subject = None
        if body.get("subject_id") is not None:
            _check_subject(body["subject_id"])
            subject = pseudonymize(body["subject_id"], self.pseudonym_key)
            ctx["subject_pseudonym"] = subject
        if consumer.role == "citizen_service" and (
            subject is None or any(body.get(k) is not None for k in ("consumer", "decision"))
        ):
            raise ApiError(
                422, "invalid_request", "the citizen service searches by subject_id (and optional since/until) only"
            )
        limit = body.get("limit") or 100
        if not 1 <= limit <= 1000:
            raise ApiError(422, "invalid_request", "limit must be between 1 and 1000")
        if body.get("decision") not in (None, "allowed", "denied", "needs_document"):
            raise ApiError(422, "invalid_request", "decision must be allowed, denied or needs_document")
        try:
            since = utc_iso(parse_utc(body["since"])) if body.get("since") else None
            until = utc_iso(parse_utc(body["until"])) if body.get("until") else None
        except (ConsentError, ValueError):
            raise ApiError(422, "invalid_request", "since/until must be ISO 8601 with a UTC offset") from None
        query = Search(
            subject_pseudonym=subject,
            consumer=body.get("consumer"),
            decision=body.get("decision"),
            since=since,
            until=until,
            # The citizen sees who looked at their data, not the consent bookkeeping.
            paths=SIGNED_ROUTES if consumer.role == "citizen_service" else None,
            limit=limit,
        )
        try:
            found = self.audit.search(query)
        except Exception as exc:  # noqa: BLE001 - e.g. PostgreSQL down; its text may name the host
            log.error("access-log search failed: %s", type(exc).__name__)
            raise ApiError(503, "audit_unavailable", "the audit log cannot be read; try again later") from None
        entries = [{k: rec.get(k) for k in schemas.AccessLogEntry.model_fields} for rec in found]  # newest first
        return self.answer(ctx, {"entries": entries}, reason="access_log")

    def audit_verify_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        result = self.audit.verify()
        payload = {
            "ok": result.ok,
            "records": result.records,
            "first_bad_seq": result.first_bad_seq,
            "message": result.message,
            "head_hash": result.head_hash,
        }
        return self.answer(ctx, payload, reason="audit_verify")

    # ---- shared tables: aggregates about no one (no subject, no consent) --------------------
    def shared_table_op(self, ctx: dict[str, Any], consumer: Consumer, raw: bytes) -> Outcome:
        filter_names = sorted({c for cols in SHARED_TABLES.values() for c in cols})
        body = _parse_body(raw, ("dataset", "purpose"), dict.fromkeys(filter_names, str))
        dataset = body["dataset"]
        if dataset not in SHARED_TABLES:
            raise ApiError(
                422,
                "not_a_shared_table",
                f"dataset must be one of {sorted(SHARED_TABLES)}; data about a person is answered at /v1/evidence",
            )
        ctx.update(evidence_type="shared_table", dataset=dataset)
        _check_purpose(body["purpose"])
        ctx["purpose"] = body["purpose"]
        grant = self.policy.grant_for(consumer.name, dataset, body["purpose"])
        if grant is None:
            raise ApiError(
                403,
                "purpose_not_granted",
                f"consumer {consumer.name!r} is not granted {dataset} for purpose {body['purpose']!r}",
            )
        not_here = [k for k in filter_names if body.get(k) is not None and k not in SHARED_TABLES[dataset]]
        if not_here:
            raise ApiError(422, "invalid_request", f"{dataset} cannot be filtered by: {', '.join(not_here)}")
        filters = {k: body[k] for k in SHARED_TABLES[dataset] if body.get(k) is not None}
        try:
            version, rows = self.shared_tables[dataset].current()
        except DatasetUnavailable as exc:
            raise ApiError(503, "dataset_unavailable", str(exc), {"Retry-After": "60"}) from None
        ctx["dataset_version"] = version.version
        as_of = None if version.metadata.get("as_of") is None else str(version.metadata["as_of"])
        selected = [
            {f: row.get(f) for f in grant.fields} for row in rows if all(row.get(k) == v for k, v in filters.items())
        ]
        evidence = {
            "status": "ok",
            "evidence_type": "shared_table",
            "dataset": dataset,
            "dataset_version": version.version,
            "as_of": as_of,
            "stale": is_stale(as_of, self.freshness_sla.get(dataset, DEFAULT_FRESHNESS_HOURS), self.now()),
            "validation_run_ids": [str(r) for r in version.metadata.get("validation_runs") or []],
            "purpose": body["purpose"],
            "consumer": consumer.name,
            "filters": filters,
            "row_count": len(selected),
            "rows": selected,
            "issued_at": _now(),
        }
        return self._signed(ctx, evidence, fields=list(grant.fields))

    def health(self) -> dict[str, Any]:
        """Published (CURRENT) and served version per dataset; they differ while a new one loads."""
        datasets: dict[str, Any] = {}
        for evidence_type, dataset in EVIDENCE_TYPES.items():
            index = self.indexes.get(dataset)  # None: no grant returns it, so it is not loaded
            entry: dict[str, Any] = {"evidence_type": evidence_type, "version": None, "as_of": None}
            try:
                v = store.current(dataset, self.cfg)
                entry.update(version=v.version, as_of=v.metadata.get("as_of"))
                sla = self.freshness_sla.get(dataset, DEFAULT_FRESHNESS_HOURS)
                entry.update(freshness_hours=sla, stale=is_stale(entry["as_of"], sla, self.now()))
            except (store.NotPublishedError, OSError, ValueError, KeyError):
                pass
            entry.update(
                granted=index is not None,
                serving_version=index.serving_version if index else None,
                load_error=index.last_error if index else None,
            )
            datasets[dataset] = entry
        return {"status": "ok", "datasets": datasets}


def _consent_json(consent: Any) -> dict[str, Any]:
    return {
        "consent_id": consent.consent_id,
        "consumer": consent.consumer,
        "purpose": consent.purpose,
        "datasets": list(consent.datasets),
        "valid_from": consent.valid_from,
        "valid_to": consent.valid_to,
        "revoked_at": consent.revoked_at,
    }


async def _read_capped(scope: dict[str, Any], receive: Callable[[], Any]) -> bytes | None:
    """The body, or None once it exceeds MAX_BODY_BYTES (the rest is not read into memory).

    The ASGI messages themselves: Starlette's Request.stream() adds a generator per request.
    """
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_response(response: Response, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What response(scope, receive, send) sends, without its per-call work for an already-serialised answer."""
    if type(response) is _JSONBytes:
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
    else:
        await response(scope, receive, send)


def create_app(
    cfg: Settings | None = None, *, rate_per_sec: float | None = None, burst: float | None = None
) -> EvidenceAPI:
    """Build the evidence API. Fails at start on a bad policy file or a missing pseudonym key.

    Rate limit per key holder, shared by the server's worker processes: ZERODOC_API_RATE_PER_SEC (default 200/s) with a
    burst of ZERODOC_API_RATE_BURST (default one second's worth); 0 disables it.
    """
    cfg = cfg or load_settings()
    service = EvidenceService(cfg, rate_per_sec=rate_per_sec, burst=burst)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await run_in_threadpool(service.warm)  # off the loop: a first load blocks on purpose here
        if isinstance(service.audit, audit_service.AuditProcessLog):
            try:  # connected (the audit process started) before the first request, not by it
                await service.audit.start()
            except AuditError as exc:  # requests answer 503 until it is back
                log.error("no audit process at start: %s", exc)
        # What start-up built (policy, indexes' value lists, the framework) lives as long as the
        # server: out of the collector's way, so its full collections stop walking it under load.
        gc.freeze()
        yield
        service.watch.close()
        if isinstance(service.audit, audit_service.AuditProcessLog):
            service.audit.close()

    app = EvidenceAPI(
        title="ZeroDoc evidence API",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # no interactive console on a service handing out personal data
        redoc_url=None,
    )
    app.state.service = service
    secured = [{"bearerAuth": []}]

    def route(roles: tuple[str, ...], op: Callable[..., Outcome], inline: bool):
        async def answer(scope: dict[str, Any], receive: Any) -> Response:
            try:
                raw = await _read_capped(scope, receive)
                if inline and service.inline_ready():
                    outcome = service.handle(scope, raw, roles, op)
                else:  # SQLite writes with fsync, or an index's first load: not on the event loop
                    outcome = await run_in_threadpool(service.handle, scope, raw, roles, op)
            except Exception as exc:  # noqa: BLE001 - e.g. the client went away mid-body; still audited
                log.error("unhandled %s on %s", type(exc).__name__, scope["path"])
                outcome = service.deny_scope(scope, ApiError(500, "internal_error", "internal error"))
            return await service.respond(outcome)

        async def handler(request: Request) -> Response:  # the registered route: OpenAPI, non-exact matches
            return await answer(request.scope, request.receive)

        async def lane(scope, receive, send) -> None:  # noqa: ANN001 - ASGI signature
            await _send_response(await answer(scope, receive), scope, receive, send)

        return handler, lane

    def post(
        path: str, roles: tuple[str, ...], op, model, response, summary: str, status: int = 200, inline: bool = False
    ):
        handler, lane = route(roles, op, inline)
        if inline:
            app.raw_lane[("POST", path)] = lane
        app.add_api_route(
            path,
            handler,
            methods=["POST"],
            summary=summary,
            status_code=status,
            responses={status: {"model": response, "description": "Answer"}, **schemas.ERRORS},
            openapi_extra={**schemas.body_schema(model), "security": secured},
            response_class=JSONResponse,
        )

    post(
        "/v1/evidence",
        ("consumer",),
        service.evidence_op,
        schemas.EvidenceRequest,
        schemas.SignedAnswer,
        "Signed, purpose-bound evidence about one consenting subject (or needs_document)",
        inline=True,
    )
    post(
        "/v1/bundles/crime-victim-support",
        ("consumer",),
        service.bundle_op,
        schemas.BundleRequest,
        schemas.SignedAnswer,
        "All crime-victim support areas in one signed answer",
        inline=True,
    )
    post(
        "/v1/consents",
        ("citizen_service",),
        service.consent_record_op,
        schemas.ConsentRequest,
        schemas.ConsentAnswer,
        "Record a citizen's consent (citizen-service role)",
        status=201,
    )
    post(
        "/v1/consents/revoke",
        ("citizen_service",),
        service.consent_revoke_op,
        schemas.ConsentRevokeRequest,
        schemas.ConsentAnswer,
        "Revoke a citizen's consent (citizen-service role)",
    )
    post(
        "/v1/access-log/search",
        ("citizen_service", "auditor"),
        service.access_log_search_op,
        schemas.AccessLogSearch,
        schemas.AccessLogAnswer,
        "Who looked at a subject's data, when, why and with what result (citizen service, auditor)",
    )
    post(
        "/v1/shared-tables/query",
        ("consumer",),
        service.shared_table_op,
        schemas.SharedTableQuery,
        schemas.SignedAnswer,
        "Rows of an aggregate shared dataset (about no one: no subject, no consent), signed",
    )

    @app.get(
        "/v1/access-log",
        summary="Audit log entries filtered by consumer, decision and time (auditor role)",
        responses={200: {"model": schemas.AccessLogAnswer, "description": "Answer"}, **schemas.ERRORS},
        openapi_extra={
            "security": secured,
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": sch}
                for n, sch in (
                    ("consumer", {"type": "string"}),
                    ("decision", {"type": "string", "enum": ["allowed", "denied", "needs_document"]}),
                    ("since", {"type": "string"}),
                    ("until", {"type": "string"}),
                    ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                )
            ],
        },
    )
    async def access_log(request: Request) -> Response:
        query = dict(request.query_params)
        outcome = await run_in_threadpool(
            service.handle,
            request.scope,
            b"",
            ("auditor",),
            lambda ctx, c, _raw: service.access_log_query_op(ctx, c, query),
        )
        return await service.respond(outcome)

    @app.get(
        "/v1/audit/verify",
        summary="Check the audit log's hash chain (auditor role)",
        responses={200: {"model": schemas.VerifyAnswer, "description": "Answer"}, **schemas.ERRORS},
        openapi_extra={"security": secured},
    )
    async def audit_verify(request: Request) -> Response:
        outcome = await run_in_threadpool(service.handle, request.scope, b"", ("auditor",), service.audit_verify_op)
        return await service.respond(outcome)

    @app.get("/v1/health")
    async def health() -> Response:
        ctx = {"request_id": str(uuid.uuid4()), "method": "GET", "path": "/v1/health"}
        payload = await run_in_threadpool(service.health)
        audit = {**ctx, "fields": [], "decision": "allowed", "status": 200, "reason": "health"}
        return await service.respond(Outcome(JSONResponse(payload), audit))

    @app.get("/livez", summary="Liveness: a constant answer, no authentication, not audited")
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app.fast_lane[("GET", "/livez")] = lambda _request: livez()

    @app.get(
        "/readyz",
        summary="Readiness: 200 when this replica can write audit records (so answer evidence), 503 and why "
                "when it cannot; no authentication, not audited",
        responses={503: {"description": "Not ready: the reason names the audit backend that cannot be reached"}},
    )
    async def readyz() -> JSONResponse:
        # A load balancer asks every second or two: auditing the check would flood the chain, and a
        # replica that cannot audit must leave rotation rather than refuse every request sent to it.
        reason = await service.audit.ready()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready", "reason": reason}, status_code=503,
                            headers={"Cache-Control": "no-store"})

    @app.get("/.well-known/jwks.json")
    def jwks() -> JSONResponse:
        return JSONResponse(service.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))
        return await service.respond(service.deny_request(request, err))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Field locations only: pydantic's messages can carry the rejected input, i.e. an ID.
        where = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        err = ApiError(422, "invalid_request", f"invalid request at: {', '.join(where)}")
        return await service.respond(service.deny_request(request, err))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return await service.respond(service.deny_request(request, ApiError(500, "internal_error", "internal error")))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "API key (zdk_...)"}
            }
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
