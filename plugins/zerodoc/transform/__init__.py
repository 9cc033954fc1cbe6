"""dbt stage: validated zone → warehouse marts, run in-process, with pseudonyms computed inside DuckDB."""
