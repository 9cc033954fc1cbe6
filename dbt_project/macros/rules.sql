{#- Rules are data with effective dates: a row applies on `as_of` when as_of falls inside
    [effective_from, effective_to] (effective_to null = open-ended). Used for every rule join so
    an answer as of a past date uses the rules in force on that date. -#}
{% macro in_force(relation_alias, as_of) -%}
    ({{ relation_alias }}.effective_from <= {{ as_of }}
     and ({{ relation_alias }}.effective_to is null or {{ as_of }} <= {{ relation_alias }}.effective_to))
{%- endmacro %}

{#- Standard median income for any household size from the 6- and 7-person figures in force:
    sizes 1–7 read the table; 8+ follow the MOHW notice (each member above 7 adds the 7-minus-6
    difference). `exact` is the row for least(size, 7). -#}
{% macro median_income_for_size(size, exact, six, seven) -%}
    case
        when {{ size }} <= 7 then {{ exact }}
        else {{ seven }} + ({{ size }} - 7) * ({{ seven }} - {{ six }})
    end
{%- endmacro %}

{#- Age in full years (만 나이) on a date; a 29 February birthday counts from 1 March in common years.
    The month-day comparison is integer (month × 100 + day), not strftime('%m%d') strings: the same
    order, without formatting two strings per row (it runs over all 10M persons in the birthday scan). -#}
{% macro age_on(born_on, as_of) -%}
    (date_diff('year', {{ born_on }}, {{ as_of }})
     - case when month({{ as_of }}) * 100 + day({{ as_of }}) < month({{ born_on }}) * 100 + day({{ born_on }})
            then 1 else 0 end)
{%- endmacro %}
