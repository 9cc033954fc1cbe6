"""Airflow ingest DAGs, one per agency declared in config/sources.yml (`ingest_<agency>`)."""

from zerodoc.catalog import agencies
from zerodoc.orchestration.factory import build_ingest_dag

for _code, _agency in agencies().items():
    globals()[f"ingest_{_code}"] = build_ingest_dag(_agency)
