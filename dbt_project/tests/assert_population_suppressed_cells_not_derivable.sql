-- Fails with one row per sigungu that publishes a count under 5, or whose suppressed cells could
-- be solved for from its published total: exactly one suppressed cell, or suppressed cells whose
-- sum (total − published cells) is under 5.

with

population as (

    select * from {{ ref('living_population_by_region_v1') }}

),

by_sigungu as (

    select
        sigungu_code,
        max(population) filter (where is_total) as published_total,
        bool_or(is_suppressed) filter (where is_total) as is_total_suppressed,
        count(*) filter (where not is_total and is_suppressed) as suppressed_cells,
        coalesce(sum(population) filter (where not is_total), 0) as published_cells_sum,
        min(population) as smallest_published

    from population
    group by sigungu_code

),

violations as (

    select *
    from by_sigungu
    where smallest_published < 5
        or (
            not is_total_suppressed
            and suppressed_cells > 0
            and (suppressed_cells = 1 or published_total - published_cells_sum < 5)
        )

)

select * from violations
