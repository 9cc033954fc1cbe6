-- Crime-victim support eligibility (One-Stop Solution Center): one row per victim with a case
-- reported by as_of, five support areas each decided by the victim_support_rules row in force on
-- as_of. Each area records eligible yes/no, the rule id and the first failing condition; the
-- deciding inputs are columns and, for the evidence API, one JSON object. Money comparisons are
-- integer (income × 100 ≤ percent × 12 × monthly median), so "exactly at the threshold" is eligible.
{%- set areas = ['legal_aid', 'relief_fund', 'emergency_livelihood', 'employment_support', 'financial_support'] %}

-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- A table rebuilt in full: writing only changed rows (a `changed_rows` strategy, computed in full
-- then diffed) measured no faster at 1M persons; docs/dbt.md "Incremental strategy".

with

cases as (

    select * from {{ ref('stg_police__crime_victim_cases') }}

),

persons as (

    select * from {{ ref('int_persons') }}

),

households as (

    select * from {{ ref('household_v1') }}

),

enrolments as (

    select * from {{ ref('stg_moel__employment_insurances') }}

),

livelihood_recipients as (

    select * from {{ ref('stg_mohw__basic_livelihood_recipients') }}

),

rules_in_force as (

    select *
    from {{ ref('victim_support_rules') }} as rules
    where {{ in_force('rules', as_of_date()) }}

),

latest_cases as (

    -- The victim's most recent case known on as_of decides (a later case supersedes an older one).
    select *
    from cases
    where cases.incident_on <= {{ as_of_date() }}
        and coalesce(cases.reported_on, cases.incident_on) <= {{ as_of_date() }}
    qualify row_number() over (
        partition by cases.subject_pseudonym order by cases.incident_on desc, cases.case_id desc
    ) = 1

),

insured_on_as_of as (

    -- Victims only: about one person in a hundred, so the distinct runs over their enrolments, not
    -- the nation's.
    select distinct enrolments.subject_pseudonym
    from enrolments
    semi join latest_cases
        on enrolments.subject_pseudonym = latest_cases.subject_pseudonym
    where enrolments.acquired_on <= {{ as_of_date() }}
        and (enrolments.lost_on is null or enrolments.lost_on > {{ as_of_date() }})

),

livelihood_benefit_households as (

    -- Recipients of the livelihood benefit (생계급여) selected by as_of, with their MOIS household:
    -- the benefit is the household's, so it counts for every member (rules' excludes_livelihood_recipients).
    select
        livelihood_recipients.subject_pseudonym,
        persons.household_id

    from livelihood_recipients
    left join persons
        on livelihood_recipients.subject_pseudonym = persons.subject_pseudonym
    where list_contains(string_split(livelihood_recipients.benefit_types, ','), '생계')
        and livelihood_recipients.selected_on <= {{ as_of_date() }}

),

inputs as (

    select
        latest_cases.subject_pseudonym,
        latest_cases.case_id,
        latest_cases.crime_type,
        latest_cases.incident_on,
        latest_cases.is_foreign_registration or coalesce(persons.person_kind <> 'citizen', false) as is_foreigner,
        cast({{ age_on('persons.born_on', as_of_date()) }} as integer) as age_on_as_of,
        persons.household_id,
        households.household_size,
        households.household_income_krw,
        households.median_income_krw,
        households.median_rule_id,
        insured_on_as_of.subject_pseudonym is not null as is_employment_insured,
        coalesce(
            latest_cases.subject_pseudonym in (select subject_pseudonym from livelihood_benefit_households)
            or persons.household_id in (
                select household_id from livelihood_benefit_households where household_id is not null
            ),
            false
        ) as receives_livelihood_benefit

    from latest_cases
    left join persons
        on latest_cases.subject_pseudonym = persons.subject_pseudonym
    left join households
        on persons.household_id = households.household_id
    left join insured_on_as_of
        on latest_cases.subject_pseudonym = insured_on_as_of.subject_pseudonym

),

decided as (

    select
        inputs.*,
        {%- for area in areas %}
        {{ area }}_rule.rule_id as {{ area }}_rule_id,
        case
            when {{ area }}_rule.rule_id is null then 'no_rule_in_force'
            when inputs.is_foreigner and not {{ area }}_rule.is_foreigner_eligible then 'foreigner_not_covered'
            when {{ area }}_rule.qualifying_crime_types is not null
                and not list_contains(string_split({{ area }}_rule.qualifying_crime_types, '|'), inputs.crime_type)
                then 'crime_type_not_covered'
            when {{ area }}_rule.claim_window_years is not null
                and {{ as_of_date() }} > cast(inputs.incident_on + to_years({{ area }}_rule.claim_window_years) as date)
                then 'claim_window_passed'
            when ({{ area }}_rule.min_age is not null or {{ area }}_rule.max_age is not null)
                and inputs.age_on_as_of is null then 'age_unknown'
            when inputs.age_on_as_of < {{ area }}_rule.min_age
                or inputs.age_on_as_of > {{ area }}_rule.max_age then 'age_out_of_range'
            when {{ area }}_rule.requires_uninsured and inputs.is_employment_insured then 'currently_employed'
            when {{ area }}_rule.excludes_livelihood_recipients and inputs.receives_livelihood_benefit
                then 'receives_livelihood_benefit'
            when {{ area }}_rule.max_percent_of_median is not null
                and (inputs.median_income_krw is null or inputs.household_income_krw is null)
                then 'household_or_median_unknown'
            when {{ area }}_rule.max_percent_of_median is not null
                and cast(inputs.household_income_krw as hugeint) * 100
                    > cast({{ area }}_rule.max_percent_of_median as hugeint) * 12 * inputs.median_income_krw
                then 'household_income_above_ceiling'
        end as {{ area }}_reason{{ "," if not loop.last }}
        {%- endfor %}

    from inputs
    {%- for area in areas %}
    left join rules_in_force as {{ area }}_rule
        on {{ area }}_rule.support_area = '{{ area }}'
    {%- endfor %}

),

final as (

    select
        subject_pseudonym,
        {%- for area in areas %}
        {{ area }}_reason is null as {{ area }}_eligible,
        {{ area }}_rule_id,
        {{ area }}_reason,
        {%- endfor %}
        case_id,
        crime_type,
        incident_on,
        is_foreigner,
        age_on_as_of,
        household_id,
        household_size,
        household_income_krw,
        median_income_krw,
        median_rule_id,
        is_employment_insured,
        receives_livelihood_benefit,
        cast(json_object(
            'case_id', case_id,
            'crime_type', crime_type,
            'incident_on', incident_on,
            'is_foreigner', is_foreigner,
            'age_on_as_of', age_on_as_of,
            'household_size', household_size,
            'household_income_krw', household_income_krw,
            'median_income_krw', median_income_krw,
            'median_rule_id', median_rule_id,
            'is_employment_insured', is_employment_insured,
            'receives_livelihood_benefit', receives_livelihood_benefit
        ) as varchar) as inputs

    from decided

)

select * from final
