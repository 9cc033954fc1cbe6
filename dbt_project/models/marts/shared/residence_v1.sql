-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- Incremental `changed_rows` (macros/incremental_changed_rows.sql): computed in full as of the run,
-- only rows that differ from the stored ones are written. docs/dbt.md "Incremental strategy".

{{
    config(
        materialized='incremental',
        incremental_strategy='changed_rows',
        unique_key='subject_pseudonym',
        on_schema_change='fail'
    )
}}

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
