-- Raw rrn is read here and only here: it leaves as subject_pseudonym. Incremental like
-- stg_moel__employment_insurances (the REST registry is delivered whole each time).

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='account_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('account_id', source('fsc', 'youth_leap_accounts')) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('fsc', 'youth_leap_accounts')) }}

),

changed as (

    {{ changed_rows('source', 'account_id') }}

),

renamed as (

    select
        cast(account_id as bigint) as account_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(bank_code as varchar) as bank_code,
        {{ parse_yyyymmdd('opened_date') }} as opened_on,
        cast(monthly_contribution as bigint) as monthly_contribution_krw,
        cast(government_match as bigint) as government_match_krw,
        cast(status as varchar) = 'active' as is_active,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
