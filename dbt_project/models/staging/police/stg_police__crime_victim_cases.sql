-- Raw victim_rrn is read here and only here: it leaves as subject_pseudonym (the same keyed
-- pseudonym every agency gets) plus one derived flag, whether it was a foreign registration number.
-- A table, not incremental: about one case per hundred persons, so the HMAC is cheap here.

with

source as (

    select * from {{ source('police', 'crime_victim_cases') }}

),

renamed as (

    select
        cast(case_id as bigint) as case_id,
        zd_pseudonym(cast(victim_rrn as varchar)) as subject_pseudonym,
        substr(replace(cast(victim_rrn as varchar), '-', ''), 7, 1) in ('5', '6', '7', '8') as is_foreign_registration,
        cast(crime_type as varchar) as crime_type,
        {{ parse_yyyymmdd('incident_date') }} as incident_on,
        {{ parse_yyyymmdd('reported_date') }} as reported_on,
        cast(updated_at as timestamp) as updated_at

    from source

)

select * from renamed
