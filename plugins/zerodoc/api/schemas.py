"""Request and response shapes, for the OpenAPI document only.

Bodies are parsed by hand in zerodoc.api.app (so that error messages never echo a subject
ID and authentication comes before body validation); these models describe the same shapes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from zerodoc.api.datasets import EVIDENCE_TYPES, SHARED_TABLES

SUBJECT_ID_PATTERN = r"^\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])-[1-8]\d{6}$"
PURPOSE_PATTERN = r"^[a-z][a-z0-9_]{2,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvidenceRequest(_Strict):
    evidence_type: Literal[tuple(EVIDENCE_TYPES)]  # type: ignore[valid-type]
    subject_id: str = Field(pattern=SUBJECT_ID_PATTERN, description="Resident registration number")
    purpose: str = Field(pattern=PURPOSE_PATTERN)
    consent_id: str = Field(min_length=1, max_length=128)
    fields: list[str] | None = Field(
        default=None, description="Ask for fewer fields than granted; asking for more is refused."
    )


class SharedTableQuery(_Strict):
    dataset: Literal[tuple(SHARED_TABLES)]  # type: ignore[valid-type]
    purpose: str = Field(pattern=PURPOSE_PATTERN)
    sido_code: str | None = Field(default=None, description="Only rows of this sido (2 digits)")
    sigungu_code: str | None = Field(default=None, description="Only rows of this sigungu (5 digits)")
    age_band: str | None = Field(default=None, description="e.g. 20-29, 80+, total")
    sex: str | None = Field(default=None, description="M, F or total")


class BundleRequest(_Strict):
    subject_id: str = Field(pattern=SUBJECT_ID_PATTERN)
    purpose: str = Field(pattern=PURPOSE_PATTERN)
    consent_id: str = Field(min_length=1, max_length=128)


class ConsentRequest(_Strict):
    subject_id: str = Field(pattern=SUBJECT_ID_PATTERN)
    consumer: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")
    purpose: str = Field(pattern=PURPOSE_PATTERN)
    datasets: list[str] = Field(min_length=1, max_length=16)
    valid_from: str | None = Field(default=None, description="ISO 8601 with offset; default now")
    valid_to: str = Field(description="ISO 8601 with offset")


class ConsentRevokeRequest(_Strict):
    consent_id: str = Field(min_length=1, max_length=128)
    subject_id: str = Field(pattern=SUBJECT_ID_PATTERN)


class AccessLogSearch(_Strict):
    subject_id: str | None = Field(
        default=None, pattern=SUBJECT_ID_PATTERN, description="Required for the citizen-service role"
    )
    consumer: str | None = None
    decision: Literal["allowed", "denied", "needs_document"] | None = None
    since: str | None = Field(default=None, description="ISO 8601 with offset")
    until: str | None = Field(default=None, description="ISO 8601 with offset")
    limit: int = Field(default=100, ge=1, le=1000)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class SignedAnswer(BaseModel):
    status: Literal["ok", "needs_document"]
    evidence: dict[str, Any] = Field(description="The signed object (canonical JSON is the JWS payload)")
    signature: str = Field(description="Detached compact JWS (Ed25519)")
    kid: str
    document: str | None = None
    reason: str | None = None


class ConsentAnswer(BaseModel):
    consent_id: str
    consumer: str
    purpose: str
    datasets: list[str]
    valid_from: str
    valid_to: str
    revoked_at: str | None


class AccessLogEntry(BaseModel):
    ts: str
    consumer: str | None
    purpose: str | None
    evidence_type: str | None
    dataset: str | None
    decision: str | None
    status: int | None
    reason: str | None
    fields: list[str] | None
    path: str | None


class AccessLogAnswer(BaseModel):
    entries: list[AccessLogEntry]


class VerifyAnswer(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None
    message: str
    head_hash: str | None


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "Missing, unknown or revoked API key",
        403: "Not granted: wrong role, purpose, field or consent",
        404: "No record for this subject (only after consent is checked)",
        413: "Request body too large",
        422: "Malformed request",
        429: "Rate limit exceeded; see Retry-After",
        503: "Dataset or audit log unavailable",
    }.items()
}
