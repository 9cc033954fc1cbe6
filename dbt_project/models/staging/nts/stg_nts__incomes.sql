-- Raw rrn is read here and only here: it leaves as subject_pseudonym, the same keyed pseudonym
-- MOIS rows get, so income joins residence without any national ID in the warehouse.
-- Incremental like stg_mois__residents (macros/incremental_staging.sql): a full snapshot or an
-- incremental window; only new or changed rows pay for the HMAC. NTS deletes returns physically,
-- so a withdrawn return disappears only when a full snapshot no longer has it.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='income_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('income_id', source('nts', 'income')) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('nts', 'income')) }}

),

changed as (

    {{ changed_rows('source', 'income_id') }}

),

renamed as (

    select
        cast(income_id as bigint) as income_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(tax_year as integer) as tax_year,
        cast(earned_income as bigint) as earned_income_krw,
        cast(business_income as bigint) as business_income_krw,
        cast(other_income as bigint) as other_income_krw,
        {{ parse_yyyymmdd('filed_date') }} as filed_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
