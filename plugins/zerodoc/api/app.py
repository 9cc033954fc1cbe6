"""The evidence API: FastAPI app factory, request handling, error envelope and auditing.

Every request under /v1/ is appended to the hash-chained audit log, and fsync'd, before its
response is returned: in the handler for answers and handled errors, in the exception
handlers for everything else. If the audit log cannot be written, no evidence leaves.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from zerodoc.api.consumers import ConsumerRegistry
from zerodoc.api.datasets import EVIDENCE_TYPES
from zerodoc.api.index import DatasetIndex, DatasetUnavailable
from zerodoc.api.policy import load_policy, policy_path
from zerodoc.api.signing import load_or_create_keys
from zerodoc.audit.log import AuditError, AuditLog
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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _parse_body(raw: bytes) -> dict[str, str]:
    """Validate the request body by hand: error messages must never echo the subject_id back."""
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(422, "invalid_request", f"request body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_request", "request body must be a JSON object")
    required = ("evidence_type", "subject_id", "purpose", "consent_id")
    missing = [k for k in required if k not in body]
    if missing:
        raise ApiError(422, "invalid_request", f"missing field(s): {', '.join(missing)}")
    extra = sorted(set(body) - set(required))
    if extra:
        raise ApiError(422, "invalid_request", f"unknown field(s): {', '.join(extra)}")
    not_text = [k for k in required if not isinstance(body[k], str)]
    if not_text:
        raise ApiError(422, "invalid_request", f"field(s) must be strings: {', '.join(not_text)}")
    return body


class EvidenceService:
    """Everything a request needs, built once at start: policy, keys, consumers, indexes, audit log."""

    def __init__(self, cfg: Settings):
        self.cfg = cfg
        self.pseudonym_key = cfg.pseudonym_key  # fail at start, not at the first request
        self.policy = load_policy(policy_path(cfg))
        self.keys = load_or_create_keys(cfg.state_dir)
        self.consumers = ConsumerRegistry(cfg)
        self.audit = AuditLog(cfg.state_dir / "audit" / "evidence.log")
        self.indexes = {
            ds: DatasetIndex(ds, self.policy.granted_columns(ds), cfg) for ds in EVIDENCE_TYPES.values()
        }

    def warm(self) -> None:
        for index in self.indexes.values():
            try:
                index.snapshot()
            except DatasetUnavailable as exc:
                log.warning("evidence API starting without %s: %s", index.dataset, exc)

    def evidence(self, request: Request, raw: bytes) -> JSONResponse:
        # Audit context, filled in as the request is understood; written on every exit path.
        ctx: dict[str, Any] = {"request_id": str(uuid.uuid4()), "method": "POST", "path": request.url.path}
        try:
            consumer = self.consumers.authenticate(_bearer(request))
            if consumer is None:
                raise ApiError(
                    401,
                    "unauthorized",
                    "missing, unknown or revoked API key; send 'Authorization: Bearer <key>'",
                    {"WWW-Authenticate": "Bearer"},
                )
            ctx["consumer"] = consumer.name
            body = _parse_body(raw)
            evidence_type, purpose = body["evidence_type"], body["purpose"]
            if evidence_type not in EVIDENCE_TYPES:
                raise ApiError(
                    422, "unknown_evidence_type", f"evidence_type must be one of {sorted(EVIDENCE_TYPES)}"
                )
            dataset = EVIDENCE_TYPES[evidence_type]
            ctx.update(evidence_type=evidence_type, dataset=dataset)
            if not PURPOSE.match(purpose):
                raise ApiError(422, "invalid_purpose", "purpose must be a lowercase snake_case purpose code")
            ctx["purpose"] = purpose
            if not SUBJECT_ID.match(body["subject_id"]):
                raise ApiError(
                    422,
                    "invalid_subject_id",
                    "subject_id must be a resident registration number YYMMDD-SXXXXXX",
                )
            ctx["subject_pseudonym"] = pseudonymize(body["subject_id"], self.pseudonym_key)
            # Consent is only checked for presence until the consent registry exists (later issue);
            # it must not smuggle an identifier into the audit log either.
            consent_id = body["consent_id"].strip()
            if not consent_id or len(consent_id) > 128 or contains_rrn(consent_id):
                raise ApiError(
                    422,
                    "invalid_consent_id",
                    "consent_id must be a non-empty consent reference of at most 128 characters "
                    "that contains no resident registration number",
                )
            ctx["consent_id"] = consent_id
            grant = self.policy.grant_for(consumer.name, dataset, purpose)
            if grant is None:
                raise ApiError(
                    403,
                    "purpose_not_granted",
                    f"consumer {consumer.name!r} is not granted {dataset} for purpose {purpose!r}",
                )
            try:
                snap = self.indexes[dataset].snapshot()
            except DatasetUnavailable as exc:
                raise ApiError(503, "dataset_unavailable", str(exc), {"Retry-After": "60"}) from None
            ctx["dataset_version"] = snap.version
            row = snap.lookup(ctx["subject_pseudonym"])
            if row is None:
                raise ApiError(404, "subject_not_found", f"no {evidence_type} record for this subject")
            fields = {f: row[f] for f in grant.fields}
            evidence = {
                "evidence_type": evidence_type,
                "dataset": dataset,
                "dataset_version": snap.version,
                "as_of": snap.as_of,
                "validation_run_ids": snap.validation_run_ids,
                "purpose": purpose,
                "consumer": consumer.name,
                "subject_pseudonym": ctx["subject_pseudonym"],
                "fields": fields,
                "issued_at": _now(),
            }
            answer = {"evidence": evidence, "signature": self.keys.sign(evidence), "kid": self.keys.kid}
            self.audit.append(**ctx, fields=list(fields), decision="allowed", status=200, reason="granted")
            return JSONResponse(answer, headers=NO_STORE)
        except ApiError as err:
            return self.deny(ctx, err)
        except AuditError:
            log.exception("audit log write failed; refusing to answer")
            return JSONResponse(
                _error_body("audit_unavailable", "the request could not be recorded; try again later"),
                status_code=503,
                headers=NO_STORE,
            )
        except Exception as exc:  # noqa: BLE001 - a bug must still be audited, and its text may hold the ID
            log.error("unhandled %s in POST /v1/evidence (request %s)", type(exc).__name__, ctx["request_id"])
            return self.deny(ctx, ApiError(500, "internal_error", "internal error"))

    def deny(self, ctx: dict[str, Any], err: ApiError) -> JSONResponse:
        try:
            self.audit.append(**ctx, fields=[], decision="denied", status=err.status, reason=err.code)
        except AuditError:
            log.exception("audit log write failed; refusing to answer")
            return JSONResponse(
                _error_body("audit_unavailable", "the request could not be recorded; try again later"),
                status_code=503,
                headers=NO_STORE,
            )
        return JSONResponse(
            _error_body(err.code, err.message), status_code=err.status, headers={**NO_STORE, **err.headers}
        )

    def deny_request(self, request: Request, err: ApiError) -> JSONResponse:
        """Errors raised outside our handlers (unknown route, wrong method, framework validation)."""
        if not request.url.path.startswith("/v1/"):
            return JSONResponse(
                _error_body(err.code, err.message), status_code=err.status, headers=err.headers
            )
        ctx = {"request_id": str(uuid.uuid4()), "method": request.method, "path": request.url.path}
        return self.deny(ctx, err)

    def health(self) -> dict[str, Any]:
        """Published (CURRENT) and served version per dataset; they differ while a new one loads."""
        datasets: dict[str, Any] = {}
        for evidence_type, dataset in EVIDENCE_TYPES.items():
            index = self.indexes[dataset]
            entry: dict[str, Any] = {"evidence_type": evidence_type, "version": None, "as_of": None}
            try:
                v = store.current(dataset, self.cfg)
                entry.update(version=v.version, as_of=v.metadata.get("as_of"))
            except (store.NotPublishedError, OSError, ValueError, KeyError):
                pass
            entry.update(serving_version=index.serving_version, load_error=index.last_error)
            datasets[dataset] = entry
        return {"status": "ok", "datasets": datasets}


def create_app(cfg: Settings | None = None) -> FastAPI:
    """Build the evidence API. Fails at start on a bad policy file or a missing pseudonym key."""
    cfg = cfg or load_settings()
    service = EvidenceService(cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.warm()
        yield

    app = FastAPI(
        title="ZeroDoc evidence API",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # no interactive console on a service handing out personal data
        redoc_url=None,
    )
    app.state.service = service

    @app.post("/v1/evidence")
    async def post_evidence(request: Request) -> JSONResponse:
        raw = await request.body()
        # Sync work (file lock, fsync, index load) goes to the thread pool, off the event loop.
        return await run_in_threadpool(service.evidence, request, raw)

    @app.get("/v1/health")
    def health() -> JSONResponse:
        ctx = {"request_id": str(uuid.uuid4()), "method": "GET", "path": "/v1/health"}
        try:
            service.audit.append(**ctx, fields=[], decision="allowed", status=200, reason="health")
        except AuditError:
            return JSONResponse(_error_body("audit_unavailable", "audit log unavailable"), status_code=503)
        return JSONResponse(service.health())

    @app.get("/.well-known/jwks.json")
    def jwks() -> JSONResponse:
        return JSONResponse(service.keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        err = ApiError(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))
        return service.deny_request(request, err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field locations only: pydantic's messages can carry the rejected input, i.e. an ID.
        where = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        err = ApiError(422, "invalid_request", f"invalid request at: {', '.join(where)}")
        return service.deny_request(request, err)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return service.deny_request(request, ApiError(500, "internal_error", "internal error"))

    return app
