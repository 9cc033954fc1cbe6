-- Household income vs the standard median income for its size, with the rules in force on as_of.
-- Income is annual (NTS), the median is monthly (MOHW), so the ratio compares income / 12.

-- as_of is not a column: it is the run's (shared.build_as_of), stamped on the published version.
-- Incremental by household (macros/affected_keys.sql): a daily run recomputes the households in
-- int_affected_households (registry or member income changed); all when the rules in force change.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_affected_keys('household_id', 'int_affected_households') }}"],
        post_hook=["{{ record_affected_key_build() }}", after_commit("{{ keep_written_rows() }}")]
    )
}}

-- depends_on: {{ ref('int_build_window') }}

with

households as (

    select * from {{ ref('int_households_sized') }}

),

persons as (

    select * from {{ ref('int_persons') }}

),

latest_incomes as (

    select * from {{ ref('int_persons_latest_income') }}

),

affected_households as (

    select * from {{ ref('int_affected_households') }}

),

medians_in_force as (

    select *
    from {{ ref('standard_median_incomes') }} as medians
    where {{ in_force('medians', as_of_date()) }}

),

member_incomes as (

    select
        persons.household_id,
        count(latest_incomes.subject_pseudonym) as members_with_income,
        cast(coalesce(sum(latest_incomes.total_income_krw), 0) as bigint) as household_income_krw,
        max(latest_incomes.tax_year) as latest_tax_year

    from persons
    left join latest_incomes
        on persons.subject_pseudonym = latest_incomes.subject_pseudonym
    {% if reads_affected_keys() %}
    semi join affected_households
        on persons.household_id = affected_households.household_id
    {% endif %}
    where persons.household_id is not null  -- foreign residents: no MOIS household
    group by persons.household_id

),

compared as (

    select
        households.household_id,
        households.household_size,
        coalesce(member_incomes.members_with_income, 0) as members_with_income,
        coalesce(member_incomes.household_income_krw, 0) as household_income_krw,
        member_incomes.latest_tax_year,
        exact.rule_id as median_rule_id,
        exact.median_year,
        cast({{ median_income_for_size(
            'households.household_size', 'exact.median_income_krw',
            'six.median_income_krw', 'seven.median_income_krw'
        ) }} as bigint) as median_income_krw

    from households
    {% if reads_affected_keys() %}
    semi join affected_households
        on households.household_id = affected_households.household_id
    {% endif %}
    left join member_incomes
        on households.household_id = member_incomes.household_id
    left join medians_in_force as exact
        on exact.household_size = least(households.household_size, 7)
    left join medians_in_force as six
        on six.household_size = 6
    left join medians_in_force as seven
        on seven.household_size = 7
    where households.household_size > 0

),

final as (

    select
        household_id,
        household_size,
        members_with_income,
        household_income_krw,
        latest_tax_year,
        median_rule_id,
        median_year,
        median_income_krw,
        cast(household_income_krw as double) / 12 / median_income_krw as income_to_median_ratio

    from compared

)

select * from final
