-- One row: the logical date the shared marts in this warehouse were last built as of. Mart rows do
-- not carry it (a column equal on every row would make every row change every day, and defeat the
-- incremental marts); publishing stamps it on each version (zerodoc.transform.runner.export_mart).

with

final as (

    select {{ as_of_date() }} as as_of

)

select * from final
