{#- Staging of one agency partition, incrementally (docs/dbt.md "Incremental strategy"). A partition is
    a full snapshot (`_op` = 'snapshot', or no `_op` column: CSV drops and partitions written before
    it existed) or an incremental window of changed rows (`_op` = 'upsert'); either may hold
    tombstones (`_op` = 'delete'). Only live rows that are new or changed since the warehouse copy
    (another updated_at) are re-typed and pseudonymised, and they carry `loaded_at` = this invocation.
    After the insert, tombstoned keys and keys absent from a full snapshot are deleted and logged in
    `<model>__deleted_keys` with the same stamp. So a run's writes are readable without comparing
    tables: int_person_changes reads the stamped rows and the logged keys. -#}

{#- The partition with `_op` (NULL when the partition predates it). -#}
{% macro partition_rows(source_relation) %}
    select * from {{ source_relation }}
    union all by name
    select cast(null as varchar) as _op where false
{% endmacro %}

{#- Live rows that are new or changed since the warehouse copy (every row on a full build). -#}
{% macro changed_rows(partition_cte, key) %}
    select {{ partition_cte }}.* exclude (_op)
    from {{ partition_cte }}
    {% if is_incremental() %}
    left join (select {{ key }}, updated_at from {{ this }}) as current_rows
        on cast({{ partition_cte }}.{{ key }} as bigint) = current_rows.{{ key }}
        and cast({{ partition_cte }}.updated_at as timestamp) = current_rows.updated_at
    where current_rows.{{ key }} is null and {{ partition_cte }}._op is distinct from 'delete'
    {% else %}
    where {{ partition_cte }}._op is distinct from 'delete'
    {% endif %}
{% endmacro %}

{#- Where a staging model logs the keys it deleted: a table beside it, outside dbt's graph (run state). -#}
{% macro deleted_keys_relation(model) -%}
    {{ return(api.Relation.create(database=model.database, schema=model.schema, identifier=model.identifier ~ '__deleted_keys')) }}
{%- endmacro %}

{#- The keys staging model `model` wrote (loaded_at) or deleted (its log) after `since`, a SQL
    timestamp: what the change logs read instead of comparing tables. -#}
{% macro written_or_deleted_keys(model, key, since) -%}
    select {{ key }} from {{ model }} where loaded_at > {{ since }}
    union
    select {{ key }} from {{ deleted_keys_relation(model) }} where deleted_at > {{ since }}
{%- endmacro %}

{#- Post-hook: delete tombstoned keys, and keys a full snapshot no longer has (a window holds only what
    changed, so absence there means nothing; a snapshot without live rows deletes only its
    tombstones: an empty export is a broken export), logging each deleted key with this run's stamp.
    The log is created on every build so readers can rely on it. A change log that reads it trims it
    (trim_person_changes, trim_moel_deleted_keys); a log nobody reads (read_by_change_log=false) keeps
    only the latest run's keys, what that run removed, instead of growing with every snapshot. -#}
{% macro delete_removed_rows(key, source_relation, read_by_change_log=true) %}
    {%- set log = deleted_keys_relation(this) -%}
    create table if not exists {{ log }} ({{ key }} bigint, deleted_at timestamp);
    {% if is_incremental() %}
    {%- set partition -%}({{ partition_rows(source_relation) }}){%- endset %}
    {%- set is_snapshot = execute and run_query(
        "select count(*) from (select 1 from " ~ partition ~ " where _op = 'snapshot' or _op is null limit 1)"
    ).columns[0].values()[0] > 0 %}
    insert into {{ log }}
    select {{ key }}, {{ run_started_at_ts() }}
    from {{ this }}
    where {{ key }} in (select cast({{ key }} as bigint) from {{ partition }} where _op = 'delete')
    {%- if is_snapshot %}
        or {{ key }} not in (select cast({{ key }} as bigint) from {{ partition }})
    {%- endif %};
    delete from {{ this }}
    where {{ key }} in (select {{ key }} from {{ log }} where deleted_at = {{ run_started_at_ts() }});
    {% endif %}
    {% if not read_by_change_log %}
    delete from {{ log }} where deleted_at < {{ run_started_at_ts() }}
    {% endif %}
{% endmacro %}
