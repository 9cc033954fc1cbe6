-- Registered population (citizens and registered foreign residents: everyone on the person spine)
-- by sigungu × age band × sex, plus one total row per sigungu, with
-- small-cell suppression. The only published linear relation is "cells of a sigungu sum to its
-- total" (no sido or national margins are published), so a suppressed cell is recoverable only
-- if it is the single suppressed cell of its sigungu, or if the suppressed cells' sum (total
-- minus published cells) is small. Rule, per sigungu, cells ordered by population ascending:
--   primary:    every cell < 5 (zeros included: the full grid is published);
--   secondary:  extend the suppressed prefix to the shortest n ≥ max(#primary, 2) whose sum ≥ 5;
--   no such n:  the whole sigungu is < 5 — suppress every cell and the total too.
-- Suppressed cells therefore come in groups of ≥ 2 summing to ≥ 5, so none can be solved for.
-- A table rebuilt in full (a few thousand rows); as_of is the run's (shared.build_as_of), stamped on
-- the published version.

with

persons as (

    select * from {{ ref('int_persons') }}

),

regions as (

    select * from {{ ref('regions') }}

),

counted as (

    -- Count per sigungu × sex × band number before naming bands: the label is built for the few
    -- thousand cells, not for each of 10M persons (the same band: 10-year steps, 80 and over in one).
    select
        sigungu_code,
        sex,
        case
            when age >= 80 then 8
            else age // 10
        end as band_number,
        count(*) as population

    from (
        select sigungu_code, sex, {{ age_on('born_on', as_of_date()) }} as age
        from persons
        where born_on is not null and sex in ('M', 'F') and sigungu_code is not null
    ) as aged
    group by all

),

age_bands as (

    select * from (values
        (0, '00-09'), (1, '10-19'), (2, '20-29'), (3, '30-39'), (4, '40-49'), (5, '50-59'), (6, '60-69'),
        (7, '70-79'), (8, '80+')
    ) as t (band_number, age_band)

),

sexes as (

    select * from (values ('M'), ('F')) as t (sex)

),

grid as (

    select sigungus.sigungu_code, age_bands.band_number, age_bands.age_band, sexes.sex
    from (select distinct sigungu_code from counted) as sigungus
    cross join age_bands
    cross join sexes

),

cells as (

    select
        grid.sigungu_code,
        grid.age_band,
        grid.sex,
        coalesce(counted.population, 0) as population

    from grid
    left join counted
        on grid.sigungu_code = counted.sigungu_code
        and grid.band_number = counted.band_number
        and grid.sex = counted.sex

),

ranked as (

    select
        *,
        row_number() over by_size as cell_rank,
        sum(population) over (by_size rows between unbounded preceding and current row) as running_population,
        count_if(population < 5) over (partition by sigungu_code) as primary_cells,
        sum(population) over (partition by sigungu_code) as sigungu_population

    from cells
    window by_size as (partition by sigungu_code order by population, age_band, sex)

),

suppression_depth as (

    select
        sigungu_code,
        max(primary_cells) as primary_cells,
        min(cell_rank) filter (
            where cell_rank >= primary_cells and cell_rank >= 2 and running_population >= 5
        ) as safe_depth

    from ranked
    group by sigungu_code

),

cell_rows as (

    select
        ranked.sigungu_code,
        ranked.age_band,
        ranked.sex,
        false as is_total,
        ranked.population,
        case
            when ranked.population < 5 then 'primary'
            when depth.primary_cells > 0
                and (depth.safe_depth is null or ranked.cell_rank <= depth.safe_depth) then 'secondary'
        end as suppression_reason

    from ranked
    inner join suppression_depth as depth
        on ranked.sigungu_code = depth.sigungu_code

),

total_rows as (

    select
        depth.sigungu_code,
        'total' as age_band,
        'total' as sex,
        true as is_total,
        totals.sigungu_population as population,
        case when depth.primary_cells > 0 and depth.safe_depth is null then 'primary' end as suppression_reason

    from suppression_depth as depth
    inner join (select distinct sigungu_code, sigungu_population from ranked) as totals
        on depth.sigungu_code = totals.sigungu_code

),

all_rows as (

    select * from cell_rows
    union all
    select * from total_rows

),

final as (

    select
        left(all_rows.sigungu_code, 2) as sido_code,
        regions.sido_name,
        all_rows.sigungu_code,
        regions.sigungu_name,
        all_rows.age_band,
        all_rows.sex,
        all_rows.is_total,
        cast(case when all_rows.suppression_reason is null then all_rows.population end as bigint) as population,
        all_rows.suppression_reason is not null as is_suppressed,
        all_rows.suppression_reason

    from all_rows
    left join regions
        on all_rows.sigungu_code = regions.sigungu_code

)

select * from final
