-- Incremental like stg_mois__residents (macros/incremental_staging.sql): the partition is a full
-- snapshot or an incremental window; new or changed rows are stamped loaded_at, so
-- int_person_changes finds changed households without comparing the whole table.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='household_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('household_id', source('mois', 'households')) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('mois', 'households')) }}

),

changed as (

    {{ changed_rows('source', 'household_id') }}

),

renamed as (

    select
        cast(household_id as bigint) as household_id,
        cast(head_resident_id as bigint) as head_resident_id,
        cast(sigungu_code as varchar) as sigungu_code,
        {{ parse_yyyymmdd('registered_date') }} as registered_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
