-- Raw rrn is read here and only here: it leaves as subject_pseudonym. Workplace names stay in the
-- validated zone. Incremental like stg_mois__residents (macros/incremental_staging.sql): about
-- one enrolment per four persons, so the HMAC matters. A CSV drop is always a full snapshot: every
-- row is read and compared with the warehouse copy; vanished rows are deleted.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='enrolment_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('enrolment_id', source('moel', 'employment_insurance')) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('moel', 'employment_insurance')) }}

),

changed as (

    {{ changed_rows('source', 'enrolment_id') }}

),

renamed as (

    select
        cast(enrolment_id as bigint) as enrolment_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(employer_brn as varchar) as employer_brn,
        {{ parse_yyyymmdd('acquired_date') }} as acquired_on,
        {{ parse_yyyymmdd('lost_date') }} as lost_on,
        cast(monthly_wage as bigint) as monthly_wage_krw,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
