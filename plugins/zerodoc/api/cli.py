"""`zerodoc consumer add|list|rotate|revoke`, `zerodoc keys rotate|list`, `zerodoc evidence verify`
and `zerodoc serve`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from zerodoc.api.consumers import (
    ROLES,
    ConsumerError,
    add_consumer,
    list_consumers,
    revoke_consumer,
    rotate_consumer,
)

consumer_app = typer.Typer(help="API keys of consuming services (only hashes are stored).", no_args_is_help=True)


@consumer_app.command("add")
def add(
    name: str = typer.Argument(..., help="Consuming service, e.g. welfare-portal."),
    role: str = typer.Option(
        "consumer", help=f"One of {', '.join(ROLES)}: evidence consumer, citizen-facing service, auditor."
    ),
) -> None:
    """Register a consumer and print its API key once; it cannot be shown again."""
    try:
        key = add_consumer(name, role=role)
    except ConsumerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"API key for {name} (shown once, store it in the consumer's secret store):", err=True)
    typer.echo(key)


@consumer_app.command("list")
def list_() -> None:
    """List consumers with creation and revocation dates (never keys)."""
    for c in list_consumers():
        state = f"revoked {c.revoked_at}" if c.revoked_at else "active"
        rotated = f"\tkey rotated {c.rotated_at}" if c.rotated_at else ""
        typer.echo(f"{c.name}\t{c.role}\tcreated {c.created_at}\t{state}{rotated}")


@consumer_app.command("rotate")
def rotate(name: str) -> None:
    """Issue a new key and print it once; the old key stops working at the next request."""
    try:
        key = rotate_consumer(name)
    except ConsumerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"new API key for {name} (shown once; the old key no longer works):", err=True)
    typer.echo(key)


@consumer_app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a consumer's key; running servers refuse it from their next request."""
    try:
        revoke_consumer(name)
    except ConsumerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"revoked {name}")


def serve(host: str, port: int, workers: int, forwarded_allow_ips: str | None = None) -> None:
    """Run the evidence API with uvicorn (`zerodoc serve`). X-Forwarded-For is honoured only from
    `forwarded_allow_ips` (a load balancer's addresses or networks); unset, nobody can pick their client address."""
    import uvicorn

    # The access log records method and path only; subject IDs travel in POST bodies, never in URLs.
    uvicorn.run(
        "zerodoc.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips,
    )


keys_app = typer.Typer(help="Evidence signing keys (Ed25519) published in the JWKS.", no_args_is_help=True)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Start signing with a new key. The old one stays in the JWKS so earlier answers still verify.

    Running servers notice the change on their next answer and sign with the new key.
    """
    from zerodoc.api.signing import rotate_signing_key
    from zerodoc.config import settings

    kid = rotate_signing_key(settings().state_dir)
    typer.echo(f"signing with new key {kid}; running API servers switch at their next answer")


@keys_app.command("list")
def keys_list() -> None:
    """List signing keys (kid, created, retired); the active one signs, all are published."""
    from zerodoc.config import settings

    index = settings().state_dir / "signing" / "keys.json"
    if not index.exists():
        typer.echo("no signing keys yet (the API creates the first one at start)")
        return
    for e in json.loads(index.read_text())["keys"]:
        state = f"retired {e['retired_at']}" if e.get("retired_at") else "active"
        typer.echo(f"{e['kid']}\tcreated {e['created_at']}\t{state}")


def _load_jwks(source: str) -> dict:
    if source.startswith(("http://", "https://")):
        import httpx

        r = httpx.get(source, timeout=10.0, follow_redirects=False)
        r.raise_for_status()
        return r.json()
    return json.loads(Path(source).read_text(encoding="utf-8"))


def evidence_verify(
    file: Annotated[Path, typer.Argument(help="A saved evidence answer (the JSON the API returned).")],
    jwks: Annotated[
        str,
        typer.Option(
            "--jwks",
            envvar="ZERODOC_JWKS",
            help="The issuer's JWKS: its URL (…/.well-known/jwks.json) or a saved file.",
        ),
    ],
) -> None:
    """Check an evidence answer's detached Ed25519 signature against the issuer's published keys.

    Exit 0 and print what was verified, or exit 1 if the signature does not match.
    """
    from zerodoc.api.signing import verify_evidence

    try:
        answer = json.loads(file.read_text(encoding="utf-8"))
        keys = _load_jwks(jwks)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except Exception as exc:  # noqa: BLE001 - network errors of any kind: report, do not trace
        typer.echo(f"error: cannot fetch JWKS: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if not isinstance(answer, dict) or not verify_evidence(answer, keys):
        typer.echo("INVALID: the signature does not match this evidence and these keys", err=True)
        raise typer.Exit(code=1)
    ev = answer["evidence"]
    typer.echo(
        f"VALID: {ev.get('evidence_type')} from {ev.get('dataset')} {ev.get('dataset_version')} "
        f"(as of {ev.get('as_of')}), status {ev.get('status', 'ok')}, for {ev.get('consumer')} / "
        f"{ev.get('purpose')}, signed by key {answer.get('kid')}"
    )
