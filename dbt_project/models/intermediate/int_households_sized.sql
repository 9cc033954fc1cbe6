-- Household size is counted from the residents registered in the household (after removing
-- duplicate rows of the same person), not taken from any agency-declared figure.

with

households as (

    select * from {{ ref('stg_mois__households') }}

),

residents as (

    select * from {{ ref('int_residents_deduplicated') }}

),

members as (

    select
        household_id,
        count(*) as household_size
    from residents
    group by household_id

),

sized as (

    select
        households.household_id,
        households.head_resident_id,
        households.sigungu_code,
        households.registered_on,
        coalesce(members.household_size, 0) as household_size

    from households
    left join members
        on households.household_id = members.household_id

)

select * from sized
