"""Asset URIs shared by producer and consumer DAGs (one definition, so they always match)."""

from __future__ import annotations

from airflow.sdk import Asset


def validated_asset(qualified: str) -> Asset:
    agency, name = qualified.split(".", 1)
    return Asset(name=f"validated.{qualified}", uri=f"file:///zerodoc/validated/{agency}/{name}")


def published_asset(dataset: str) -> Asset:
    return Asset(name=f"published.{dataset}", uri=f"file:///zerodoc/published/{dataset}")
