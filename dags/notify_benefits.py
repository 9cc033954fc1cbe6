"""Airflow DAG `notify_benefits`: proactive notifications from benefit_notifications_v1, once each."""

from zerodoc.orchestration.factory import build_notify_dag

notify_benefits = build_notify_dag()
