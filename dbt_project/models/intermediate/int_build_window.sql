-- One row: what this run must recompute in the affected-key models (macros/affected_keys.sql).
-- `changes_since`: changes logged after the oldest last build of those models are pending.
-- `previous_as_of_low/high`: the dates they were last built as of (an age can change in between).
-- `is_full`: recompute every key, when a model has no recorded build, when the rules in force
-- differ from those it was built with (a seed edit, or a rule's effective date passed; the checksum
-- covers every rule row in force on as_of and the regions), or when the year turned (the latest
-- complete tax year moves for everyone).

{%- set build_log = adapter.get_relation(this.database, build_log_relation().schema, build_log_relation().identifier) if execute else none %}
{%- set models = affected_key_models().keys() | list %}

with

medians as (

    select * from {{ ref('standard_median_incomes') }}

),

thresholds as (

    select * from {{ ref('programme_thresholds') }}

),

victim_rules as (

    select * from {{ ref('victim_support_rules') }}

),

regions as (

    select * from {{ ref('regions') }}

),

rules_in_force as (

    select cast(medians as varchar) as rule_row from medians where {{ in_force('medians', as_of_date()) }}
    union all
    select cast(thresholds as varchar) from thresholds where {{ in_force('thresholds', as_of_date()) }}
    union all
    select cast(victim_rules as varchar) from victim_rules where {{ in_force('victim_rules', as_of_date()) }}
    union all
    select cast(regions as varchar) from regions

),

checksum as (

    select
        {{ as_of_date() }} as as_of,
        md5(string_agg(rule_row, '|' order by rule_row)) as rules_checksum

    from rules_in_force

),

last_builds as (

    {% if build_log and not flags.FULL_REFRESH %}
    select *
    from {{ build_log }}
    where model_name in ('{{ models | join("', '") }}')
    {% else %}
    select
        cast(null as varchar) as model_name,
        cast(null as date) as as_of,
        cast(null as timestamp) as built_at,
        cast(null as varchar) as rules_checksum
    where false
    {% endif %}

),

final as (

    select
        checksum.as_of,
        checksum.rules_checksum,
        min(last_builds.built_at) as changes_since,
        min(last_builds.as_of) as previous_as_of_low,
        max(last_builds.as_of) as previous_as_of_high,
        count(last_builds.model_name) < {{ models | length }}
            or coalesce(bool_or(last_builds.rules_checksum <> checksum.rules_checksum), false)
            or coalesce(bool_or(year(last_builds.as_of) <> year(checksum.as_of)), false) as is_full

    from checksum
    left join last_builds
        on true
    group by checksum.as_of, checksum.rules_checksum

)

select * from final
