-- One row per subject and tax year. NTS can hold an original and an amended return for the same
-- year; the latest filing supersedes (then latest update, then highest income_id, so reruns agree).

with

incomes as (

    select * from {{ ref('stg_nts__incomes') }}

),

latest_filing as (

    select *
    from incomes
    qualify row_number() over (
        partition by subject_pseudonym, tax_year
        order by filed_on desc nulls last, updated_at desc nulls last, income_id desc
    ) = 1

),

final as (

    select
        subject_pseudonym,
        tax_year,
        earned_income_krw,
        business_income_krw,
        other_income_krw,
        earned_income_krw + business_income_krw + other_income_krw as total_income_krw,
        filed_on

    from latest_filing

)

select * from final
