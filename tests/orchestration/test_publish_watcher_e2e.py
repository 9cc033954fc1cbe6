"""Per-model dbt tasks through dag.test(): every model's task ends success; a broken model fails by name.

Heavy (the whole pipeline through Airflow): run under `flock /tmp/zerodoc-heavy.lock`.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow.parquet as pq
import pytest
from rich.console import Console

from zerodoc.catalog import datasets

DS = "2026-11-05"
PERSONS = 1000
BROKEN = "model.zerodoc.stg_nts__incomes"


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


@pytest.fixture(scope="module")
def watcher_runs(tmp_path_factory):
    from zerodoc.config import restored_environ, settings
    from zerodoc.orchestration.local import apply_airflow_env

    home = tmp_path_factory.mktemp("watcher_home")
    with restored_environ("ZERODOC_HOME", "ZERODOC_DBT_TASKS"):
        os.environ.update({"ZERODOC_HOME": str(home), "ZERODOC_DBT_TASKS": "watcher"})
        cfg = settings()
        apply_airflow_env(cfg)
        from airflow.dag_processing.dagbag import DagBag

        from tests.conftest import REPO
        from zerodoc.orchestration.local import ensure_metadata_db, output_to
        from zerodoc.orchestration.pipeline import run_pipeline
        from zerodoc.publish import store

        # Earlier tests in this process may have left publish_shared runs in the same metadata DB
        # (Airflow keeps the first AIRFLOW_HOME it saw): take the run this pipeline made.
        ensure_metadata_db(cfg)  # run_pipeline would create it too; the query below needs it first
        seen = {r.run_id for r in _dag_runs("publish_shared")}
        good = run_pipeline(cfg, persons=PERSONS, seed=7, ds=DS, console=Console(quiet=True))
        assert good.ok, good.problems
        bag = DagBag(dag_folder=str(REPO / "dags" / "publish_shared.py"))
        dag = bag.dags["publish_shared"]
        new_runs = [r for r in _dag_runs("publish_shared") if r.run_id not in seen]
        assert len(new_runs) == 1, [(r.run_id, r.start_date) for r in new_runs]
        good_run = new_runs[0]
        good_states = _states(good_run)
        before = {name: store.current(name, cfg).version for name in datasets()}

        # Break one staging model: NTS income loses a column its SQL selects (a binder error in dbt).
        part = cfg.validated_dir / "nts" / "income" / f"ds={DS}" / "part-0.parquet"
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["tax_year"]), part)
        # A producer retry would only rebuild the same failure twice more (30 s + 60 s of waiting).
        dag.task_dict["dbt.dbt_producer_watcher"].retries = 0
        with output_to(home / "logs" / "broken.log"):
            bad_run = dag.test(
                logical_date=dt.datetime.fromisoformat(DS).replace(tzinfo=dt.UTC) + dt.timedelta(days=1),
                run_conf={"ds": DS},
            )
        after = {name: store.current(name, cfg).version for name in datasets()}
        reports = _producer_xcoms(bad_run, "model__zerodoc__stg_nts__incomes_")
        from zerodoc.transform.cosmos_task_group import manifest_path

        nodes = json.loads(manifest_path(cfg).read_text())["nodes"]
        good_states["_models_and_seeds"] = sorted(
            n["name"] for n in nodes.values() if n["resource_type"] in ("model", "seed")
        )
        yield good_states, bad_run, _states(bad_run), before, after, reports, _downstream(nodes, BROKEN)


def _downstream(nodes: dict, root: str) -> set[str]:
    """Names of the models built from `root` (transitively), from the manifest's depends_on."""
    out, grew = {root}, True
    while grew:
        grew = False
        for uid, n in nodes.items():
            if n["resource_type"] == "model" and uid not in out and out & set(n["depends_on"]["nodes"]):
                out.add(uid)
                grew = True
    return {uid.split(".")[-1] for uid in out - {root}}


def _producer_xcoms(dr, prefix: str) -> dict:
    """What the producer reported for one node (XCom keys `<node>_status`, `<node>_dbt_event`)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.dag_id == dr.dag_id, XComModel.run_id == dr.run_id,
            XComModel.task_id == "dbt.dbt_producer_watcher",
            XComModel.key.in_([f"{prefix}status", f"{prefix}dbt_event"]),
        ).all()
        return {r.key.removeprefix(prefix): r.value for r in rows}


def _dag_runs(dag_id: str):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id).all()
        session.expunge_all()
    return runs


@pytest.mark.e2e
def test_every_model_task_ends_success(watcher_runs) -> None:
    good, *_ = watcher_runs
    per_model = {t: s for t, s in good.items() if t.startswith("dbt.") and "producer_watcher" not in t}
    for d in datasets().values():
        assert good[f"dbt.{d.model}.run"] == "success" and good[f"dbt.{d.model}.test"] == "success", d.model
    # every model and seed of the manifest has its task(s) in the grid, and all ended success
    for name in good["_models_and_seeds"]:
        assert any(t == f"dbt.{name}_run" or t.startswith(f"dbt.{name}.") for t in per_model), name
    assert set(per_model.values()) == {"success"}, per_model
    assert good["dbt.dbt_producer_watcher"] == "success"
    assert {s for t, s in good.items() if t.startswith("publish_")} == {"success"}


@pytest.mark.e2e
def test_a_broken_model_fails_by_name_and_only_its_datasets_keep_their_version(watcher_runs) -> None:
    _, bad_run, bad, before, after, reports, downstream = watcher_runs
    assert str(bad_run.state) == "failed"
    assert bad["dbt.dbt_producer_watcher"] == "failed"
    assert bad["dbt.stg_nts__incomes.run"] == "failed"
    # The producer's report for that model: dbt's status and dbt's own error text.
    assert reports["status"]["status"] == "error"
    assert "stg_nts__incomes" in reports["dbt_event"]["msg"] and "tax_year" in reports["dbt_event"]["msg"], reports
    # Its dependents never ran; models beside it ended as dbt built them.
    assert bad["dbt.stg_nts__incomes.test"] == "upstream_failed"
    assert "income_v1" in downstream and "stg_mois__residents" not in downstream
    for task_id, state in bad.items():
        name = task_id.removeprefix("dbt.").split(".")[0].removesuffix("_run")
        if task_id.startswith("dbt.") and "producer_watcher" not in task_id and name != "stg_nts__incomes":
            assert state == ("upstream_failed" if name in downstream else "success"), (task_id, state)
    built_beside = [name for name, d in datasets().items() if d.model not in downstream]
    assert built_beside, "every dataset depends on NTS income: pick another model to break"
    for name, d in datasets().items():
        expected = "upstream_failed" if d.model in downstream else "success"
        assert bad[f"publish_{name}"] == expected, name
        # Every dataset built from the broken model keeps the version it had.
        if d.model in downstream:
            assert after[name] == before[name], name
