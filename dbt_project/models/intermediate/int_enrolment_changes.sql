-- The change log that lets employment_v1 recompute only the persons whose enrolments changed
-- (macros/employment_changes.sql): each run appends the persons of MOEL enrolment rows staging wrote
-- (loaded_at) or deleted (<model>__deleted_keys) since this model last ran, both the person of the new
-- row and the person int_enrolment_subjects kept for the same enrolment_id (an enrolment moved to
-- another person changes both). It must run before int_enrolment_subjects takes the new rows.
-- Rows stay until employment_v1 has been built after them (post-hook), so a run that fails half-way
-- leaves them for the next. Without a kept map (first build, --full-refresh) it logs one row with a
-- null person: employment_v1 then rebuilds everyone.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        post_hook=["{{ trim_enrolment_changes() }}", "{{ record_build() }}"]
    )
}}

{%- set kept = adapter.get_relation(this.database, 'intermediate', 'int_enrolment_subjects') if execute else none %}
{%- set since = last_built_at(this.name) %}

with

enrolments as (

    select * from {{ ref('stg_moel__employment_insurances') }}

),

{% if kept and not flags.FULL_REFRESH %}
written as (

    select enrolment_id, subject_pseudonym from enrolments where loaded_at > {{ since }}

),

enrolment_keys as (

    {{ written_or_deleted_keys(ref('stg_moel__employment_insurances'), 'enrolment_id', since) }}

),

changes as (

    select subject_pseudonym from written
    union all
    select kept.subject_pseudonym
    from {{ kept }} as kept
    semi join enrolment_keys
        on kept.enrolment_id = enrolment_keys.enrolment_id

),
{% else %}
changes as (

    -- Everyone: no map of the previous enrolments to compare with.
    select cast(null as varchar) as subject_pseudonym

),
{% endif %}

final as (

    select distinct
        subject_pseudonym,
        {{ run_started_at_ts() }} as changed_at

    from changes

)

select * from final
