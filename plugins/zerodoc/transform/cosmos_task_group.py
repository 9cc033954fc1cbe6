"""Per-model dbt tasks in Airflow: a Cosmos watcher task group rendered from a precompiled manifest.

Not named cosmos.py: Airflow imports every plugins/ file as a top-level module named after its
stem, and a `cosmos` module there would shadow the astronomer-cosmos package.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zerodoc.config import Settings, restored_environ
from zerodoc.transform.runner import target_dir

log = logging.getLogger(__name__)

PROJECT_NAME = "zerodoc"
PROFILE_NAME = "zerodoc"
TARGET_NAME = "warehouse"
WAREHOUSE_POOL = "warehouse_writer"
MODES = ("single", "watcher")
# run_dbt needs a logical date; the parsed manifest does not depend on it (the date is read at run time).
PARSE_DS = "2026-01-01"
_FAILED = {"error", "fail", "failed", "runtime error"}
_TERMINAL = {"success", "pass", "warn", "skipped", *_FAILED}


def dbt_tasks_mode(deployment: str | None = None) -> str:
    """ZERODOC_DBT_TASKS: `single` (one dbt_build task) or `watcher` (one task per model).

    Unset: `watcher` in the cluster deployment, `single` in the embedded one, where dag.test()
    runs tasks one after another and every per-model task costs time (docs/dbt.md has figures).
    """
    deployment = deployment or os.environ.get("ZERODOC_DEPLOYMENT", "embedded")
    default = "watcher" if deployment == "cluster" else "single"
    mode = os.environ.get("ZERODOC_DBT_TASKS", "").strip().lower() or default
    if mode not in MODES:
        raise ValueError(f"ZERODOC_DBT_TASKS must be one of {MODES}, not {mode!r}")
    return mode


def manifest_path(cfg: Settings | None = None) -> Path:
    """The manifest DAG parsing reads: a copy of `dbt parse`'s, never the one `dbt build` rewrites."""
    return (cfg or Settings.from_env()).home / "dbt" / "render" / "manifest.json"


def ensure_manifest(cfg: Settings | None = None) -> Path:
    """Run `dbt parse` (through the runner) and publish its manifest atomically for DAG parsing.

    Called before any DAG is parsed (`zerodoc run`, `zerodoc cluster up`, the compose init
    service): the DAG file itself never runs dbt. A reader never sees a half-written file.
    """
    from zerodoc.transform.runner import run_dbt

    cfg = cfg or Settings.from_env()
    run_dbt(["parse"], ds=PARSE_DS, cfg=cfg)
    return _publish_manifest(target_dir(cfg) / "manifest.json", manifest_path(cfg))


def ensure_manifest_for_mode(cfg: Settings | None = None, deployment: str | None = None) -> Path | None:
    """`ensure_manifest` when publish_shared will render per-model tasks.

    With a single dbt_build task, only a `dbt parse` on a home that has never been parsed: it leaves
    dbt's partial-parse state in the target directory, so the first build parses incrementally like
    every later one instead of parsing the whole project inside the pipeline (10 s on a slow 2-core
    host). This is the install step that `zerodoc run` and the benchmarks' set-up call, next to
    Airflow's `db migrate`; as in a deployment that ships the project parsed, a changed project is
    still re-parsed by the build itself, where needed.
    """
    if dbt_tasks_mode(deployment) == "watcher":
        return ensure_manifest(cfg)
    from zerodoc.transform.runner import run_dbt

    cfg = cfg or Settings.from_env()
    if not (target_dir(cfg) / "partial_parse.msgpack").exists():
        run_dbt(["parse"], ds=PARSE_DS, cfg=cfg)
    return None


def _publish_manifest(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".manifest.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def dbt_task_group(
    group_id: str = "dbt",
    *,
    cfg: Settings | None = None,
    manifest: Path | None = None,
    ds_template: str = "{{ ds }}",
    live: bool = True,
    select: list[str] | None = None,
    **task_group_kwargs: Any,
):
    """A Cosmos `DbtTaskGroup` in watcher mode: one `dbt build` (the producer), one task per model.

    LoadMode.DBT_MANIFEST only reads `manifest` (see `ensure_manifest`): parsing never runs dbt.
    The producer runs `steps.dbt_build_step` — the same build as the single-task design, with its
    vars, target dir, pseudonym plugin env, lineage events and dbt docs — and reports each node's
    result as it finishes; per model, a `run` task ends with the model's status and a `test` task
    with its tests' (Cosmos' consumer sensors, deferrable through the triggerer). Only the
    producer takes the `warehouse_writer` pool slot: it is the one dbt process, so the one writer.

    `live=True` starts the consumers with the producer (they follow the build as it runs; needs a
    scheduler and a triggerer). `live=False` starts them once the producer has finished, which is
    what dag.test() needs: it runs one task at a time, so a consumer started first would wait for
    a producer that can never start.
    """
    from cosmos import (
        DbtTaskGroup,
        ExecutionConfig,
        ExecutionMode,
        LoadMode,
        ProfileConfig,
        ProjectConfig,
        RenderConfig,
        TestBehavior,
    )
    from cosmos.constants import PRODUCER_WATCHER_DONE_TASK_ID, PRODUCER_WATCHER_TASK_ID, InvocationMode

    cfg = cfg or Settings.from_env()
    manifest = Path(manifest or manifest_path(cfg))
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} missing: run `dbt parse` at build time, never at DAG parse")
    project_dir = cfg.dbt_project_dir
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            dbt_project_path=project_dir,
            manifest_path=manifest,
            project_name=PROJECT_NAME,
            install_dbt_deps=False,  # no packages; `dbt deps` would need the internet
            dbt_vars={"ds": ds_template},
        ),
        profile_config=ProfileConfig(
            profile_name=PROFILE_NAME,
            target_name=TARGET_NAME,
            profiles_yml_filepath=project_dir / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.WATCHER,
            invocation_mode=InvocationMode.DBT_RUNNER,
            setup_operator_args={"pool": WAREHOUSE_POOL, "pool_slots": 1},
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            select=select or [],
            enable_mock_profile=False,
        ),
        # Our own Assets are the published datasets; per-model Cosmos assets would only add noise.
        operator_args={"install_deps": False, "emit_datasets": False},
        **task_group_kwargs,
    )
    producer = group.children[f"{group_id}.{PRODUCER_WATCHER_TASK_ID}"]
    done = group.children[f"{group_id}.{PRODUCER_WATCHER_DONE_TASK_ID}"]
    # Cosmos instantiates its operators from fixed class paths; ours differ only in the methods
    # overridden below (how dbt is invoked, what a retry does), so the instances are re-classed.
    producer.__class__ = _producer_class()
    sensor_classes = _sensor_classes()
    for t in group.iter_tasks():
        if t is producer or t is done:
            continue
        t.__class__ = sensor_classes.get(type(t).__name__, type(t))
        t.poke_interval = 2
        t.retries = 1  # a retry only re-reads the producer's answer (see no_own_dbt_run)
        t.retry_delay = dt.timedelta(seconds=5)
        t.retry_exponential_backoff = 0
        if not live and not t.upstream_task_ids:
            producer >> t
            t.trigger_rule = "all_done"
    return group


def model_task_ids(group, model: str) -> list[str]:
    """The task(s) whose success means `model` was built and its tests passed in this run."""
    # With tests, Cosmos nests `<model>.run` and `<model>.test` in a group; without, one `<model>_run`.
    prefix, alone = f"{group.group_id}.{model}.", f"{group.group_id}.{model}_run"
    ids = [t.task_id for t in group.iter_tasks() if t.task_id.startswith(prefix) or t.task_id == alone]
    if not ids:
        raise KeyError(f"model {model!r} has no task in group {group.group_id!r}")
    return sorted(ids)


# ---- the producer: one dbt build through the runner, each node's result pushed as it finishes ----


@contextlib.contextmanager
def dbt_json_events(on_line: Callable[[str], None]) -> Iterator[None]:
    """Have the dbt invocations inside this block print JSON events, and hand each line to `on_line`.

    dbt's console logger binds sys.stdout when an invocation starts, so redirecting it here
    captures every event the build prints (a model's or test's result carries its node status).
    """
    sink = _LineSink(on_line)
    with restored_environ("DBT_LOG_FORMAT"), contextlib.redirect_stdout(sink):
        os.environ["DBT_LOG_FORMAT"] = "json"
        try:
            yield
        finally:
            sink.flush()


class _LineSink:
    def __init__(self, on_line: Callable[[str], None]) -> None:
        self._buffer = ""
        self._on_line = on_line

    def write(self, s: str) -> int:
        self._buffer += s
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line:
                self._on_line(line)
        return len(s)

    def flush(self) -> None:
        if self._buffer:
            line, self._buffer = self._buffer, ""
            self._on_line(line)


def node_results(path: Path, since: float) -> list[tuple[str, str, str]]:
    """(unique_id, status, message) of every node in dbt's run_results.json, if this build wrote it."""
    if not path.exists() or path.stat().st_mtime < since:
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    return [(r["unique_id"], str(r["status"]), r.get("message") or "") for r in data.get("results", [])]


@functools.cache
def _producer_class():
    from cosmos.operators._watcher.state import get_dbt_event_xcom_key, safe_xcom_push
    from cosmos.operators.watcher import DbtProducerWatcherOperator

    class ZeroDocDbtProducer(DbtProducerWatcherOperator):
        """Runs `steps.dbt_build_step` (the one dbt entry point) instead of Cosmos' own dbt call."""

        def execute(self, context: Any, **kwargs: Any) -> Any:
            from zerodoc.config import settings
            from zerodoc.orchestration import steps

            cfg = settings()
            ds = self.vars["ds"]
            ti = context["ti"]
            # Cosmos reads compiled SQL from <project_dir>/target: our target dir's parent.
            extra = {"context": context, "project_dir": str(target_dir(cfg).parent)}
            # Per execution: skipped tests are dropped from these (see _drop_skipped_test).
            self.tests_per_model = {m: list(t) for m, t in self.tests_per_model.items()}
            self.test_results_per_model = {}
            parse = self._make_parse_callable()
            seen: set[str] = set()

            def feed(unique_id: str | None, status: str | None, line: str) -> None:
                # Later invocations in the step (dbt docs) must not overwrite a node's build result.
                if unique_id in seen:
                    return
                if unique_id and status in _TERMINAL:
                    seen.add(unique_id)
                    if status == "skipped" and unique_id.startswith("test."):
                        self._drop_skipped_test(ti, unique_id)
                        return
                parse(line, extra)

            def on_line(line: str) -> None:
                try:
                    node = json.loads(line).get("data", {}).get("node_info") or {}
                except (json.JSONDecodeError, AttributeError):
                    log.info("%s", line)
                    return
                feed(node.get("unique_id"), node.get("node_status"), line)

            started = time.time()
            failure: BaseException | None = None
            try:
                with dbt_json_events(on_line):
                    result = steps.dbt_build_step(ds)
            except BaseException as exc:
                failure = exc
            # dbt's run_results.json is the record of the build: report whatever the live events missed.
            for unique_id, status, message in node_results(target_dir(cfg) / "run_results.json", started):
                feed(unique_id, status, _event_line(unique_id, status))
                if status in _FAILED:
                    # The consumer logs this at error level: dbt's own words on the model's task.
                    safe_xcom_push(task_instance=ti, key=get_dbt_event_xcom_key(unique_id),
                                   value={"status": status, "start_time": None, "finish_time": None, "msg": message})
            if failure is not None:
                # A node dbt never reached did not build for this ds: its task fails too, and no
                # consumer is left waiting (nor falls back to a dbt run of its own).
                for unique_id in self._watched_nodes(context):
                    feed(unique_id, "failed", _event_line(unique_id, "failed"))
            safe_xcom_push(task_instance=ti, key="task_status", value="completed")
            if failure is not None:
                raise failure
            _publish_manifest(target_dir(cfg) / "manifest.json", manifest_path(cfg))
            return result

        def _drop_skipped_test(self, ti: Any, test_id: str) -> None:
            """A test dbt skipped (another model it checks failed) no longer counts for any model.

            Cosmos would count it as failed for every model the test touches, so a relationships
            test from a broken mart would also fail the healthy model it points at, and block
            datasets that never depended on the broken one.
            """
            from cosmos.operators._watcher.aggregation import get_aggregated_test_status, get_tests_status_xcom_key

            for model_id, test_ids in self.tests_per_model.items():
                if test_id in test_ids:
                    test_ids.remove(test_id)
                    status = get_aggregated_test_status(model_id, self.tests_per_model, self.test_results_per_model)
                    if status is not None:
                        safe_xcom_push(task_instance=ti, key=get_tests_status_xcom_key(model_id), value=status)

        def _watched_nodes(self, context: Any) -> list[str]:
            ids = [uid for uids in self.tests_per_model.values() for uid in uids]
            group = self.task_group
            for task in group.iter_tasks() if group is not None else ():
                uid = getattr(task, "model_unique_id", None)
                if uid:
                    ids.append(uid)
            return sorted(set(ids))

    return ZeroDocDbtProducer


def _event_line(unique_id: str, status: str) -> str:
    resource_type = unique_id.split(".", 1)[0]
    return json.dumps({
        "info": {"name": "NodeFinished", "msg": f"{unique_id}: {status} (from run_results)", "level": "info"},
        "data": {"node_info": {"unique_id": unique_id, "node_status": status, "resource_type": resource_type}},
    })


@functools.cache
def _sensor_classes() -> dict[str, type]:
    from airflow.sdk.exceptions import AirflowFailException
    from cosmos.operators.watcher import DbtRunWatcherOperator, DbtSeedWatcherOperator, DbtTestWatcherOperator

    def no_own_dbt_run(self, try_number: int, context: Any) -> bool:
        raise AirflowFailException(
            f"{self.model_unique_id}: the producer `{self.producer_task_id}` reported no success for it "
            "(its log names the failing node). Clear the producer to rebuild: this task never runs dbt "
            "itself, which would bypass the runner and the one-writer pool."
        )

    out = {}
    for base in (DbtRunWatcherOperator, DbtTestWatcherOperator, DbtSeedWatcherOperator):
        out[base.__name__] = type(f"ZeroDoc{base.__name__}", (base,), {
            "_fallback_to_non_watcher_run": no_own_dbt_run,
            "__module__": __name__,
            "__doc__": f"{base.__doc__ or ''}\nNever falls back to a dbt run of its own.",
        })
    return out
