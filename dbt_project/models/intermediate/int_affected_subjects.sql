-- Persons whose rows the affected-key models recompute this run (macros/affected_keys.sql): persons
-- whose registry or income rows changed or vanished, every member of an affected household (its
-- size, head or income changed), and persons whose age in full years differs between the date the
-- models were last built as of and this one (a birthday crossed, in either direction). Empty on a
-- full window (int_build_window.is_full) and on --full-refresh: the consumers recompute everyone then
-- without reading it (macros/affected_keys.sql, reads_affected_keys).

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

affected_households as (

    select * from {{ ref('int_affected_households') }}

),

pending as (

    {{ pending_changes('changes', 'build_window') }}

),

birthdays_crossed as (

    select residents.subject_pseudonym
    from residents
    cross join build_window
    where not build_window.is_full
        and build_window.previous_as_of_low is not null
        -- CASE evaluates the second date only when the models were last built on different dates.
        and case
            when build_window.previous_as_of_low = build_window.previous_as_of_high
                then {{ age_on('residents.born_on', 'build_window.as_of') }}
                    <> {{ age_on('residents.born_on', 'build_window.previous_as_of_low') }}
            else {{ age_on('residents.born_on', 'build_window.as_of') }}
                    <> {{ age_on('residents.born_on', 'build_window.previous_as_of_low') }}
                or {{ age_on('residents.born_on', 'build_window.as_of') }}
                    <> {{ age_on('residents.born_on', 'build_window.previous_as_of_high') }}
        end

),

affected as (

    select subject_pseudonym from pending
    union
    select residents.subject_pseudonym
    from residents
    semi join affected_households
        on residents.household_id = affected_households.household_id
    union
    select subject_pseudonym from birthdays_crossed

),

final as (

    select subject_pseudonym
    from affected
    where subject_pseudonym is not null
        -- On a full window every consumer recomputes every key (reads_affected_keys): none reads this.
        and not (select is_full from build_window)
    {% if flags.FULL_REFRESH %}
        and false
    {% endif %}

)

select * from final
