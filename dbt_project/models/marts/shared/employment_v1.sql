-- Employment-insurance status per insured person on as_of (고용보험 자격이력 evidence): whether
-- they hold insured employment, since when, and the current job's wage. With several current
-- jobs, the one acquired most recently is "current"; the count says how many there are.

-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- A table rebuilt in full: measured at 1M persons, writing only changed rows (`changed_rows`) cost
-- more than the rebuild (comparing narrow rows of long strings outweighs writing them).

with

enrolments as (

    select * from {{ ref('stg_moel__employment_insurances') }}

),

known_on_as_of as (

    select *
    from enrolments
    where enrolments.acquired_on <= {{ as_of_date() }}

),

summarised as (

    select
        subject_pseudonym,
        count(*) as enrolment_count,
        count(*) filter (where lost_on is null or lost_on > {{ as_of_date() }}) as current_enrolment_count,
        max(lost_on) filter (where lost_on <= {{ as_of_date() }}) as last_lost_on

    from known_on_as_of
    group by subject_pseudonym

),

current_jobs as (

    select
        subject_pseudonym,
        employer_brn as current_employer_brn,
        acquired_on as insured_since,
        monthly_wage_krw as current_monthly_wage_krw

    from known_on_as_of
    where lost_on is null or lost_on > {{ as_of_date() }}
    qualify row_number() over (
        partition by subject_pseudonym order by acquired_on desc, enrolment_id desc
    ) = 1

),

final as (

    select
        summarised.subject_pseudonym,
        summarised.current_enrolment_count > 0 as is_insured,
        current_jobs.current_employer_brn,
        current_jobs.insured_since,
        current_jobs.current_monthly_wage_krw,
        cast(summarised.current_enrolment_count as integer) as current_enrolment_count,
        cast(summarised.enrolment_count as integer) as enrolment_count,
        summarised.last_lost_on

    from summarised
    left join current_jobs
        on summarised.subject_pseudonym = current_jobs.subject_pseudonym

)

select * from final
