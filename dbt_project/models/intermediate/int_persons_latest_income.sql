-- Each person's latest tax year that is complete on the as-of date (tax_year < year(as_of)):
-- the income a means test as of that date can know. People without any such year get no row.
-- Incremental by person (macros/affected_keys.sql): a daily run recomputes the persons in
-- int_affected_subjects; everyone when the year turns (int_build_window.is_full).

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

incomes as (

    select * from {{ ref('int_incomes_latest_filing') }}

),

affected_subjects as (

    select * from {{ ref('int_affected_subjects') }}

),

latest_year as (

    select *
    from incomes
    {% if reads_affected_keys() %}
    semi join affected_subjects
        on incomes.subject_pseudonym = affected_subjects.subject_pseudonym
    {% endif %}
    where tax_year < year({{ as_of_date() }})
    qualify row_number() over (partition by subject_pseudonym order by tax_year desc) = 1

),

final as (

    select
        subject_pseudonym,
        tax_year,
        earned_income_krw,
        business_income_krw + other_income_krw as comprehensive_income_krw,
        total_income_krw

    from latest_year

)

select * from final
