-- Who newly became eligible for which programme since the last publish. The previous publish's
-- state is this table itself (incremental): a run inserts only (subject, programme) pairs not
-- already present, stamped eligible_on = this run's as_of, so "new since last publish" is
-- `eligible_on = as_of of the run` and a rerun of the same date inserts nothing (idempotent).
-- A person who stops being eligible keeps the old row: one notification per person and programme.
-- full_refresh=false: the table is the record of who was already told; --full-refresh must not wipe it.
-- A daily run looks only at the persons whose youth_leap row was recomputed (int_affected_subjects):
-- everyone else's eligibility is unchanged, so they were notified already or are still not eligible.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='notification_id',
        on_schema_change='fail',
        full_refresh=false,
        post_hook=["{{ record_affected_key_build() }}", after_commit("{{ keep_written_rows() }}")]
    )
}}

-- depends_on: {{ ref('int_build_window') }}

with

youth_leap as (

    select * from {{ ref('youth_leap_eligibility_v1') }}

),

affected_subjects as (

    select * from {{ ref('int_affected_subjects') }}

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
    {#- full_refresh=false keeps this incremental on --full-refresh, where the others recompute all. #}
    {% if reads_affected_keys() %}
    semi join affected_subjects
        on youth_leap.subject_pseudonym = affected_subjects.subject_pseudonym
    {% endif %}
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
