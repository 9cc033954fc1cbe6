-- Household size is counted from the residents registered in the household (after removing
-- duplicate rows of the same person), not taken from any agency-declared figure.
-- Incremental by household (macros/affected_keys.sql): a daily run recounts only the households in
-- int_affected_households; updated_at of the registry row is kept (the household row it was counted for).

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_affected_keys('household_id', 'int_affected_households') }}"],
        post_hook=["{{ record_affected_key_build() }}", after_commit("{{ keep_written_rows() }}")]
    )
}}

-- depends_on: {{ ref('int_build_window') }}

with

households as (

    select * from {{ ref('stg_mois__households') }}

),

residents as (

    select * from {{ ref('int_residents_deduplicated') }}

),

affected_households as (

    select * from {{ ref('int_affected_households') }}

),

candidates as (

    select households.*
    from households
    {% if reads_affected_keys() %}
    semi join affected_households
        on households.household_id = affected_households.household_id
    {% endif %}

),

members as (

    select
        residents.household_id,
        count(*) as household_size
    from residents
    {% if reads_affected_keys() %}
    semi join affected_households
        on residents.household_id = affected_households.household_id
    {% endif %}
    group by residents.household_id

),

sized as (

    select
        candidates.household_id,
        candidates.head_resident_id,
        candidates.sigungu_code,
        candidates.registered_on,
        coalesce(members.household_size, 0) as household_size,
        candidates.updated_at

    from candidates
    left join members
        on candidates.household_id = members.household_id

)

select * from sized
