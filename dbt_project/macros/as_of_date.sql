{#- The run's logical date (YYYY-MM-DD) as a date. It reaches dbt as the environment variable
    ZERODOC_DS, which the zerodoc.transform.dbt_plugin turns into the DuckDB session variable
    `zerodoc_ds` on every connection: the compiled SQL reads it at run time, so a new date changes no
    parsed node and dbt keeps its partial parse (a `--vars` value forces a full re-parse each day).
    Unit tests pin the date with `overrides: vars: ds:`, which wins when set. -#}
{% macro as_of_date() -%}
    {%- if var("ds", none) -%}
    cast('{{ var("ds") }}' as date)
    {%- else -%}
    cast(getvariable('zerodoc_ds') as date)
    {%- endif -%}
{%- endmacro %}

