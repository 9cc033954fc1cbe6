{#- Use the folder's schema name as is (staging, intermediate, shared, reference) so publishing
    and shared-table readers find marts at a stable `shared.<model>` across targets. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
