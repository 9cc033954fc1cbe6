{#- Pre-hook of the person-keyed intermediates (append): delete every person logged as changed this
    run in int_person_changes; the model then inserts their rows again, so a person left with no
    staging row is simply not re-inserted. Probes the table with the few changed persons instead of
    scanning staging for vanished ones. -#}
{% macro delete_changed_subjects(source_name) %}
    {% if is_incremental() %}
    delete from {{ this }}
    where subject_pseudonym in (
        select subject_pseudonym
        from {{ ref('int_person_changes') }}
        where source = '{{ source_name }}' and changed_at = {{ run_started_at_ts() }}
    )
    {% endif %}
{% endmacro %}
