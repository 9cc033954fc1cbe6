{#- The rows an affected-key model wrote in this invocation, kept where its data tests can read them
    (docs/dbt.md "Data tests on a daily run"). The incremental materialization computes them into a
    connection-local temp table and appends that; this after-commit post-hook copies the temp table into
    `zerodoc_written`, an in-memory database attached to the run's DuckDB instance (every dbt cursor
    sees it; nothing reaches the warehouse file or its WAL; it ends with the process). A data test then
    reads the ~7 % of rows written instead of the whole 10M-row model: filtering the model by its affected
    keys was a semi join on 64-character pseudonyms, slower than the whole-table test it replaced.

    Why the written rows are enough for `unique`: the pre-hook deleted every row of an affected key
    and the model appended rows of affected keys only (checked here: a written key outside the affected
    set fails the model), so a written key cannot meet a row the run kept; those were unique when the
    run that wrote them tested them. benefit_notifications_v1 (delete+insert on notification_id)
    deletes every kept row whose key it writes, which gives the same. Nothing is kept (tests read the
    whole model) on a full build, a first build, and a daily run that rewrote everyone (is_full). -#}

{% macro written_rows_database() -%}zerodoc_written{%- endmacro %}

{% macro written_rows_relation(model_name) -%}
    {{ written_rows_database() }}.main.{{ adapter.quote(model_name) }}
{%- endmacro %}

{% macro keep_written_rows() %}
    {%- set key, affected_model = affected_key_models()[this.identifier] -%}
    {%- set keep = execute and is_incremental() and not flags.FULL_REFRESH -%}
    {%- if keep -%}
        {%- set is_full = run_query('select is_full from ' ~ ref('int_build_window'))
                .columns[0].values()[0] -%}
        {%- set keep = not is_full -%}
    {%- endif -%}
    {%- set temp = none -%}
    {%- if keep -%}
        {#- dbt-duckdb names the temp table <model>__dbt_tmp<timestring>; only this connection sees it. -#}
        {%- set found = run_query(
            "select table_name from duckdb_tables() where temporary and starts_with(table_name, '"
            ~ this.identifier ~ "__dbt_tmp') order by table_name desc limit 1") -%}
        {%- set temp = found.columns[0].values()[0] if found.rows | length else none -%}
    {%- endif -%}
    attach if not exists ':memory:' as {{ written_rows_database() }};
    drop table if exists {{ written_rows_relation(this.identifier) }};
    {% if temp %}
    create table {{ written_rows_relation(this.identifier) }} as
    select * from temp.main.{{ adapter.quote(temp) }};
    {% if this.identifier != 'benefit_notifications_v1' %}
    select error('{{ this.identifier }} wrote a {{ key }} outside {{ affected_model }}: ' || {{ key }})
    from {{ written_rows_relation(this.identifier) }}
    where {{ key }} not in (select {{ key }} from {{ ref(affected_model) }});
    {% endif %}
    {% elif keep %}
    {{ exceptions.raise_compiler_error("keep_written_rows: no temp table of " ~ this.identifier ~ " on this connection") }}
    {% endif %}
{% endmacro %}

{#- The rows of `model_name` this invocation wrote, kept by keep_written_rows, or none: tests read the
    whole model then. The build record ties the kept copy to this invocation (a process may run dbt twice). -#}
{% macro kept_written_rows(model_name) -%}
    {%- if not execute or flags.FULL_REFRESH or model_name not in affected_key_models() -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set log = build_log_relation() -%}
    {%- if not adapter.get_relation(log.database, log.schema, log.identifier) -%}
        {{- return(none) -}}
    {%- endif -%}
    {%- set found = run_query(
        "select count(*) from duckdb_tables() where database_name = '" ~ written_rows_database()
        ~ "' and schema_name = 'main' and table_name = '" ~ model_name ~ "' and exists (select 1 from "
        ~ log ~ " where model_name = '" ~ model_name ~ "' and built_at = " ~ run_started_at_ts() ~ ")") -%}
    {{- return(written_rows_relation(model_name) if found.columns[0].values()[0] > 0 else none) -}}
{%- endmacro %}
