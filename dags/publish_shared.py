"""Airflow DAG `publish_shared`: dbt build and versioned publishing of the shared datasets."""

from zerodoc.orchestration.factory import build_publish_dag

publish_shared = build_publish_dag()
