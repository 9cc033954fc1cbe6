-- Raw rrn is read here and only here: it leaves as subject_pseudonym. Workplace names stay in the
-- validated zone. Incremental like stg_mois__residents: about one enrolment per four persons, so
-- the HMAC matters; only new or changed rows pay for it, vanished rows are deleted (docs/dbt.md).

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='enrolment_id',
        on_schema_change='fail',
        post_hook=[
            "{% if is_incremental() %}delete from {{ this }} where enrolment_id not in (select cast(enrolment_id as bigint) from {{ source('moel', 'employment_insurance') }}){% endif %}"
        ]
    )
}}

with

source as (

    select * from {{ source('moel', 'employment_insurance') }}

),

changed as (

    select source.*
    from source
    {% if is_incremental() %}
    left join {{ this }} as current_rows
        on cast(source.enrolment_id as bigint) = current_rows.enrolment_id
        and cast(source.updated_at as timestamp) = current_rows.updated_at
    where current_rows.enrolment_id is null
    {% endif %}

),

renamed as (

    select
        cast(enrolment_id as bigint) as enrolment_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(employer_brn as varchar) as employer_brn,
        {{ parse_yyyymmdd('acquired_date') }} as acquired_on,
        {{ parse_yyyymmdd('lost_date') }} as lost_on,
        cast(monthly_wage as bigint) as monthly_wage_krw,
        cast(updated_at as timestamp) as updated_at

    from changed

)

select * from renamed
