-- Raw rrn is read here and only here: it leaves as subject_pseudonym, the same keyed pseudonym
-- MOIS rows get, so income joins residence without any national ID in the warehouse.
-- Incremental like stg_mois__residents: only new or changed rows (updated_at differs) pay for the
-- HMAC; rows gone from today's snapshot are deleted by the post-hook (docs/dbt.md).

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='income_id',
        on_schema_change='fail',
        post_hook=[
            "{% if is_incremental() %}delete from {{ this }} where income_id not in (select cast(income_id as bigint) from {{ source('nts', 'income') }}){% endif %}"
        ]
    )
}}

with

source as (

    select * from {{ source('nts', 'income') }}

),

changed as (

    select source.*
    from source
    {% if is_incremental() %}
    left join {{ this }} as current_rows
        on cast(source.income_id as bigint) = current_rows.income_id
        and cast(source.updated_at as timestamp) = current_rows.updated_at
    where current_rows.income_id is null
    {% endif %}

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
        cast(updated_at as timestamp) as updated_at

    from changed

)

select * from renamed
