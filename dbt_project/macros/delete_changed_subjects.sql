{#- The persons a person-keyed intermediate (append) must recompute: those logged in
    int_person_changes from `source_name` since the model was last built (so a run that failed before
    it leaves them for the next). The pre-hook deletes them and the model appends their rows again,
    so a person left with no staging row is simply not re-inserted. -#}
{% macro changed_subjects(source_name) %}
    select distinct subject_pseudonym
    from {{ ref('int_person_changes') }}
    where source = '{{ source_name }}' and changed_at > {{ last_built_at(this.name) }}
{% endmacro %}

{% macro delete_changed_subjects(source_name) %}
    {% if is_incremental() %}
    delete from {{ this }}
    where subject_pseudonym in ({{ changed_subjects(source_name) }})
    {% endif %}
{% endmacro %}
