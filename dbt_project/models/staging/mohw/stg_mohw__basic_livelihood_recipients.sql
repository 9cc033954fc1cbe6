-- Raw rrn is read here and only here: it leaves as subject_pseudonym. Incremental like
-- stg_moel__employment_insurances (the REST registry is delivered whole each time).

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='recipient_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('recipient_id', source('mohw', 'basic_livelihood_recipients'), read_by_change_log=false) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('mohw', 'basic_livelihood_recipients')) }}

),

changed as (

    {{ changed_rows('source', 'recipient_id') }}

),

renamed as (

    select
        cast(recipient_id as bigint) as recipient_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(household_size as integer) as household_size,
        cast(benefit_types as varchar) as benefit_types,
        cast(monthly_benefit as bigint) as monthly_benefit_krw,
        {{ parse_yyyymmdd('selected_date') }} as selected_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
