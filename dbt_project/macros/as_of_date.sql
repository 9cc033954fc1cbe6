{#- The run's logical date (var `ds`, YYYY-MM-DD) as a date: the as_of stamped on shared marts. -#}
{% macro as_of_date() -%}
    cast('{{ var("ds") }}' as date)
{%- endmacro %}
