-- The change log that drives every affected-key model (macros/affected_keys.sql): each run appends
-- the persons and households whose source rows staging wrote or deleted since this model last ran.
-- Staging stamps what it writes (loaded_at) and logs the keys it deletes (<model>__deleted_keys,
-- macros/incremental_staging.sql), so this reads ~the changed rows, not whole tables. For each such
-- key it logs the new row and the row the person-keyed intermediates kept for it (a moved person
-- logs the old and the new household; a deleted row, the person it belonged to). It must run after
-- staging and before those intermediates replace their rows, so it reads their previous state by
-- name, not through ref().
-- Rows stay until every consumer has been built after them (post-hook), so a run that fails
-- half-way leaves its changes for the next one. On a full build everything is rebuilt and the run
-- logs one row with source 'all'; a table dropped by hand needs one `dbt build --full-refresh`.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        post_hook=["{{ trim_person_changes() }}", "{{ record_build() }}"]
    )
}}

{%- set kept_residents = adapter.get_relation(this.database, 'intermediate', 'int_residents_deduplicated') if execute else none %}
{%- set kept_incomes = adapter.get_relation(this.database, 'intermediate', 'int_incomes_latest_filing') if execute else none %}
{%- set kept_households = adapter.get_relation(this.database, 'intermediate', 'int_households_sized') if execute else none %}
{%- set kept_accounts = adapter.get_relation(this.database, 'intermediate', 'int_youth_leap_accounts_active') if execute else none %}
{%- set since = last_built_at(this.name) %}

-- depends_on: {{ ref('stg_mois__households') }}

with

residents as (

    select * from {{ ref('stg_mois__residents') }}

),

incomes as (

    select * from {{ ref('stg_nts__incomes') }}

),

youth_leap_accounts as (

    select * from {{ ref('stg_fsc__youth_leap_accounts') }}

),

{#- Not is_incremental(): the intermediates read this run's rows even when this table is new. -#}
{% if kept_residents and kept_incomes and kept_households and kept_accounts and not flags.FULL_REFRESH %}
written_residents as (

    select resident_id, subject_pseudonym, household_id from residents where loaded_at > {{ since }}

),

resident_keys as (

    {{ written_or_deleted_keys(ref('stg_mois__residents'), 'resident_id', since) }}

),

written_incomes as (

    select income_id, subject_pseudonym from incomes where loaded_at > {{ since }}

),

income_keys as (

    {{ written_or_deleted_keys(ref('stg_nts__incomes'), 'income_id', since) }}

),

household_keys as (

    {{ written_or_deleted_keys(ref('stg_mois__households'), 'household_id', since) }}

),

written_accounts as (

    select account_id, subject_pseudonym from youth_leap_accounts where loaded_at > {{ since }}

),

account_keys as (

    {{ written_or_deleted_keys(ref('stg_fsc__youth_leap_accounts'), 'account_id', since) }}

),

changes as (

    select 'mois_residents' as source, subject_pseudonym, household_id
    from written_residents
    union all
    select 'mois_residents', kept.subject_pseudonym, kept.household_id
    from {{ kept_residents }} as kept
    semi join resident_keys
        on kept.resident_id = resident_keys.resident_id
    union all
    select 'nts_incomes', subject_pseudonym, cast(null as bigint)
    from written_incomes
    union all
    select 'nts_incomes', kept.subject_pseudonym, cast(null as bigint)
    from {{ kept_incomes }} as kept
    semi join income_keys
        on kept.income_id = income_keys.income_id
    union all
    select 'mois_households', cast(null as varchar), household_id
    from household_keys
    union all
    -- An account opened, closed or changed: its holder now; an open one that changed or vanished:
    -- its holder as last built (the only way to find whose account a deleted key was).
    select 'fsc_youth_leap_accounts', subject_pseudonym, cast(null as bigint)
    from written_accounts
    union all
    select 'fsc_youth_leap_accounts', kept.subject_pseudonym, cast(null as bigint)
    from {{ kept_accounts }} as kept
    semi join account_keys
        on kept.account_id = account_keys.account_id

),
{% else %}
changes as (

    -- The intermediates rebuild everyone: one row says so (their data tests then check every row).
    select 'all' as source, cast(null as varchar) as subject_pseudonym, cast(null as bigint) as household_id

),
{% endif %}

final as (

    select distinct
        source,
        subject_pseudonym,
        household_id,
        {{ run_started_at_ts() }} as changed_at

    from changes

)

select * from final
