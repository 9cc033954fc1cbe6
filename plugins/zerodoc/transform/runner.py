"""Run dbt in-process for one logical date, export marts to Parquet, and fingerprint mart contracts."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zerodoc.config import Settings, restored_environ
from zerodoc.fsutil import copy_atomic

MART_SCHEMA = "shared"
BUILD_AS_OF = "build_as_of"  # one row: the logical date the marts were last built as of
PARQUET_ROW_GROUP_SIZE = 122_880
_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# dbtRunner keeps global state (flags, adapter registry, env): one invocation per process at a time.
_DBT_LOCK = threading.Lock()
_FAILED = {"error", "fail", "runtime error"}
# The daily run: every model and data test, no unit tests. Unit tests check SQL logic on fixed
# fixture rows, not the day's data, so they run in CI (tests/transform) and on full builds, not on
# each logical date (docs/dbt.md "The daily run"). The pipeline and the benchmarks both use this.
DAILY_BUILD_ARGS = ("build", "--exclude-resource-type", "unit_test")
# Columns incremental models gained after warehouses were built without them: such a model has
# on_schema_change='fail', so the daily run would stop at it. (table, column, what changed.)
SCHEMA_MARKERS = (
    ("intermediate", "int_households_sized", "updated_at", "the affected-key models"),
    ("staging", "stg_mois__residents", "loaded_at", "staging's run stamps"),
)

# Run state of the incremental models (what changed, what a run recomputed, when each model was built,
# which keys staging deleted): a daily run and a full build differ there by design, so whoever checks
# that the two leave the same warehouse (the equivalence test, the dbt bench) leaves these out.
RUN_STATE_TABLES = frozenset({
    "intermediate.int_person_changes", "intermediate.int_build_window", "intermediate.int_affected_subjects",
    "intermediate.int_affected_households", "intermediate.affected_key_builds",
    "intermediate.int_enrolment_changes",
})  # fmt: skip


def is_run_state(table: str) -> bool:
    """Whether `schema.table` is run state (RUN_STATE_TABLES, or a staging model's `__deleted_keys` log)."""
    return table in RUN_STATE_TABLES or table.endswith("__deleted_keys")


class DbtRunError(RuntimeError):
    """dbt finished with failures; `summary` says which nodes failed and why."""

    def __init__(self, message: str, summary: RunSummary | None = None):
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    status: str
    execution_time: float
    message: str | None = None


@dataclass(frozen=True)
class RunSummary:
    args: tuple[str, ...]
    ds: str
    success: bool
    elapsed_s: float
    nodes: tuple[NodeResult, ...]

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.status in _FAILED)

    @property
    def warned(self) -> tuple[NodeResult, ...]:
        return tuple(n for n in self.nodes if n.status == "warn")

    def as_dict(self) -> dict:
        """Small, JSON-able summary (fit for XCom)."""
        return {
            "args": list(self.args),
            "ds": self.ds,
            "success": self.success,
            "elapsed_s": round(self.elapsed_s, 3),
            "counts": _count_statuses(self.nodes),
            "failed": [n.unique_id for n in self.failed],
            "warned": [n.unique_id for n in self.warned],
        }


def _count_statuses(nodes: tuple[NodeResult, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in nodes:
        counts[n.status] = counts.get(n.status, 0) + 1
    return counts


def target_dir(cfg: Settings) -> Path:
    """dbt's target dir, per ZERODOC_HOME: never shared by two homes (a shared one once gave a torn manifest)."""
    return cfg.home / "dbt" / "target"


def log_dir(cfg: Settings) -> Path:
    return cfg.home / "dbt" / "logs"


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """dbt's env_var() reads os.environ; set our values for the invocation and restore after."""
    with restored_environ(*values):
        os.environ.update(values)
        yield


def run_dbt(args: list[str], ds: str, cfg: Settings | None = None) -> RunSummary:
    """Invoke dbt (e.g. ["build"]) in-process for logical date `ds` (YYYY-MM-DD).

    Raises DbtRunError naming every failing node when dbt does not succeed.
    """
    from dbt.cli.main import dbtRunner

    if not _DS.match(ds):
        raise ValueError(f"ds must be YYYY-MM-DD, got {ds!r}")
    if any(a == "--vars" or a.startswith("--vars=") for a in args):
        raise ValueError("pass the logical date as ds=, not --vars: each run reads only its own partition")
    cfg = cfg or Settings.from_env()
    _ = cfg.pseudonym_key  # fail fast with ConfigError, before dbt wraps it in a plugin import error
    if args and args[0] in ("build", "run") and "--full-refresh" not in args:
        stale = warehouse_needs_full_refresh(cfg)
        if stale:
            raise DbtRunError(
                f"the warehouse {cfg.warehouse_path} was built before {stale}: rebuild it once with"
                f" `dbt build --full-refresh` for ds={ds} (zerodoc.transform.runner.run_dbt(['build',"
                f" '--full-refresh'], ds), or dbt_project/README.md by hand); daily runs work again after that"
            )
    cfg.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    project = cfg.dbt_project_dir
    full_args = [
        *args,
        "--project-dir", str(project),
        "--profiles-dir", str(project),
        "--target-path", str(target_dir(cfg)),
        "--log-path", str(log_dir(cfg)),
    ]  # fmt: skip
    # The date travels as ZERODOC_DS (a DuckDB session variable, zerodoc.transform.dbt_plugin), not
    # --vars: changed vars make dbt re-parse the whole project, i.e. on every new logical date.
    env = {"ZERODOC_WAREHOUSE": str(cfg.warehouse_path), "ZERODOC_HOME": str(cfg.home), "ZERODOC_DS": ds}
    with _DBT_LOCK, _env(**env):
        started = time.monotonic()
        try:
            res = dbtRunner().invoke(full_args)
        finally:
            _release_warehouse()
        elapsed = time.monotonic() - started

    nodes = tuple(
        NodeResult(
            unique_id=r.node.unique_id,
            status=str(getattr(r.status, "value", r.status)),
            execution_time=float(r.execution_time or 0.0),
            message=r.message,
        )
        for r in getattr(res.result, "results", None) or ()
        if getattr(r, "node", None) is not None
    )
    summary = RunSummary(tuple(args), ds, bool(res.success), elapsed, nodes)
    if not res.success:
        if summary.failed:
            detail = "; ".join(
                f"{n.unique_id} [{n.status}]: {_first_line(n.message)}" for n in summary.failed
            )
            raise DbtRunError(f"dbt {' '.join(args)} for ds={ds} failed: {detail}", summary)
        raise DbtRunError(f"dbt {' '.join(args)} for ds={ds} did not run: {res.exception}", summary)
    return summary


def warehouse_needs_full_refresh(cfg: Settings) -> str | None:
    """What the warehouse predates, when an incremental model in it lacks a column it has gained since
    (its daily run would fail on on_schema_change='fail'); None for a current or new warehouse."""
    import duckdb

    if not cfg.warehouse_path.exists():
        return None
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as con:
        found = set(
            con.execute("select table_schema, table_name, column_name from information_schema.columns").fetchall()
        )
    tables = {(s, t) for s, t, _ in found}
    for schema, table, column, change in SCHEMA_MARKERS:
        if (schema, table) in tables and (schema, table, column) not in found:
            return change
    return None


def _release_warehouse() -> None:
    """Close the DuckDB file dbt-duckdb keeps open in-process after a run.

    dbt-duckdb caches one environment per process and leaves its database handle open, which
    holds DuckDB's file lock: publishing (export_mart) and other processes could not open the
    warehouse until this process exits. dbt-duckdb has no public hook for this.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
        if env is not None:
            env.close()


def _first_line(message: str | None) -> str:
    return (message or "").strip().splitlines()[0] if message and message.strip() else ""


def _check_model_name(model: str) -> str:
    if not _IDENTIFIER.match(model):
        raise ValueError(f"not a model name: {model!r}")
    return model


def duckdb_memory_limit() -> str:
    """The same memory cap as dbt's connection (profiles.yml); DuckDB's default is 80 % of RAM."""
    return os.environ.get("ZERODOC_DBT_MEMORY_LIMIT", "3GB")


def export_mart(model: str, dest: Path, cfg: Settings | None = None, as_of: str | None = None) -> int:
    """Write mart `shared.<model>` to `dest` as Parquet (zstd, 122,880-row groups), atomically.

    Rows come in whatever order DuckDB's parallel scan yields them: a published version is named
    after its content (`content_digest`), not its bytes, so no sort is needed to make a rerun
    recognisable (sorting 10M rows on the pseudonym cost 4-7 s per mart at 10M persons). Models
    marked `published_as_of` get the build's as_of (`shared.build_as_of`) as their last column:
    mart rows do not repeat it, published versions do.
    With `as_of`, refuses (ValueError) when the warehouse was last built for another date.
    Returns the row count.
    """
    import duckdb

    cfg = cfg or Settings.from_env()
    relation = f"{MART_SCHEMA}.{_check_model_name(model)}"
    stamp = _published_as_of(model, cfg)
    config = {"memory_limit": duckdb_memory_limit(), "preserve_insertion_order": False}
    with duckdb.connect(str(cfg.warehouse_path), read_only=True, config=config) as con:
        built = con.execute(f"select cast(as_of as varchar) from {MART_SCHEMA}.{BUILD_AS_OF}").fetchall()
        if len(built) != 1:
            raise ValueError(f"{MART_SCHEMA}.{BUILD_AS_OF} holds {len(built)} rows, expected one")
        if as_of is not None and built[0][0] != as_of:
            raise ValueError(f"the warehouse was built as of {built[0][0]}, not {as_of}: run dbt for {as_of} first")
        select = (
            f"select m.*, b.as_of from {relation} as m cross join {MART_SCHEMA}.{BUILD_AS_OF} as b"
            if stamp
            else f"select m.* from {relation} as m"
        )
        # COPY answers the rows it wrote: no second pass (income_v1 is a view, computed again).
        return copy_atomic(con, select, Path(dest),
                           f"format parquet, compression zstd, row_group_size {PARQUET_ROW_GROUP_SIZE}")


def content_digest(path: Path) -> str:
    """sha256 (hex) of a Parquet file's content as a multiset of rows: column names and types, the
    row count, and the sum and xor of DuckDB's 64-bit hash of every row.

    The same rows in any order give the same digest; changing, adding or dropping a row, or
    renaming or retyping a column, gives another. It names published versions, so a rerun that
    exports the same data in another order is recognised as the same version. DuckDB does not
    promise `hash()` stays the same across its releases: after an upgrade, a rerun of an already
    published day may publish its data again under a new version name (nothing is lost or changed).
    One read of the file: ~1.5 s for a 10M-row mart.
    """
    import duckdb

    from zerodoc.sql import sql_literal

    with duckdb.connect(config={"memory_limit": duckdb_memory_limit()}) as con:
        source = f"read_parquet({sql_literal(str(path))})"
        columns = con.execute(f"describe select * from {source}").fetchall()
        rows, total, mixed = con.execute(
            f"select count(*), coalesce(sum(hash(r)::hugeint), 0), coalesce(bit_xor(hash(r)), 0) from {source} as r"
        ).fetchone()
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "columns": [[c[0], c[1]] for c in columns], "rows": int(rows), "sum": str(total), "xor": str(mixed),
    }, sort_keys=True).encode())
    return digest.hexdigest()


def _manifest(cfg: Settings) -> dict:
    manifest_path = target_dir(cfg) / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} missing: run dbt (parse or build) first")
    return json.loads(manifest_path.read_text())


def _manifest_node(model: str, cfg: Settings, manifest: dict | None = None) -> dict:
    manifest = manifest if manifest is not None else _manifest(cfg)
    node = manifest["nodes"].get(f"model.zerodoc.{_check_model_name(model)}")
    if node is None:
        raise KeyError(f"model {model!r} not in {target_dir(cfg) / 'manifest.json'}")
    return node


def _published_as_of(model: str, cfg: Settings, manifest: dict | None = None) -> bool:
    return bool(_manifest_node(model, cfg, manifest).get("config", {}).get("meta", {}).get("published_as_of"))


def contract_columns(model: str, cfg: Settings | None = None) -> list[tuple[str, str]]:
    """The published (name, data_type) pairs of a model, in order, from target/manifest.json.

    The model's contracted columns, then `as_of` (date) for models published with the build's as_of.
    """
    cfg = cfg or Settings.from_env()
    node = _manifest_node(model, cfg)
    if not node.get("contract", {}).get("enforced"):
        raise ValueError(f"model {model!r} has no enforced contract")
    columns = [(c["name"], (c.get("data_type") or "").lower()) for c in node["columns"].values()]
    if node.get("config", {}).get("meta", {}).get("published_as_of"):
        columns.append(("as_of", "date"))
    return columns


def contract_hash(model: str, cfg: Settings | None = None) -> str:
    """sha256 over the model's contracted column names and types: changes iff the interface changes."""
    payload = json.dumps(contract_columns(model, cfg), separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()
