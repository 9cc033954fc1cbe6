-- The Youth Leap Accounts open today, one row per account: an active holder cannot open another,
-- so youth_leap_eligibility_v1 excludes them. Rebuilt whole each run (a registry of ~1 in 30 persons).
-- It is also the "last built" copy int_person_changes reads by name, before this run replaces it,
-- to find the holder of an account that changed or vanished; hence built after that change log.
-- Closed accounts are left out: one closing or vanishing changes nobody's eligibility again.

-- depends_on: {{ ref('int_person_changes') }}

with

accounts as (

    select * from {{ ref('stg_fsc__youth_leap_accounts') }}

),

final as (

    select
        account_id,
        subject_pseudonym,
        opened_on

    from accounts
    where is_active

)

select * from final
