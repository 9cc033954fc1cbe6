-- Who newly became eligible for which programme since the last publish. The previous publish's
-- state is this table itself (incremental): a run inserts only (subject, programme) pairs not
-- already present, stamped eligible_on = this run's as_of, so "new since last publish" is
-- `eligible_on = as_of of the run` and a rerun of the same date inserts nothing (idempotent).
-- A person who stops being eligible keeps the old row: one notification per person and programme.
-- full_refresh=false: the table is the record of who was already told; --full-refresh must not wipe it.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='notification_id',
        on_schema_change='fail',
        full_refresh=false
    )
}}

with

youth_leap as (

    select * from {{ ref('youth_leap_eligibility_v1') }}

),

eligible_now as (

    select
        md5(subject_pseudonym || '|youth_leap_account') as notification_id,
        subject_pseudonym,
        'youth_leap_account' as programme,
        rule_id,
        'age ' || age_on_as_of
            || '; earned ' || earned_income_krw || ' KRW, comprehensive ' || comprehensive_income_krw
            || ' KRW (tax year ' || income_tax_year || ')'
            || '; household ' || household_income_krw || ' KRW/yr vs ' || percent_of_median
            || '% of median ' || median_income_krw || ' KRW/month for ' || household_size
            || ' (' || median_rule_id || ')' as reason,
        {{ as_of_date() }} as eligible_on

    from youth_leap
    where is_eligible

),

new_since_last_publish as (

    select *
    from eligible_now
    {% if is_incremental() %}
    where notification_id not in (select notification_id from {{ this }})
    {% endif %}

),

final as (

    select
        notification_id,
        subject_pseudonym,
        programme,
        rule_id,
        reason,
        eligible_on

    from new_since_last_publish

)

select * from final
