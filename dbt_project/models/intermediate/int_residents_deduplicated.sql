-- The validated zone checks rows, not people: one person (same pseudonym) can still hold two
-- registry rows, e.g. a move recorded as a new row. Keep the most recently updated row, then the
-- latest move-in, then the highest resident_id, so reruns pick the same row every time.
-- Incremental by person: a daily run re-deduplicates only the persons whose registry rows changed
-- (logged in int_person_changes since its last build); a full build does everyone. docs/dbt.md explains the strategy.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_changed_subjects('mois_residents') }}"],
        post_hook=["{{ record_build() }}"]
    )
}}

-- depends_on: {{ ref('int_person_changes') }}

with

residents as (

    select * from {{ ref('stg_mois__residents') }}

),

{% if is_incremental() %}
changed_subjects as (

    {{ changed_subjects('mois_residents') }}

),
{% endif %}

candidates as (

    select residents.*
    from residents
    {% if is_incremental() %}
    semi join changed_subjects
        on residents.subject_pseudonym = changed_subjects.subject_pseudonym
    {% endif %}

),

deduplicated as (

    select * exclude (loaded_at)
    from candidates
    qualify row_number() over (
        partition by subject_pseudonym
        order by updated_at desc nulls last, moved_in_on desc nulls last, resident_id desc
    ) = 1

)

select * from deduplicated
