"""Validate one raw partition with its GX suite on DuckDB, split it into validated and quarantine, report."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from zerodoc.audit.validation_log import append_run, log_path, sha256_file
from zerodoc.config import Settings, settings
from zerodoc.fsutil import staged_dir, write_json_atomic
from zerodoc.quality.identifiers import duckdb_macros_sql
from zerodoc.quality.report import mask_value, render_index, render_report
from zerodoc.quality.suite import (
    Check,
    Suite,
    load_suite,
    sql_ident,
    sql_literal,
    to_gx_suite,
    unexpected_predicate,
)

ROW_GROUP_SIZE = 122_880  # DuckDB's own row-group size; >= 100k keeps readers efficient
# GX keeps no unexpected values: its samples would put raw registration numbers into Data Docs (the
# run report shows masked samples instead), and for a check nothing fails, fetching them is one more
# full scan that finds nothing. Counts and percentages are unaffected.
PARTIAL_UNEXPECTED_COUNT = 0
DUCKDB_MEMORY_LIMIT = "2GB"
REASONS_TYPE = pa.list_(
    pa.struct(
        [
            ("expectation_id", pa.string()),
            ("expectation_type", pa.string()),
            ("severity", pa.string()),
            ("reason", pa.string()),
        ]
    )
)


TOMBSTONE_OP_COLUMN = "_op"


def tombstone_check(key: str) -> Check:
    return Check(
        id="tombstone_has_key", type="expect_column_values_to_not_be_null", kwargs={"column": key},
        severity="fail",
        description="A tombstone (_op = 'delete') names the record it deletes; its other fields are empty by design.",
    )


def _may_hold_tombstones(raw_path: Path, schema: pa.Schema) -> bool:
    """Whether any row group's `_op` statistics admit 'delete': a partition without tombstones is
    validated exactly as before they existed (no filtered view, no extra check)."""
    i = schema.get_field_index(TOMBSTONE_OP_COLUMN)
    if i < 0:
        return False
    meta = pq.ParquetFile(raw_path).metadata
    for rg in range(meta.num_row_groups):
        stats = meta.row_group(rg).column(i).statistics
        if stats is None or not stats.has_min_max or stats.min <= "delete" <= stats.max:
            return True
    return False


class AccountingError(RuntimeError):
    """extracted != passed + quarantined: rows were lost or duplicated by the split."""


class CrossCheckError(RuntimeError):
    """GX and the DuckDB predicate disagree on how many rows a check rejects."""


class GxExecutionError(RuntimeError):
    """GX could not evaluate an expectation (the message carries GX's own exception)."""


@dataclass(frozen=True)
class CheckResult:
    id: str
    type: str
    severity: str
    description: str
    unexpected_count: int
    unexpected_percent: float
    success: bool


@dataclass(frozen=True)
class ValidationOutcome:
    run_id: str
    suite: str
    logical_date: str
    extracted: int
    passed: int
    quarantined: int
    checks: tuple[CheckResult, ...]
    gate_passed: bool
    gate_message: str
    report_path: Path
    data_docs_path: Path
    validated_path: Path
    quarantine_path: Path
    # Wall seconds per phase (gx: the checkpoint with Data Docs; row_pass: the independent
    # per-row evaluation and cross-check; zones: writing validated and quarantine). For the
    # benchmark and logs only: never written to the reports, which must not change on a rerun.
    timings: dict[str, float] = field(default_factory=dict, compare=False)


def validate_partition(
    suite_name: str, raw_path: Path, logical_date: str, cfg: Settings | None = None
) -> ValidationOutcome:
    """Run `suite_name` on the raw Parquet partition; write validated, quarantine and the run's reports.

    Rerunning with the same data gives the same run id and replaces that run's outputs atomically;
    every run, rerun included, appends a record to the hash-chained validation log.
    Raises CrossCheckError / AccountingError when the engines disagree or rows go missing; a failed
    quality gate is reported in the outcome, not raised (the caller decides what to block).
    """
    cfg = cfg or settings()
    raw_path = Path(raw_path)
    suite = load_suite(suite_name, cfg.expectations_dir)
    checksum = data_checksum(raw_path)
    run_id = f"{suite.name}__{logical_date}__{checksum[:8]}"
    partition = Path(suite.agency) / suite.entity_name / f"ds={logical_date}"
    run_dir = cfg.reports_dir / "validation" / run_id
    validated_dir = cfg.validated_dir / partition
    quarantine_dir = cfg.quarantine_dir / partition

    cfg.home.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=cfg.home, prefix=".validate-"))
    try:
        with staged_dir(run_dir) as stage:
            db = _Scratch(scratch / "batch.duckdb")
            try:  # the in-memory database lives until its last connection closes, failure or not
                extracted = db.load(raw_path)
                started = time.perf_counter()
                gx_counts = _run_gx(suite, db, stage / "data_docs", run_id, logical_date)
                db.timings["gx"] = time.perf_counter() - started
                checks, reason_counts, passed, quarantined, samples = db.split(
                    suite, validated_dir, quarantine_dir, gx_counts
                )
            finally:
                db.close()

            gate_passed, gate_message = _gate(suite, checks, run_dir / "report.html")
            summary = {
                "suite": suite.name,
                "suite_version": suite.version,
                "suite_hash": suite.sha256,
                "entity": suite.entity,
                "run_id": run_id,
                "logical_date": logical_date,
                "raw_path": str(raw_path),
                "data_checksum": checksum,
                "extraction": extraction(raw_path),
                "extracted": extracted,
                "passed": passed,
                "quarantined": quarantined,
                "checks": [asdict(c) for c in checks],
                "quarantine_by_reason": reason_counts,
                "gate": {
                    "max_fail_percent": suite.max_fail_percent,
                    "passed": gate_passed,
                    "message": gate_message,
                },
                "validated_path": str(validated_dir / "part-0.parquet"),
                "quarantine_path": str(quarantine_dir / "part-0.parquet"),
            }
            write_json_atomic(stage / "summary.json", summary)
            (stage / "report.html").write_text(render_report(summary, samples, suite), encoding="utf-8")
        _refresh_index(cfg)
        append_run(
            log_path(cfg.reports_dir),
            suite=suite.name,
            suite_version=suite.version,
            suite_hash=suite.sha256,
            run_id=run_id,
            logical_date=logical_date,
            data_checksum=checksum,
            extracted=extracted,
            passed=passed,
            quarantined=quarantined,
            gate_passed=gate_passed,
            report_path=str((run_dir / "report.html").relative_to(cfg.reports_dir)),
            summary_sha256=sha256_file(run_dir / "summary.json"),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    return ValidationOutcome(
        run_id=run_id,
        suite=suite.name,
        logical_date=logical_date,
        extracted=extracted,
        passed=passed,
        quarantined=quarantined,
        checks=tuple(checks),
        gate_passed=gate_passed,
        gate_message=gate_message,
        report_path=run_dir / "report.html",
        data_docs_path=run_dir / "data_docs" / "index.html",
        validated_path=validated_dir / "part-0.parquet",
        quarantine_path=quarantine_dir / "part-0.parquet",
        timings={k: round(v, 3) for k, v in db.timings.items()},
    )


def extraction(raw_path: Path) -> dict[str, Any]:
    """What the partition is, from its manifest: a full snapshot, or an incremental window (which rows)."""
    manifest = raw_path.parent / "_manifest.json"
    m = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else {}
    out: dict[str, Any] = {"mode": "incremental" if "window" in m else "full"}
    if m.get("mode_reason"):
        out["reason"] = m["mode_reason"]
    if "window" in m:
        out["window"] = m["window"]
    return out


def data_checksum(raw_path: Path) -> str:
    """The extract's checksum from `_manifest.json` beside the file, else sha256 of the file itself."""
    manifest = raw_path.parent / "_manifest.json"
    if manifest.is_file():
        checksum = json.loads(manifest.read_text(encoding="utf-8")).get("checksum")
        if checksum:
            return str(checksum).removeprefix("sha256:")
    digest = hashlib.sha256()
    with open(raw_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- DuckDB side ---------------------------------------------------------------------------------


def _connect_args(threads: int | None = None) -> dict[str, Any]:
    # GX and our own connection must open the scratch file with identical config, or DuckDB refuses
    # the second one; both go through duckdb_engine for that reason.
    config: dict[str, Any] = {"memory_limit": DUCKDB_MEMORY_LIMIT, "preserve_insertion_order": False}
    if threads:
        config["threads"] = threads
    return {"config": config}


class _Scratch:
    """The run's private DuckDB database: `batch` (a view of the raw rows) and the identifier macros.

    An in-memory database named after the run's scratch directory, which GX's own engine opens by
    the same name (DuckDB shares a named `:memory:` database between the process's connections while
    one is open): nothing of it goes to disk but spills, and queries run measurably faster than
    against a database file. `path`'s directory holds the spill files.
    """

    def __init__(self, path: Path) -> None:
        import sqlalchemy as sa

        self.path = path
        self.url = f"duckdb:///:memory:zd_{path.parent.name.strip('.').replace('-', '_')}"
        self.timings: dict[str, float] = {}
        self.connect_args = _connect_args()
        self._engine = sa.create_engine(self.url, connect_args=self.connect_args, poolclass=sa.pool.NullPool)
        self._raw = self._engine.raw_connection()
        self.con = self._raw.driver_connection
        self.con.execute(f"SET temp_directory = {sql_literal(str(path.parent / 'spill'))}")

    def close(self) -> None:
        self._raw.close()
        self._engine.dispose()

    def load(self, raw_path: Path) -> int:
        for macro in duckdb_macros_sql():
            self.con.execute(macro)
        # A view, not a copy: GX and the split each scan the Parquet file directly, which costs less
        # than materialising millions of rows first. hive_partitioning off: `ds=<date>` is no column.
        self.source = f"read_parquet({sql_literal(str(raw_path))}, hive_partitioning = false"
        self.raw_schema = pq.read_schema(raw_path)
        self.raw_columns = self.raw_schema.names
        # Tombstones (zerodoc.sources.extract.with_ops) carry no payload: the suite sees live rows only.
        self.has_tombstones = _may_hold_tombstones(raw_path, self.raw_schema)
        live = f" WHERE {TOMBSTONE_OP_COLUMN} IS DISTINCT FROM 'delete'" if self.has_tombstones else ""
        self.con.execute(f"CREATE VIEW batch AS SELECT * FROM {self.source}){live}")
        self.raw_path = raw_path
        self.extracted = pq.ParquetFile(raw_path).metadata.num_rows
        return self.extracted

    def _write(self, query: str, schema: pa.Schema, path: Path) -> None:
        """Stream `query` into Parquet with exactly `schema` (DuckDB's own COPY would restate
        nullability and types its way), one row group per ROW_GROUP_SIZE rows."""
        reader = self.con.sql(query).to_arrow_reader(ROW_GROUP_SIZE)
        with pq.ParquetWriter(path, schema, compression="zstd") as writer:
            for batch in reader:
                writer.write_table(pa.Table.from_batches([batch]).cast(schema), row_group_size=ROW_GROUP_SIZE)

    def _write_passed(self, dropped: np.ndarray, path: Path) -> None:
        """The raw rows minus the file row numbers in `dropped` (sorted), in the raw file's order.

        Read with pyarrow in file order rather than through a DuckDB join: DuckDB's parallel scan
        (with insertion order off, as the scratch runs) would emit rows in thread-scheduling order,
        and the validated file must be byte-identical when the same partition is validated again.
        One thread reads and filters the next raw row group while this one encodes and compresses.
        """
        from concurrent.futures import ThreadPoolExecutor

        source = pq.ParquetFile(self.raw_path)
        starts = np.cumsum([0] + [source.metadata.row_group(i).num_rows for i in range(source.num_row_groups)])

        def kept(i: int) -> pa.Table:
            table = source.read_row_group(i)
            lo, hi = np.searchsorted(dropped, [starts[i], starts[i + 1]])
            if hi > lo:
                keep = np.ones(table.num_rows, dtype=bool)
                keep[dropped[lo:hi] - starts[i]] = False
                table = table.filter(pa.array(keep))
            return table

        pending: list[pa.Table] = []
        pending_rows = 0
        with (
            ThreadPoolExecutor(max_workers=1) as reader,
            pq.ParquetWriter(path, self.raw_schema, compression="zstd") as writer,
        ):
            ahead = reader.submit(kept, 0) if source.num_row_groups else None
            for i in range(source.num_row_groups):
                table = ahead.result()
                ahead = reader.submit(kept, i + 1) if i + 1 < source.num_row_groups else None
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= ROW_GROUP_SIZE:
                    table = pa.concat_tables(pending)
                    full = (pending_rows // ROW_GROUP_SIZE) * ROW_GROUP_SIZE
                    writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP_SIZE)
                    pending = [table.slice(full)]
                    pending_rows -= full
            if pending_rows:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_SIZE)

    @staticmethod
    def count_parquet(path: Path) -> int:
        return pq.ParquetFile(path).metadata.num_rows

    def split(
        self, suite: Suite, validated_dir: Path, quarantine_dir: Path, gx_counts: dict[str, dict[str, Any]]
    ) -> tuple[list[CheckResult], dict[str, int], int, int, list[dict[str, Any]]]:
        """Evaluate every predicate once per row; write both zones; cross-check counts against GX."""
        con = self.con
        started = time.perf_counter()
        preds = [unexpected_predicate(c) for c in suite.checks]
        all_checks = list(suite.checks)
        if self.has_tombstones:
            preds = [f"({TOMBSTONE_OP_COLUMN} IS DISTINCT FROM 'delete' AND {p})" for p in preds]
            preds.append(f"({TOMBSTONE_OP_COLUMN} = 'delete' AND {sql_ident(suite.key)} IS NULL)")
            all_checks.append(tombstone_check(suite.key))
        flags = ", ".join(f"coalesce({p}, false) AS _c{i}" for i, p in enumerate(preds))
        reasons = ", ".join(f"CASE WHEN _c{i} THEN {_reason_struct(c)} END" for i, c in enumerate(all_checks))
        fail_any = " OR ".join(f"_c{i}" for i, c in enumerate(all_checks) if c.severity == "fail") or "false"
        raw_cols = ", ".join(sql_ident(c) for c in self.raw_columns)
        # One scan decides each row's fate: only rows failing something are kept here (a few percent),
        # whole, so the quarantine file is written from this table without scanning the raw file again.
        con.execute(
            f"""CREATE TEMP TABLE verdict AS
                SELECT _row, {raw_cols}, {", ".join(f"_c{i}" for i in range(len(preds)))},
                       {fail_any} AS _quarantined,
                       list_filter([{reasons}], lambda r: r IS NOT NULL) AS _reasons
                FROM (SELECT file_row_number AS _row, {raw_cols}, {flags}
                      FROM {self.source}, file_row_number = true))
                WHERE {" OR ".join(f"_c{i}" for i in range(len(preds)))}"""
        )
        counts = con.execute(
            f"SELECT {', '.join(f'count_if(_c{i})' for i in range(len(preds)))} FROM verdict"
        ).fetchall()[0]
        counts = [n or 0 for n in counts]  # count_if over an empty verdict (a clean partition) is NULL

        mismatches = []
        checks: list[CheckResult] = []
        if self.has_tombstones:  # checked here only: GX sees the live rows
            n = counts.pop()
            tombstones = con.execute(
                f"SELECT count(*) FROM {self.source}) WHERE {TOMBSTONE_OP_COLUMN} = 'delete'").fetchone()[0]
            gx_counts = gx_counts | {all_checks[-1].id: {
                "unexpected_count": n, "unexpected_percent": 100.0 * n / tombstones if tombstones else 0.0,
                "success": n == 0}}
            counts.append(n)
        for check, n in zip(all_checks, counts, strict=True):
            gx = gx_counts[check.id]
            if gx["unexpected_count"] != n:
                mismatches.append(f"{check.id}: GX {gx['unexpected_count']} vs DuckDB {n}")
            checks.append(
                CheckResult(
                    id=check.id,
                    type=check.type,
                    severity=check.severity,
                    description=check.description,
                    unexpected_count=int(n),
                    unexpected_percent=float(gx["unexpected_percent"] or 0.0),
                    success=bool(gx["success"]),
                )
            )
        if mismatches:
            raise CrossCheckError(
                f"suite {suite.name}: GX and the DuckDB predicates disagree on "
                + "; ".join(mismatches)
                + ". Fix the predicate in zerodoc.quality.suite or the expectation before publishing."
            )

        self.timings["row_pass"] = time.perf_counter() - started
        started = time.perf_counter()
        # Both zones are staged and counted before either is committed: accounting guards the commit.
        with staged_dir(validated_dir) as v_out, staged_dir(quarantine_dir) as q_out:
            dropped = (
                con.execute("SELECT _row FROM verdict WHERE _quarantined ORDER BY _row")
                .fetchnumpy()["_row"]
                .astype(np.int64)
            )
            self._write_passed(dropped, v_out / "part-0.parquet")
            self._write(
                f"SELECT {raw_cols}, _reasons FROM verdict WHERE _quarantined ORDER BY _row",
                self.raw_schema.append(pa.field("_reasons", REASONS_TYPE)),
                q_out / "part-0.parquet",
            )
            passed = self.count_parquet(v_out / "part-0.parquet")
            quarantined = self.count_parquet(q_out / "part-0.parquet")
            if self.extracted != passed + quarantined:
                raise AccountingError(
                    f"{suite.name}: extracted {self.extracted} != passed {passed} "
                    f"+ quarantined {quarantined}; nothing was written"
                )
        by_reason = dict(
            con.execute(
                """SELECT r.expectation_id, count(*) FROM
                     (SELECT unnest(_reasons) AS r FROM verdict WHERE _quarantined)
                   GROUP BY 1 ORDER BY 2 DESC, 1"""
            ).fetchall()
        )
        samples = _samples(con, suite, self.raw_columns, quarantine_dir / "part-0.parquet")
        self.timings["zones"] = time.perf_counter() - started
        return checks, by_reason, passed, quarantined, samples


def _reason_struct(check: Check) -> str:
    return (
        f"{{'expectation_id': {sql_literal(check.id)}, 'expectation_type': {sql_literal(check.type)}, "
        f"'severity': {sql_literal(check.severity)}, 'reason': {sql_literal(check.description)}}}"
    )


def _samples(con: Any, suite: Suite, columns: list[str], quarantine: Path, limit: int = 5) -> list[dict[str, Any]]:
    """The first `limit` quarantined rows (the quarantine file is in raw order), identifiers masked.

    Read from the small quarantine file just written rather than by joining the raw partition again.
    """
    shown = [suite.key] + sorted({c.column for c in suite.checks} - {suite.key}, key=columns.index)
    sensitive = {c.column for c in suite.checks if c.type == "expect_column_values_to_be_valid_rrn"}
    rows = con.execute(
        f"""SELECT {", ".join(sql_ident(c) for c in shown)}, _reasons
            FROM read_parquet({sql_literal(str(quarantine))}, hive_partitioning = false, file_row_number = true)
            ORDER BY file_row_number LIMIT {limit}"""
    ).fetchall()
    out = []
    for row in rows:
        values = {c: mask_value(c, v, c in sensitive) for c, v in zip(shown, row[:-1], strict=True)}
        out.append({"values": values, "reasons": [r["expectation_id"] for r in row[-1]]})
    return out


# ---- GX side -------------------------------------------------------------------------------------


def _run_gx(suite: Suite, db: _Scratch, docs_dir: Path, run_id: str, logical_date: str) -> dict[str, dict]:
    """Run the suite through GX's SQL engine on the scratch file; build Data Docs into `docs_dir`."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    import zerodoc.quality  # noqa: F401  (patches GX for DuckDB, registers custom expectations)

    # In-memory stores; the only docs site is this run's (no stray temp site per run).
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            "zerodoc": {
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            }
        },
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    datasource = context.data_sources.add_sql(
        name="scratch", connection_string=db.url, kwargs={"connect_args": db.connect_args}
    )
    asset = datasource.add_table_asset(name=suite.entity, table_name="batch")
    batch_definition = asset.add_batch_definition_whole_table("whole_partition")
    gx_suite = context.suites.add(to_gx_suite(suite))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=run_id, data=batch_definition, suite=gx_suite)
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=run_id,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=["zerodoc"])],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT},
        )
    )
    # Run time comes from the logical date, never the clock, so a rerun renders the same docs.
    run_time = datetime.fromisoformat(logical_date).replace(tzinfo=UTC)
    try:
        result = checkpoint.run(run_id=RunIdentifier(run_name=run_id, run_time=run_time))
    finally:
        datasource.get_engine().dispose()

    out: dict[str, dict] = {}
    errors = []
    for suite_result in result.run_results.values():
        for r in suite_result.results:
            check_id = r.expectation_config.meta["zerodoc_id"]
            if r.exception_info.get("raised_exception"):
                errors.append(f"{check_id}: {r.exception_info.get('exception_message')}")
                continue
            out[check_id] = {
                "unexpected_count": int(r.result.get("unexpected_count") or 0),
                "unexpected_percent": r.result.get("unexpected_percent"),
                "success": bool(r.success),
            }
            # Metric failures are keyed by metric id rather than flagged on the result.
            for info in (v for v in r.exception_info.values() if isinstance(v, dict)):
                if info.get("raised_exception"):
                    errors.append(f"{check_id}: {info.get('exception_message')}")
    if errors:
        raise GxExecutionError(f"GX failed on suite {suite.name}: " + "; ".join(errors))
    return out


# ---- gate and index ------------------------------------------------------------------------------


def _gate(suite: Suite, checks: list[CheckResult], report: Path) -> tuple[bool, str]:
    breaches = [c for c in checks if c.severity == "fail" and c.unexpected_percent > suite.max_fail_percent]
    if not breaches:
        return True, f"{suite.name}: every fail check is within {suite.max_fail_percent}%; report {report}"
    worst = max(breaches, key=lambda c: c.unexpected_percent)
    return False, (
        f"{suite.name}: check {worst.id} rejected {worst.unexpected_count} rows "
        f"({worst.unexpected_percent:.2f}% > {suite.max_fail_percent}%)"
        + (f" and {len(breaches) - 1} more checks over the limit" if len(breaches) > 1 else "")
        + f"; see {report}"
    )


def _refresh_index(cfg: Settings) -> None:
    from zerodoc.fsutil import write_bytes_atomic

    runs = []
    for summary_path in sorted((cfg.reports_dir / "validation").glob("*/summary.json")):
        try:
            runs.append(json.loads(summary_path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a run being replaced right now; the next refresh lists it
    write_bytes_atomic(cfg.reports_dir / "index.html", render_index(runs).encode("utf-8"))
