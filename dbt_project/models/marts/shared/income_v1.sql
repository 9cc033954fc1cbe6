with

incomes as (

    select * from {{ ref('int_incomes_latest_filing') }}

),

final as (

    select
        subject_pseudonym,
        tax_year,
        earned_income_krw,
        business_income_krw,
        other_income_krw,
        total_income_krw,
        filed_on,
        {{ as_of_date() }} as as_of

    from incomes

)

select * from final
