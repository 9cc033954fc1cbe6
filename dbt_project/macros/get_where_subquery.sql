{#- Data tests of affected-key models look only at the keys this run wrote (docs/dbt.md "Data tests
    on a daily run"). dbt_project.yml sets `where: __written_this_run__` on every data test; this
    override (dbt's documented hook for `where`) turns the placeholder into "key in this run's
    affected keys" for the models of affected_key_models() and the person-keyed intermediates, and
    into no filter for every other model, on --full-refresh and on a full window. A key written this
    run is checked against the whole parent table (relationships) and against every row with the
    same key (unique), so nothing a daily run wrote goes unchecked; rows it did not touch were
    checked by the run that wrote them. -#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and '__written_this_run__' in where -%}
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

{#- The keys a daily run wrote, as a filter on `relation`; 'true' (no filter) when it rewrote everything. -#}
{% macro written_this_run_filter(relation) -%}
    {%- set models = affected_key_models() -%}
    {%- set name = relation.identifier if relation.identifier is defined else none -%}
    {%- set window = adapter.get_relation(target.database, 'intermediate', 'int_build_window') if execute else none -%}
    {%- if flags.FULL_REFRESH or not window -%}
        {{- return('true') -}}
    {%- elif name in models -%}
        {#- On a full window every key was rewritten: no filter (cheaper than a semi join on all keys). -#}
        {%- set is_full = run_query('select is_full from intermediate.int_build_window').columns[0].values()[0] -%}
        {%- if is_full -%}
            {{- return('true') -}}
        {%- endif -%}
        {%- set key, affected = models[name] -%}
        {{- return(key ~ ' in (select ' ~ key ~ ' from intermediate.' ~ affected ~ ')') -}}
    {%- elif name in ('int_residents_deduplicated', 'int_persons', 'int_incomes_latest_filing', 'income_v1') -%}
        {#- Person-keyed intermediates (and the views projecting them) run before int_affected_subjects
            exists this run: the persons logged as changed now; everyone on a build that logged 'all'. -#}
        {%- set now = 'changed_at = ' ~ run_started_at_ts() -%}
        {%- set rebuilt = run_query("select count(*) from intermediate.int_person_changes where source = 'all' and " ~ now) -%}
        {%- if rebuilt.columns[0].values()[0] > 0 -%}
            {{- return('true') -}}
        {%- endif -%}
        {{- return('subject_pseudonym in (select subject_pseudonym from intermediate.int_person_changes where ' ~ now ~ ')') -}}
    {%- else -%}
        {{- return('true') -}}
    {%- endif -%}
{%- endmacro %}
