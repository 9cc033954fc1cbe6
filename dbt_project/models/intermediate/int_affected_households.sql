-- Households whose rows the affected-key models recompute this run (macros/affected_keys.sql):
-- households whose registry row changed or vanished, the old and new household of every person
-- whose registry row changed, and the household of every person whose income changed. Empty on a
-- full window (int_build_window.is_full) and on --full-refresh: the consumers recompute every
-- household then without reading it (macros/affected_keys.sql, reads_affected_keys).

with

build_window as (

    select * from {{ ref('int_build_window') }}

),

changes as (

    select * from {{ ref('int_person_changes') }}

),

residents as (

    select * from {{ ref('int_residents_deduplicated') }}

),

pending as (

    {{ pending_changes('changes', 'build_window') }}

),

affected as (

    select household_id from pending where household_id is not null
    union
    select residents.household_id
    from residents
    semi join pending
        on residents.subject_pseudonym = pending.subject_pseudonym

),

final as (

    select household_id
    from affected
    where household_id is not null
        -- On a full window every consumer recomputes every key (reads_affected_keys): none reads this.
        and not (select is_full from build_window)
    {% if flags.FULL_REFRESH %}
        and false
    {% endif %}

)

select * from final
