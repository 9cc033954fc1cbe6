-- Whose each MOEL enrolment was when int_enrolment_changes last read it: the map that tells the change
-- log the previous person of an enrolment staging rewrote or deleted (staging keeps only the new row).
-- Incremental by enrolment_id: a daily run replaces the enrolments staging wrote or deleted since this
-- model's last build, after the log has read the old persons.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_rewritten_enrolments() }}"],
        post_hook=["{{ trim_moel_deleted_keys() }}", "{{ record_build() }}"]
    )
}}

-- depends_on: {{ ref('int_enrolment_changes') }}

with

enrolments as (

    select * from {{ ref('stg_moel__employment_insurances') }}

),

final as (

    select enrolment_id, subject_pseudonym
    from enrolments
    {% if is_incremental() %}
    where loaded_at > {{ last_built_at(this.name) }}
    {% endif %}

)

select * from final
