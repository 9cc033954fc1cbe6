-- Raw frn is read here and only here: it leaves as subject_pseudonym (the keyed pseudonym every
-- agency gets, so a foreign resident joins other agencies' records as a citizen does) plus what the
-- number itself states: sex and date of birth (7th digit 5/6: born 1900-1999, 7/8: 2000-2099; odd
-- male, even female). GX has already rejected numbers whose 7th digit is not 5-8. Names stay in the
-- validated zone (data minimisation). Incremental like stg_moel__employment_insurances: every
-- partition is a full snapshot, compared with the warehouse copy; vanished rows are deleted.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='foreign_resident_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('foreign_resident_id', source('moj', 'foreign_residents'), read_by_change_log=false) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('moj', 'foreign_residents')) }}

),

changed as (

    {{ changed_rows('source', 'foreign_resident_id') }}

),

renamed as (

    select
        cast(foreign_resident_id as bigint) as foreign_resident_id,
        zd_pseudonym(cast(frn as varchar)) as subject_pseudonym,
        case when substr(cast(frn as varchar), 8, 1) in ('5', '7') then 'M' else 'F' end as sex,
        {{ parse_yyyymmdd(
            "case when substr(cast(frn as varchar), 8, 1) in ('5', '6') then '19' else '20' end"
            ~ " || substr(cast(frn as varchar), 1, 6)"
        ) }} as born_on,
        cast(nationality as varchar) as nationality_code,
        cast(visa_type as varchar) as visa_type,
        cast(sigungu_code as varchar) as sigungu_code,
        {{ parse_yyyymmdd('entry_date') }} as entered_on,
        {{ parse_yyyymmdd('registered_date') }} as registered_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
