-- Raw rrn is read here and only here: it leaves as subject_pseudonym (zd_pseudonym is the TEMP
-- macro created per connection by zerodoc.transform.dbt_plugin). Name and address are not needed
-- by any shared dataset, so they stay in the validated zone (data minimisation).

with

source as (

    select * from {{ source('mois', 'residents') }}

),

renamed as (

    select
        cast(resident_id as bigint) as resident_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(sex as varchar) as sex,
        {{ parse_yyyymmdd('birth_date') }} as born_on,
        cast(household_id as bigint) as household_id,
        cast(sigungu_code as varchar) as sigungu_code,
        {{ parse_yyyymmdd('moved_in_date') }} as moved_in_on,
        cast(updated_at as timestamp) as updated_at

    from source

)

select * from renamed
