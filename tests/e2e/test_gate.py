"""The severity gate through Airflow: a `fail` breach blocks only the datasets fed by that entity."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from zerodoc.config import settings
from zerodoc.orchestration.steps import gate_step
from zerodoc.publish.publisher import GateClosedError

GOOD_DS = "2026-11-02"
BAD_DS = "2026-11-03"
PERSONS = 1000  # the generator's minimum: every defect kind is planted


def _null_every_fifth_name(path) -> int:
    """Null `name` in 20% of the rows (same schema and layout), bumping their `updated_at` as the agency
    system does on every change (so the day's incremental window carries them); return how many
    rows the change touched: the window's rows, every one without a name."""
    table = pq.read_table(path)
    names = table.column("name")
    every_fifth = pa.array([i % 5 == 0 for i in range(table.num_rows)])
    nulled = pc.if_else(every_fifth, pa.scalar(None, pa.string()), names.combine_chunks())
    table = table.set_column(table.schema.get_field_index("name"), table.schema.field("name"), nulled)
    stamp = pa.scalar(dt.datetime.fromisoformat(BAD_DS).replace(hour=9), table.schema.field("updated_at").type)
    bumped = pc.if_else(every_fifth, stamp, table.column("updated_at").combine_chunks())
    table = table.set_column(table.schema.get_field_index("updated_at"), table.schema.field("updated_at"), bumped)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    live = pc.is_null(table.column("deleted_at"))  # a cancelled registration's tombstone has no name to check
    return pc.sum(pc.and_(every_fifth, live)).as_py()


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    from zerodoc.orchestration.local import apply_airflow_env

    home = tmp_path_factory.mktemp("gate_home")
    os.environ["ZERODOC_HOME"] = str(home)
    try:
        cfg = settings()
        apply_airflow_env(cfg)
        from zerodoc.orchestration.pipeline import run_pipeline
        from zerodoc.publish import store

        quiet = Console(quiet=True)
        good = run_pipeline(cfg, persons=PERSONS, seed=5, ds=GOOD_DS, console=quiet)
        before = {name: store.current(name, cfg).version for name in ("residence_v1", "income_v1")}
        null_names = _null_every_fifth_name(cfg.sources_dir / "mois" / "residents.parquet")
        bad = run_pipeline(cfg, persons=PERSONS, seed=5, ds=BAD_DS, console=quiet)
        after = {name: store.current(name, cfg) for name in ("residence_v1", "income_v1")}
        yield cfg, good, bad, before, after, null_names
    finally:
        os.environ.pop("ZERODOC_HOME", None)


@pytest.mark.e2e
def test_first_day_publishes_both_datasets(two_days) -> None:
    _, good, _, before, _, _ = two_days
    assert good.ok, good.problems
    assert all(v.startswith(GOOD_DS) for v in before.values()), before


@pytest.mark.e2e
def test_fail_breach_fails_the_gate_task_naming_check_rows_and_report(two_days) -> None:
    cfg, _, bad, _, _, null_names = two_days
    runs = {r.dag_id: r for r in bad.dag_runs}
    assert runs["ingest_mois"].state == "success"  # validation reports the breach; it does not crash
    assert runs["ingest_nts"].state == "success"
    publish = runs["publish_shared"]
    assert publish.state == "failed"
    assert "gate_residence_v1" in publish.failed_tasks
    assert not {"gate_income_v1", "publish_income_v1"} & set(publish.failed_tasks)

    residents = bad.entities["mois.residents"]
    assert residents["extraction"] == "incremental"  # the day's window: the rows the agency changed
    assert residents["gate_passed"] is False
    run_dir = cfg.reports_dir / "validation" / residents["run_id"]
    message = f"check name_not_null rejected {null_names} rows"
    assert message in residents["gate_message"] and str(run_dir / "report.html") in residents["gate_message"]
    # The exception gate_residence_v1 failed with (the task body is exactly this call).
    with pytest.raises(GateClosedError) as failure:
        gate_step("residence_v1", BAD_DS)
    assert f"residence_v1 not published for {BAD_DS}" in str(failure.value)
    assert message in str(failure.value) and str(run_dir / "report.html") in str(failure.value)
    assert "previous version stays current" in str(failure.value)
    gate_step("income_v1", BAD_DS)  # the other dataset's gate is open

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["quarantine_by_reason"]["name_not_null"] == null_names
    assert summary["extracted"] == summary["passed"] + summary["quarantined"]


@pytest.mark.e2e
def test_previous_version_stays_current_and_the_other_dataset_publishes(two_days) -> None:
    _, _, _, before, after, _ = two_days
    assert after["residence_v1"].version == before["residence_v1"]
    assert after["income_v1"].version.startswith(BAD_DS)
    assert after["income_v1"].metadata["published_for"] == BAD_DS


@pytest.mark.e2e
def test_reports_of_both_days_are_kept_and_logged(two_days) -> None:
    from zerodoc.audit.validation_log import log_path, verify_validation_log

    cfg, good, bad, _, _, _ = two_days
    index = (cfg.reports_dir / "index.html").read_text(encoding="utf-8")
    for summary in (good, bad):
        for entity in summary.entities.values():
            assert (cfg.reports_dir / "validation" / entity["run_id"] / "report.html").is_file()
            assert entity["run_id"] in index
    result = verify_validation_log(log_path(cfg.reports_dir))
    assert result.ok, result.problems
    assert result.records == len(good.entities) + len(bad.entities) >= 6  # every entity, both days
