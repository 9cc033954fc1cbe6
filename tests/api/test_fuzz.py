"""Property-based fuzzing of every documented operation (schemathesis, in-process over ASGI): no 5xx.

Bounded and deterministic: 50 examples per operation, derandomized, each role's real key.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from zerodoc.api.app import create_app

from .support import bearer

ROLE_KEY = {
    "/v1/consents": "citizen-portal",
    "/v1/consents/revoke": "citizen-portal",
    "/v1/access-log/search": "audit-office",
    "/v1/access-log": "audit-office",
    "/v1/audit/verify": "audit-office",
}


def _operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.fixture
def fuzz_app(published, keys, consents):
    return create_app(published, rate_per_sec=0)


def _fuzz(operation, mode: GenerationMode, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=50, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case):
        case.call_and_validate(
            headers=headers,
            checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        )

    fuzz()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_answers_match_the_openapi(fuzz_app, keys, mode):
    operations = _operations(fuzz_app)
    assert len(operations) >= 10
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (operation.body or operation.query):
            continue  # nothing to make invalid
        _fuzz(operation, mode, bearer(keys[ROLE_KEY.get(operation.path, "welfare-portal")]))


def test_openapi_documents_every_route_with_bodies_and_security(client):
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert {
        "/v1/evidence",
        "/v1/bundles/crime-victim-support",
        "/v1/consents",
        "/v1/consents/revoke",
        "/v1/access-log",
        "/v1/access-log/search",
        "/v1/audit/verify",
        "/.well-known/jwks.json",
    } <= set(paths)
    evidence = paths["/v1/evidence"]["post"]
    body = evidence["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["required"]) == {"evidence_type", "subject_id", "purpose", "consent_id"}
    assert body["additionalProperties"] is False
    assert {"200", "401", "403", "404", "413", "422", "429", "503"} <= set(evidence["responses"])
    assert evidence["security"] == [{"bearerAuth": []}]
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    # No subject identifier ever travels in a URL: no path or query parameter names one.
    for ops in paths.values():
        for op in ops.values():
            assert all("subject" not in p["name"] for p in op.get("parameters", []))
