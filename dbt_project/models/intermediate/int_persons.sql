-- The person spine: one row per subject_pseudonym across agencies. Citizens come from the MOIS
-- registry (int_residents_deduplicated); foreign residents from MOJ registration cards, keyed by the
-- same keyed pseudonym of their registration number, so every downstream model keeps joining on
-- subject_pseudonym alone. The two never share a pseudonym: a citizen's number has 1-4 in its 7th
-- digit, a foreigner's 5-8. A foreign resident has no MOIS household (household_id is null).
-- A view: a projection of int_residents_deduplicated (itself incremental) plus ~1 foreign resident
-- per 20 persons, deduplicated here; storing a second copy of every person each day would only cost
-- a full write.

{{ config(materialized='view') }}

with

citizens as (

    select * from {{ ref('int_residents_deduplicated') }}

),

foreign_residents as (

    select * from {{ ref('stg_moj__foreign_residents') }}

),

-- One card per person, as for citizens: the most recently updated, then the latest registered.
foreign_residents_deduplicated as (

    select *
    from foreign_residents
    qualify row_number() over (
        partition by subject_pseudonym
        order by updated_at desc nulls last, registered_on desc nulls last, foreign_resident_id desc
    ) = 1

),

spine as (

    select
        subject_pseudonym,
        'citizen' as person_kind,
        sex,
        born_on,
        household_id,
        sigungu_code

    from citizens

    union all

    select
        subject_pseudonym,
        'foreign_resident' as person_kind,
        sex,
        born_on,
        cast(null as bigint) as household_id,
        sigungu_code

    from foreign_residents_deduplicated

),

final as (

    select * from spine

)

select * from final
