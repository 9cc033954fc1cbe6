{#- Post-hook: persons with no staging row left lose their rows (delete+insert only replaces keys it inserts). -#}
{% macro delete_vanished_subjects(staging) %}
    {% if is_incremental() %}
    delete from {{ this }}
    where subject_pseudonym not in (select subject_pseudonym from {{ staging }})
    {% endif %}
{% endmacro %}
