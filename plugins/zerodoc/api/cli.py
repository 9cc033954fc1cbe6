"""`zerodoc consumer add|list|revoke` and `zerodoc serve`."""

from __future__ import annotations

import typer

from zerodoc.api.consumers import ConsumerError, add_consumer, list_consumers, revoke_consumer

consumer_app = typer.Typer(help="API keys of consuming services (only hashes are stored).", no_args_is_help=True)


@consumer_app.command("add")
def add(name: str = typer.Argument(..., help="Consuming service, e.g. welfare-portal.")) -> None:
    """Register a consumer and print its API key once; it cannot be shown again."""
    try:
        key = add_consumer(name)
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
        typer.echo(f"{c.name}\tcreated {c.created_at}\t{state}")


@consumer_app.command("revoke")
def revoke(name: str) -> None:
    """Revoke a consumer's key; running servers refuse it from their next request."""
    try:
        revoke_consumer(name)
    except ConsumerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"revoked {name}")


def serve(
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8000, help="Port."),
    workers: int = typer.Option(1, help="Worker processes; each holds its own in-memory dataset index."),
) -> None:
    """Run the evidence API with uvicorn."""
    import uvicorn

    # The access log records method and path only; subject IDs travel in POST bodies, never in URLs.
    uvicorn.run("zerodoc.api.app:create_app", factory=True, host=host, port=port, workers=workers, proxy_headers=False)
