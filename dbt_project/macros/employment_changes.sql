{#- employment_v1 on affected persons (docs/dbt.md "Incremental strategy"). A person's employment row
    depends on their enrolment rows and on as_of: it changes when an enrolment of theirs was written or
    deleted (int_enrolment_changes: the new and the previous person), or when as_of passed one of their
    acquired_on / lost_on dates since the last build (`acquired_on <= as_of`, `lost_on > as_of` and
    `lost_on <= as_of` all flip exactly when as_of crosses the date, in either direction). -#}

{#- Whether this run recomputes only the affected persons: an incremental run after a recorded build
    of employment_v1, with no pending "everyone" row in the log. -#}
{% macro employment_reads_affected() -%}
    {%- if not execute or not is_incremental() or flags.FULL_REFRESH -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set changes = ref('int_enrolment_changes') | string -%}
    {%- if '__dbt__cte__' in changes -%}
        {{ return(true) }}
    {%- endif -%}
    {%- set log = build_log_relation() -%}
    {%- if not adapter.get_relation(log.database, log.schema, log.identifier) -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set found = run_query(
        "select (select count(*) from " ~ log ~ " where model_name = 'employment_v1'),"
        ~ " (select count(*) from " ~ changes ~ " where subject_pseudonym is null and changed_at > "
        ~ last_built_at('employment_v1') ~ ")") -%}
    {{ return(found.rows[0][0] > 0 and found.rows[0][1] == 0) }}
{%- endmacro %}

{#- The persons employment_v1 recomputes on a daily run. -#}
{% macro employment_affected_subjects() -%}
    {%- set log = build_log_relation() -%}
    {%- set previous -%}
        (select as_of from {{ log }} where model_name = 'employment_v1')
    {%- endset -%}
    {%- set low = 'least(' ~ previous ~ ', ' ~ as_of_date() ~ ')' -%}
    {%- set high = 'greatest(' ~ previous ~ ', ' ~ as_of_date() ~ ')' -%}
    select subject_pseudonym
    from {{ ref('int_enrolment_changes') }}
    where changed_at > {{ last_built_at('employment_v1') }} and subject_pseudonym is not null
    union
    select subject_pseudonym
    from {{ ref('stg_moel__employment_insurances') }}
    where (acquired_on > {{ low }} and acquired_on <= {{ high }})
        or (lost_on > {{ low }} and lost_on <= {{ high }})
{%- endmacro %}

{#- Pre-hook of employment_v1: delete the affected persons, or every row when it recomputes everyone. -#}
{% macro delete_employment_affected() %}
    {% if is_incremental() %}
    delete from {{ this }}
    {% if employment_reads_affected() %}
    where subject_pseudonym in ({{ employment_affected_subjects() }})
    {% endif %}
    {% endif %}
{% endmacro %}

{#- Pre-hook of int_enrolment_subjects: drop the enrolments staging wrote or deleted since its last build. -#}
{% macro delete_rewritten_enrolments() %}
    {% if is_incremental() %}
    {%- set since = last_built_at(this.name) %}
    delete from {{ this }}
    where enrolment_id in (
        {{ written_or_deleted_keys(ref('stg_moel__employment_insurances'), 'enrolment_id', since) }}
    )
    {% endif %}
{% endmacro %}

{#- Post-hook of int_enrolment_subjects: the deleted MOEL keys up to now are applied to the map and were
    logged before it (int_enrolment_changes runs first). -#}
{% macro trim_moel_deleted_keys() %}
    delete from {{ deleted_keys_relation(ref('stg_moel__employment_insurances')) }}
    where deleted_at <= {{ run_started_at_ts() }}
{% endmacro %}

{#- Post-hook of int_enrolment_changes: drop what employment_v1 has been built after. -#}
{% macro trim_enrolment_changes() %}
    {% if is_incremental() and adapter.get_relation(this.database, build_log_relation().schema, build_log_relation().identifier) %}
    delete from {{ this }}
    where changed_at <= (
        select max(built_at) from {{ build_log_relation() }} where model_name = 'employment_v1'
    )
    {% endif %}
{% endmacro %}
