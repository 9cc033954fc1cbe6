-- One row per subject and tax year. NTS can hold an original and an amended return for the same
-- year; the latest filing supersedes (then latest update, then highest income_id, so reruns agree).
-- Incremental by person: a daily run recomputes every tax year of the persons whose NTS rows changed
-- (logged in int_person_changes since its last build); income_id is kept so that log can find the person
-- a changed or deleted NTS row belonged to.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        pre_hook=["{{ delete_changed_subjects('nts_incomes') }}"],
        post_hook=["{{ record_build() }}"]
    )
}}

-- depends_on: {{ ref('int_person_changes') }}

with

incomes as (

    select * from {{ ref('stg_nts__incomes') }}

),

{% if is_incremental() %}
changed_subjects as (

    {{ changed_subjects('nts_incomes') }}

),
{% endif %}

candidates as (

    select incomes.*
    from incomes
    {% if is_incremental() %}
    semi join changed_subjects
        on incomes.subject_pseudonym = changed_subjects.subject_pseudonym
    {% endif %}

),

latest_filing as (

    select *
    from candidates
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
        filed_on,
        income_id,
        updated_at

    from latest_filing

)

select * from final
