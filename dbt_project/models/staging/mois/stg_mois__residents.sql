-- Raw rrn is read here and only here: it leaves as subject_pseudonym (zd_pseudonym is the TEMP
-- macro created per connection by zerodoc.transform.dbt_plugin). Name and address are not needed
-- by any shared dataset, so they stay in the validated zone (data minimisation).
-- Incremental (macros/incremental_staging.sql): the partition is a full snapshot or an incremental
-- window; only new or changed rows are re-pseudonymised and stamped loaded_at. A cancelled
-- registration arrives as a tombstone (_op = 'delete', docs/sources.md) and is deleted by the
-- post-hook, as are keys absent from a full snapshot; a window's absent keys mean nothing.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='resident_id',
        on_schema_change='fail',
        post_hook=["{{ delete_removed_rows('resident_id', source('mois', 'residents')) }}"]
    )
}}

with

source as (

    {{ partition_rows(source('mois', 'residents')) }}

),

changed as (

    {{ changed_rows('source', 'resident_id') }}

),

renamed as (

    select
        cast(resident_id as bigint) as resident_id,
        zd_pseudonym(cast(rrn as varchar)) as subject_pseudonym,
        cast(sex as varchar) as sex,
        {{ parse_yyyymmdd('birth_date') }} as born_on,
        cast(household_id as bigint) as household_id,
        cast(sigungu_code as varchar) as sigungu_code,
        {{ parse_yyyymmdd('moved_in_date') }} as moved_in_on,
        cast(updated_at as timestamp) as updated_at,
        {{ run_started_at_ts() }} as loaded_at

    from changed

)

select * from renamed
