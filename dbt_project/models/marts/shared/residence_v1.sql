-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- A table rebuilt in full: measured at 1M persons, writing only changed rows (`changed_rows`) cost
-- more than the rebuild (comparing narrow rows of long strings outweighs writing them).

with

residents as (

    select * from {{ ref('int_residents_deduplicated') }}

),

households as (

    select * from {{ ref('int_households_sized') }}

),

regions as (

    select * from {{ ref('regions') }}

),

residence as (

    select
        residents.subject_pseudonym,
        left(residents.sigungu_code, 2) as sido_code,
        regions.sido_name,
        residents.sigungu_code,
        regions.sigungu_name,
        residents.household_id,
        households.household_size,
        coalesce(households.head_resident_id = residents.resident_id, false) as is_household_head,
        residents.moved_in_on

    from residents
    left join households
        on residents.household_id = households.household_id
    left join regions
        on residents.sigungu_code = regions.sigungu_code

),

final as (

    select
        subject_pseudonym,
        sido_code,
        sido_name,
        sigungu_code,
        sigungu_name,
        household_id,
        household_size,
        is_household_head,
        moved_in_on

    from residence

)

select * from final
