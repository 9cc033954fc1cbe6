-- The person spine: one row per subject_pseudonym across agencies. Citizens come from the MOIS
-- registry today; foreign residents (MOJ registration cards) join later as another import CTE
-- unioned in `spine`, keyed by the same keyed pseudonym of their registration number, so every
-- downstream model keeps joining on subject_pseudonym alone.
-- A view: today it is a projection of int_residents_deduplicated (itself incremental), so storing a
-- second copy of every person each day would only cost a full write. Make it a table again (or
-- incremental) when the foreign-resident union makes it more than a projection.

{{ config(materialized='view') }}

with

citizens as (

    select * from {{ ref('int_residents_deduplicated') }}

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

),

final as (

    select * from spine

)

select * from final
