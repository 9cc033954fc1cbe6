{#- Affected-key incremental models (docs/dbt.md "Incremental strategy"). A daily run recomputes only
    the keys whose inputs changed since the model was last built: the persons and households in
    int_person_changes, plus persons whose age changes between the last build's as_of and this one,
    or everything when the rules in force (seeds) differ or the year turns (int_build_window). Such a
    model is append-only: its pre-hook deletes the affected keys, its query inserts their new rows,
    its post-hook records the build, so a key that disappeared is simply not re-inserted. -#}

{#- Every model that consumes int_person_changes: the window waits for the one built longest ago. -#}
{% macro affected_key_models() -%}
    {{ return({
        'int_households_sized': ('household_id', 'int_affected_households'),
        'int_persons_latest_income': ('subject_pseudonym', 'int_affected_subjects'),
        'household_v1': ('household_id', 'int_affected_households'),
        'residence_v1': ('subject_pseudonym', 'int_affected_subjects'),
        'youth_leap_eligibility_v1': ('subject_pseudonym', 'int_affected_subjects'),
        'benefit_notifications_v1': ('subject_pseudonym', 'int_affected_subjects'),
    }) }}
{%- endmacro %}

{#- Where each run records which date and rules an affected-key model was last built with. Not a dbt
    model: it is written by the models' post-hooks and must outlive any one of them. -#}
{% macro build_log_relation() -%}
    {{ return(api.Relation.create(database=target.database, schema='intermediate', identifier='affected_key_builds')) }}
{%- endmacro %}

{#- Whether this model computes only the affected keys: an incremental run that does not recompute
    everyone. On a full window (int_build_window.is_full: a first daily run, a rule change, a new year)
    the affected sets are empty, and the model recomputes every key without a semi join on sets that
    would list the whole nation (int_affected_subjects alone took 17.6 s at 10M persons that way). -#}
{% macro reads_affected_keys() -%}
    {%- if not execute or not is_incremental() or flags.FULL_REFRESH -%}
        {{ return(false) }}
    {%- endif -%}
    {%- set build_window = ref('int_build_window') | string -%}
    {%- if '__dbt__cte__' in build_window -%}
        {#- A unit test: its inputs are CTEs, not tables to query, and it gives the affected set. -#}
        {{ return(true) }}
    {%- endif -%}
    {{ return(not run_query('select is_full from ' ~ build_window).columns[0].values()[0]) }}
{%- endmacro %}

{#- Pre-hook: delete the affected keys, or every row on a full window. Decided here, not in SQL: with
    `is_full or key in (...)` DuckDB marks each of the 10M rows against the affected set (a mark join),
    where the plain `in` is a semi join whose Bloom filter skips most rows while scanning. -#}
{% macro delete_affected_keys(key, affected_model) %}
    {% if is_incremental() %}
    delete from {{ this }}
    {% if reads_affected_keys() %}
    where {{ key }} in (select {{ key }} from {{ ref(affected_model) }})
    {% endif %}
    {% endif %}
{% endmacro %}

{% macro record_affected_key_build() %}
    create table if not exists {{ build_log_relation() }} (
        model_name varchar, as_of date, built_at timestamp, rules_checksum varchar
    );
    delete from {{ build_log_relation() }} where model_name = '{{ this.name }}';
    insert into {{ build_log_relation() }}
    select '{{ this.name }}', as_of, {{ run_started_at_ts() }}, rules_checksum
    from {{ ref('int_build_window') }}
{% endmacro %}

{#- The rows of int_person_changes this run has not applied yet: all of them when no affected-key
    model was built before, else those logged after the oldest such build (int_build_window). -#}
{% macro pending_changes(changes, build_window) -%}
    select {{ changes }}.*
    from {{ changes }}
    cross join {{ build_window }}
    where {{ build_window }}.changes_since is null or {{ changes }}.changed_at > {{ build_window }}.changes_since
{%- endmacro %}

{#- The moment of this invocation: rows of int_person_changes written now carry it. -#}
{% macro run_started_at_ts() -%}
    cast('{{ run_started_at.strftime("%Y-%m-%d %H:%M:%S.%f") }}' as timestamp)
{%- endmacro %}

{#- Every model that applies int_person_changes: the affected-key models and the two person-keyed
    intermediates, which recompute the persons logged after their own last build. -#}
{% macro change_consumers() -%}
    {{ return(affected_key_models().keys() | list + ['int_residents_deduplicated', 'int_incomes_latest_filing']) }}
{%- endmacro %}

{#- When `model_name` was last built (its post-hook's record_build), as a SQL expression; -infinity
    when never, so a reader of "written since" takes everything. -#}
{% macro last_built_at(model_name) -%}
    {%- set log = build_log_relation() -%}
    {%- if execute and adapter.get_relation(log.database, log.schema, log.identifier) -%}
    coalesce((select max(built_at) from {{ log }} where model_name = '{{ model_name }}'), cast('-infinity' as timestamp))
    {%- else -%}
    cast('-infinity' as timestamp)
    {%- endif -%}
{%- endmacro %}

{#- Post-hook of a model that reads what was written since its own last build. -#}
{% macro record_build() %}
    create table if not exists {{ build_log_relation() }} (
        model_name varchar, as_of date, built_at timestamp, rules_checksum varchar
    );
    delete from {{ build_log_relation() }} where model_name = '{{ this.name }}';
    insert into {{ build_log_relation() }}
    values ('{{ this.name }}', {{ as_of_date() }}, {{ run_started_at_ts() }}, null)
{% endmacro %}

{#- Post-hook of int_person_changes: drop changes every consumer has been built after, and the deleted
    keys staging logged up to now (this run has logged their persons). -#}
{% macro trim_person_changes() %}
    {%- set consumers = change_consumers() %}
    {% if is_incremental() and adapter.get_relation(this.database, build_log_relation().schema, build_log_relation().identifier) %}
    delete from {{ this }}
    where changed_at < (
        select case when count(*) = {{ consumers | length }} then min(built_at) end
        from {{ build_log_relation() }}
        where model_name in ('{{ consumers | join("', '") }}')
    );
    {% endif %}
    {% for model in ['stg_mois__residents', 'stg_nts__incomes', 'stg_mois__households', 'stg_fsc__youth_leap_accounts'] %}
    delete from {{ deleted_keys_relation(ref(model)) }}
    where deleted_at <= {{ run_started_at_ts() }};
    {% endfor %}
{% endmacro %}
