-- The validated zone checks rows, not people: one person (same pseudonym) can still hold two
-- registry rows, e.g. a move recorded as a new row. Keep the most recently updated row, then the
-- latest move-in, then the highest resident_id, so reruns pick the same row every time.

with

residents as (

    select * from {{ ref('stg_mois__residents') }}

),

deduplicated as (

    select *
    from residents
    qualify row_number() over (
        partition by subject_pseudonym
        order by updated_at desc nulls last, moved_in_on desc nulls last, resident_id desc
    ) = 1

)

select * from deduplicated
