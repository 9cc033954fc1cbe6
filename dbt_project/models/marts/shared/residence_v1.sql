-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- Incremental by person (macros/affected_keys.sql): a daily run recomputes the persons in
-- int_affected_subjects (registry row changed, or their household's size or head changed).

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_affected_keys('subject_pseudonym', 'int_affected_subjects') }}"],
        post_hook=["{{ record_affected_key_build() }}", after_commit("{{ keep_written_rows() }}")]
    )
}}

-- depends_on: {{ ref('int_build_window') }}

with

residents as (

    select * from {{ ref('int_residents_deduplicated') }}

),

households as (

    select * from {{ ref('int_households_sized') }}

),

regions as (

    select * from {{ ref('regions') }}

),

affected_subjects as (

    select * from {{ ref('int_affected_subjects') }}

),

residence as (

    select
        residents.subject_pseudonym,
        left(residents.sigungu_code, 2) as sido_code,
        regions.sido_name,
        residents.sigungu_code,
        regions.sigungu_name,
        residents.household_id,
        households.household_size,
        coalesce(households.head_resident_id = residents.resident_id, false) as is_household_head,
        residents.moved_in_on

    from residents
    {% if reads_affected_keys() %}
    semi join affected_subjects
        on residents.subject_pseudonym = affected_subjects.subject_pseudonym
    {% endif %}
    left join households
        on residents.household_id = households.household_id
    left join regions
        on residents.sigungu_code = regions.sigungu_code

),

final as (

    select
        subject_pseudonym,
        sido_code,
        sido_name,
        sigungu_code,
        sigungu_name,
        household_id,
        household_size,
        is_household_head,
        moved_in_on

    from residence

)

select * from final
