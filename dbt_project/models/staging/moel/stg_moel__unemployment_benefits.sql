-- Raw rrn is read here and only here: it leaves as subject_pseudonym. Incremental like
-- stg_moel__employment_insurances: a CSV drop is always a full snapshot.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='benefit_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('benefit_id', source('moel', 'unemployment_benefits'), read_by_change_log=false) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('moel', 'unemployment_benefits')) }}

),

changed as (

    {{ changed_rows('source', 'benefit_id') }}

),

renamed as (

    select
        cast(benefit_id as bigint) as benefit_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        {{ parse_yyyymmdd('claim_date') }} as claimed_on,
        {{ parse_yyyymmdd('benefit_start_date') }} as benefit_started_on,
        cast(benefit_days as integer) as benefit_days,
        cast(daily_amount as bigint) as daily_amount_krw,
        cast(total_paid as bigint) as total_paid_krw,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
