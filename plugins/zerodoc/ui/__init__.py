"""Auditor pages served inside the Airflow API server (see ``zerodoc_airflow_plugin``)."""
