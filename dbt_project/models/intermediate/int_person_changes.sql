-- The change log that drives every affected-key model (macros/affected_keys.sql): each run appends
-- the persons and households whose source rows changed since the last run, found by comparing
-- staging with what the person-keyed intermediates kept (row key + updated_at; the same test as
-- int_residents_deduplicated and int_incomes_latest_filing use to pick their candidates). A moved
-- person logs both their old and their new household. It must run after staging and before those
-- intermediates replace their rows, so it reads their previous state by name, not through ref().
-- Rows stay until every affected-key model has been built after them (post-hook), so a run that
-- fails half-way leaves its changes for the next one. On a full build everything is rebuilt and the
-- run logs one row with source 'all';
-- a table dropped by hand needs one `dbt build --full-refresh`.

{{
    config(
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='fail',
        post_hook=["{{ trim_person_changes() }}"]
    )
}}

{%- set kept_residents = adapter.get_relation(this.database, 'intermediate', 'int_residents_deduplicated') if execute else none %}
{%- set kept_incomes = adapter.get_relation(this.database, 'intermediate', 'int_incomes_latest_filing') if execute else none %}
{%- set kept_households = adapter.get_relation(this.database, 'intermediate', 'int_households_sized') if execute else none %}

with

residents as (

    select * from {{ ref('stg_mois__residents') }}

),

incomes as (

    select * from {{ ref('stg_nts__incomes') }}

),

households as (

    select * from {{ ref('stg_mois__households') }}

),

{#- Not is_incremental(): the intermediates read this run's rows even when this table is new. -#}
{% if kept_residents and kept_incomes and kept_households and not flags.FULL_REFRESH %}
resident_keys as (

    {{ unmatched_keys('residents', kept_residents, 'resident_id') }}

),

income_keys as (

    {{ unmatched_keys('incomes', kept_incomes, 'income_id') }}

),

household_keys as (

    {{ unmatched_keys('households', kept_households, 'household_id') }}

),

changes as (

    select 'mois_residents' as source, subject_pseudonym, household_id
    from residents
    where resident_id in (select staged_key from resident_keys)
    union all
    select 'mois_residents', subject_pseudonym, household_id
    from {{ kept_residents }}
    where resident_id in (select kept_key from resident_keys)
    union all
    select 'nts_incomes', subject_pseudonym, cast(null as bigint)
    from incomes
    where income_id in (select staged_key from income_keys)
    union all
    select 'nts_incomes', subject_pseudonym, cast(null as bigint)
    from {{ kept_incomes }}
    where income_id in (select kept_key from income_keys)
    union all
    select 'mois_households', cast(null as varchar), coalesce(staged_key, kept_key)
    from household_keys

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
