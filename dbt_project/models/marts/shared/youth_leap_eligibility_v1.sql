-- Youth Leap Account (청년도약계좌) eligibility for every citizen on the spine, decided by the
-- programme_thresholds row in force on as_of. A person who already holds an open account cannot
-- open another (one account per person): they are not eligible, and so never notified. Foreign
-- residents are not decided here: the rule weighs household income on the MOIS household, which
-- they do not have. Every row carries the rule ids and the inputs that decided it. Money
-- comparisons are integer (income × 100 ≤ percent × 12 × monthly median) so an income exactly on
-- the threshold is eligible, with no floating-point rounding.

-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- Incremental by person (macros/affected_keys.sql): a daily run recomputes the persons in
-- int_affected_subjects (registry, income or Youth Leap Account changed, their household changed, or
-- a birthday moved their age); everyone when the rules in force change or the year turns.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_affected_keys('subject_pseudonym', 'int_affected_subjects') }}"],
        post_hook=["{{ record_affected_key_build() }}", after_commit("{{ keep_written_rows() }}")]
    )
}}

-- depends_on: {{ ref('int_build_window') }}

with

persons as (

    select * from {{ ref('int_persons') }}

),

latest_incomes as (

    select * from {{ ref('int_persons_latest_income') }}

),

households as (

    select * from {{ ref('household_v1') }}

),

open_accounts as (

    select * from {{ ref('int_youth_leap_accounts_active') }}

),

holders as (

    select subject_pseudonym
    from open_accounts
    group by subject_pseudonym

),

affected_subjects as (

    select * from {{ ref('int_affected_subjects') }}

),

rules_in_force as (

    select *
    from {{ ref('programme_thresholds') }} as rules
    where rules.programme = 'youth_leap_account'
        and {{ in_force('rules', as_of_date()) }}

),

inputs as (

    select
        persons.subject_pseudonym,
        rules.rule_id,
        households.median_rule_id,
        {{ age_on('persons.born_on', as_of_date()) }} as age_on_as_of,
        latest_incomes.tax_year as income_tax_year,
        coalesce(latest_incomes.earned_income_krw, 0) as earned_income_krw,
        coalesce(latest_incomes.comprehensive_income_krw, 0) as comprehensive_income_krw,
        coalesce(latest_incomes.total_income_krw, 0) as total_income_krw,
        persons.household_id,
        households.household_size,
        households.household_income_krw,
        households.median_income_krw,
        rules.percent_of_median,
        rules.min_age,
        rules.max_age,
        rules.max_earned_income_krw,
        rules.max_comprehensive_income_krw,
        holders.subject_pseudonym is not null as has_open_account

    from persons
    {% if reads_affected_keys() %}
    semi join affected_subjects
        on persons.subject_pseudonym = affected_subjects.subject_pseudonym
    {% endif %}
    cross join rules_in_force as rules
    left join latest_incomes
        on persons.subject_pseudonym = latest_incomes.subject_pseudonym
    left join households
        on persons.household_id = households.household_id
    left join holders
        on persons.subject_pseudonym = holders.subject_pseudonym
    where persons.person_kind = 'citizen'

),

decided as (

    select
        *,
        coalesce(age_on_as_of between min_age and max_age, false) as is_age_eligible,
        total_income_krw > 0
            and earned_income_krw <= max_earned_income_krw
            and comprehensive_income_krw <= max_comprehensive_income_krw as is_individual_income_eligible,
        coalesce(
            cast(household_income_krw as hugeint) * 100
                <= cast(percent_of_median as hugeint) * 12 * median_income_krw,
            false
        ) as is_household_income_eligible

    from inputs

),

final as (

    select
        subject_pseudonym,
        rule_id,
        median_rule_id,
        cast(age_on_as_of as integer) as age_on_as_of,
        income_tax_year,
        earned_income_krw,
        comprehensive_income_krw,
        household_id,
        household_size,
        household_income_krw,
        median_income_krw,
        percent_of_median,
        is_age_eligible,
        is_individual_income_eligible,
        is_household_income_eligible,
        has_open_account,
        is_age_eligible and is_individual_income_eligible and is_household_income_eligible
            and not has_open_account as is_eligible,
        case
            when has_open_account then 'already_holds_account'
            when not is_age_eligible then 'age_out_of_range'
            when total_income_krw <= 0 then 'no_earned_or_business_income'
            when not is_individual_income_eligible then 'individual_income_above_ceiling'
            when median_income_krw is null then 'household_or_median_unknown'
            when not is_household_income_eligible then 'household_income_above_ceiling'
        end as ineligibility_reason

    from decided

)

select * from final
