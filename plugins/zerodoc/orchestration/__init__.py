"""Airflow wiring: DAG factories and the plain task bodies they call."""
