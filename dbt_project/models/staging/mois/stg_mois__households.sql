with

source as (

    select * from {{ source('mois', 'households') }}

),

renamed as (

    select
        cast(household_id as bigint) as household_id,
        cast(head_resident_id as bigint) as head_resident_id,
        cast(sigungu_code as varchar) as sigungu_code,
        {{ parse_yyyymmdd('registered_date') }} as registered_on,
        cast(updated_at as timestamp) as updated_at

    from source

)

select * from renamed
