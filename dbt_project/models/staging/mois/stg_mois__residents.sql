-- Raw rrn is read here and only here: it leaves as subject_pseudonym (zd_pseudonym is the TEMP
-- macro created per connection by zerodoc.transform.dbt_plugin). Name and address are not needed
-- by any shared dataset, so they stay in the validated zone (data minimisation).
-- Incremental: the HMAC is the expensive part, so only rows new or changed since the warehouse
-- copy (updated_at differs) are re-pseudonymised. docs/dbt.md explains the strategy.
-- Deletions (docs/sources.md): a cancelled registration arrives as a tombstone (_op = 'delete'),
-- whose key the post-hook deletes. Keys merely absent from the partition are deleted only when it
-- is a full snapshot (_op = 'snapshot', or no _op at all); an incremental window (_op = 'upsert')
-- holds only what changed, so absence there means nothing.

{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='resident_id',
        on_schema_change='fail',
        post_hook=[
            "{% if is_incremental() %}
            {% set partition %}
                select * from {{ source('mois', 'residents') }}
                union all by name select cast(null as varchar) as _op where false
            {% endset %}
            delete from {{ this }} where resident_id in (
                select cast(resident_id as bigint) from ({{ partition }}) where _op = 'delete'
            ) or (
                resident_id not in (select cast(resident_id as bigint) from ({{ partition }}))
                and exists (select 1 from ({{ partition }}) where _op = 'snapshot' or _op is null)
            )
            {% endif %}"
        ]
    )
}}

with

-- Partitions written before _op existed lack the column: UNION ALL BY NAME adds it as NULL.
source_rows as (

    select * from {{ source('mois', 'residents') }}
    union all by name
    select cast(null as varchar) as _op where false

),

source as (

    select * exclude (_op) from source_rows where _op is distinct from 'delete'

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
        cast(updated_at as timestamp) as updated_at

    from changed

)

select * from renamed
