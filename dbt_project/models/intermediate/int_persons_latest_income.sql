-- Each person's latest tax year that is complete on the as-of date (tax_year < year(as_of)):
-- the income a means test as of that date can know. People without any such year get no row.

with

incomes as (

    select * from {{ ref('int_incomes_latest_filing') }}

),

latest_year as (

    select *
    from incomes
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
