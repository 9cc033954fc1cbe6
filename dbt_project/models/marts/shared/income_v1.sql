-- A view: the mart is int_incomes_latest_filing (incremental by person) as is, so a stored copy would
-- be a full rewrite every day for no work. as_of is the run's (shared.build_as_of), stamped on the
-- published version. Publishing exports it whole into
-- an immutable Parquet version either way (zerodoc.transform.runner.export_mart).

{{ config(materialized='view') }}

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
        filed_on

    from incomes

)

select * from final
