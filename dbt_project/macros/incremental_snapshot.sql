{#- Staging of a full daily snapshot, incrementally: only rows that are new or changed since the
    last build (another updated_at) pay for the keyed HMAC, and rows gone from today's snapshot
    are deleted afterwards. A full build (or --full-refresh) takes every row. docs/dbt.md -#}

{% macro changed_rows(source_cte, key) %}
    select {{ source_cte }}.*
    from {{ source_cte }}
    {% if is_incremental() %}
    left join {{ this }} as current_rows
        on cast({{ source_cte }}.{{ key }} as bigint) = current_rows.{{ key }}
        and cast({{ source_cte }}.updated_at as timestamp) = current_rows.updated_at
    where current_rows.{{ key }} is null
    {% endif %}
{% endmacro %}

{% macro delete_vanished_rows(key, source_relation) %}
    {% if is_incremental() %}
    delete from {{ this }} where {{ key }} not in (select cast({{ key }} as bigint) from {{ source_relation }})
    {% endif %}
{% endmacro %}
