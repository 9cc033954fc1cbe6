{#- Agency legacy systems keep dates as char(8) YYYYMMDD. Strict parse: an impossible date that
    slipped past validation fails the model loudly instead of becoming NULL. -#}
{% macro parse_yyyymmdd(column_name) -%}
    cast(strptime(nullif(trim({{ column_name }}), ''), '%Y%m%d') as date)
{%- endmacro %}
