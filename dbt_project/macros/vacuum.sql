{#- on-run-end: whether the checkpoint that closes this run may vacuum (docs/dbt.md "Vacuum").
    A daily run deletes ~7.5 % of the rows of each affected-key model and appends their new rows;
    with DuckDB's default (up to 100 vacuum tasks per checkpoint) every closing checkpoint then
    rewrote those tables' row groups to merge them: 2.0 s of checkpoint against 0.4 s without, at 1M
    persons. The dbt plugin sets max_vacuum_tasks = 0 on every connection; this hook allows the
    default again once deleted rows are at least `dead_fraction` of an incremental table (the
    PostgreSQL autovacuum default, 20 %), so a table is rewritten about every fourth daily run and
    scans read at most ~1.25 rows per live row in between. -#}
{% macro vacuum_when_due(dead_fraction=0.2, min_rows=100000) %}
    {%- if execute -%}
        {%- set incremental = [] -%}
        {%- for node in graph.nodes.values()
            if node.resource_type == 'model' and node.config.materialized == 'incremental' -%}
            {%- do incremental.append(node.alias) -%}
        {%- endfor -%}
        {%- set tables = run_query(
            "select schema_name, table_name, estimated_size from duckdb_tables() where database_name = '"
            ~ target.database ~ "' and not temporary and estimated_size >= " ~ min_rows
            ~ " and table_name in ('" ~ incremental | join("', '") ~ "')") -%}
        {%- set due = [] -%}
        {%- for row in tables.rows -%}
            {%- set live = run_query('select count(*) from "' ~ row[0] ~ '"."' ~ row[1] ~ '"').columns[0].values()[0] -%}
            {%- if live < (1 - dead_fraction) * row[2] -%}
                {%- do due.append(row[0] ~ '.' ~ row[1]) -%}
            {%- endif -%}
        {%- endfor -%}
        {%- if due -%}
            {{ log('vacuum due (deleted rows >= ' ~ dead_fraction ~ ' of ' ~ due | join(', ') ~ '): the closing checkpoint rewrites them', info=true) }}
        {%- endif -%}
        {#- Run here rather than returned, so `dbt run-operation vacuum_when_due` applies it too. -#}
        {%- do run_query('reset global max_vacuum_tasks' if due else 'set global max_vacuum_tasks = 0') -%}
    {%- endif -%}
{% endmacro %}
