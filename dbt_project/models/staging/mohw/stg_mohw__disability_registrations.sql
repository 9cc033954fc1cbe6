-- Raw rrn is read here and only here: it leaves as subject_pseudonym. Incremental like
-- stg_moel__employment_insurances (the REST registry is delivered whole each time).

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='registration_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('registration_id', source('mohw', 'disability_registry'), read_by_change_log=false) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('mohw', 'disability_registry')) }}

),

changed as (

    {{ changed_rows('source', 'registration_id') }}

),

renamed as (

    select
        cast(registration_id as bigint) as registration_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(disability_type as varchar) as disability_type,
        cast(severity as varchar) = '심한 장애' as is_severe,
        {{ parse_yyyymmdd('registered_date') }} as registered_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
