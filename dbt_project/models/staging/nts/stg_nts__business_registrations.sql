-- Raw owner_rrn is read here and only here: it leaves as subject_pseudonym. The business
-- registration number is a business ID and stays; the trade name (often the owner's name) stays in
-- the validated zone. Incremental like stg_moel__employment_insurances (a full snapshot each time).

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='business_registration_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('business_registration_id', source('nts', 'business_registrations'), read_by_change_log=false) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('nts', 'business_registrations')) }}

),

changed as (

    {{ changed_rows('source', 'business_registration_id') }}

),

renamed as (

    select
        cast(business_registration_id as bigint) as business_registration_id,
        cast(brn as varchar) as business_registration_number,
        zd_pseudonym(cast(owner_rrn as varchar)) as subject_pseudonym,
        cast(business_type as varchar) as business_type,
        {{ parse_yyyymmdd('opened_date') }} as opened_on,
        {{ parse_yyyymmdd('closed_date') }} as closed_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
