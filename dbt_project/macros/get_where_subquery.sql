{#- Data tests on a daily run look only at what the run wrote where that is cheap (docs/dbt.md
    "Data tests on a daily run"). dbt_project.yml sets `where: __written_this_run__` on every data
    test; this override (dbt's documented hook for `where`) turns the placeholder into "every row of a
    key staging wrote in this invocation" for the stamped staging models, "person logged as changed
    this run" for the person-keyed intermediates and the views over them, and into no filter
    everywhere else. An affected-key model's tests read the rows it wrote this invocation, kept apart
    by macros/written_rows.sql (why that is enough for `unique` is there); filtering the 10M-row mart by
    its ~7 % affected keys instead (a semi join on 64-character pseudonyms) cost more than the tests it
    saved (35 s of daily tests vs 26 s unscoped at 10M persons). A written key is checked against every
    row with the same key (unique) and the whole parent (relationships); rows a run did not write
    were checked by the run that wrote them. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set written = kept_written_rows(relation.identifier) if where and '__written_this_run__' in where else none -%}
    {%- if written -%}
        {#- An affected-key model: the rows it wrote in this invocation (macros/written_rows.sql). -#}
        {%- set relation = written -%}
        {%- set where = where | replace('__written_this_run__', 'true') -%}
    {%- elif where and '__written_this_run__' in where -%}
        {%- set where = where | replace('__written_this_run__', written_this_run_filter(relation)) -%}
    {%- endif -%}
    {%- if where and where | trim != 'true' -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}

{#- The rows a daily run wrote, as a filter on `relation`; 'true' (no filter) otherwise. -#}
{% macro written_this_run_filter(relation) -%}
    {%- set name = relation.identifier if relation.identifier is defined else none -%}
    {%- set changes = adapter.get_relation(target.database, 'intermediate', 'int_person_changes') if execute else none -%}
    {%- if flags.FULL_REFRESH or not changes -%}
        {{- return('true') -}}
    {%- elif name in stamped_staging_keys() -%}
        {#- Every row of each key staging wrote in this invocation (loaded_at, macros/incremental_staging.sql). -#}
        {%- set key = stamped_staging_keys()[name] -%}
        {{- return(key ~ ' in (select ' ~ key ~ ' from ' ~ relation ~ ' where loaded_at = ' ~ run_started_at_ts() ~ ')') -}}
    {%- elif name in ('int_residents_deduplicated', 'int_persons', 'int_incomes_latest_filing', 'income_v1') -%}
        {#- The persons logged as changed by this invocation; everyone on a build that logged 'all'. -#}
        {%- set now = 'changed_at = ' ~ run_started_at_ts() -%}
        {%- set rebuilt = run_query("select count(*) from intermediate.int_person_changes where source = 'all' and " ~ now) -%}
        {%- if rebuilt.columns[0].values()[0] > 0 -%}
            {{- return('true') -}}
        {%- endif -%}
        {%- set changed = 'subject_pseudonym in (select subject_pseudonym from intermediate.int_person_changes where ' ~ now ~ ')' -%}
        {%- if name == 'int_persons' -%}
            {#- The spine's foreign residents are not in the person change log: their cards written this run. -#}
            {%- set changed = changed ~ ' or subject_pseudonym in (select subject_pseudonym from'
                ~ ' staging.stg_moj__foreign_residents where loaded_at = ' ~ run_started_at_ts() ~ ')' -%}
        {%- endif -%}
        {{- return(changed) -}}
    {%- else -%}
        {{- return('true') -}}
    {%- endif -%}
{%- endmacro %}

{#- Staging models that stamp the rows they write, and their keys. -#}
{% macro stamped_staging_keys() -%}
    {{ return({
        'stg_mois__residents': 'resident_id',
        'stg_mois__households': 'household_id',
        'stg_nts__incomes': 'income_id',
        'stg_moel__employment_insurances': 'enrolment_id',
        'stg_moel__unemployment_benefits': 'benefit_id',
        'stg_nts__business_registrations': 'business_registration_id',
        'stg_moj__foreign_residents': 'foreign_resident_id',
        'stg_mohw__basic_livelihood_recipients': 'recipient_id',
        'stg_mohw__disability_registrations': 'registration_id',
        'stg_fsc__youth_leap_accounts': 'account_id',
    }) }}
{%- endmacro %}
