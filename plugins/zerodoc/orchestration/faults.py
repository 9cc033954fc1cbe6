"""Fault trials: kill -9 the process running a task at a random point, retry, prove nothing torn shows.

The stages (extract, validate, dbt, publish) run the step functions the Airflow tasks call
(`zerodoc.orchestration.steps`) in task processes forked from a prefork worker, as Celery's are.
Each pipeline run kills a stage's task process with SIGKILL up to twice (the DAGs' `retries=2`),
each time after a delay drawn inside that stage's last measured duration, then lets the retry
finish and moves on to the next stage; the published content is then compared with an
undisturbed reference run. Meanwhile a reader process polls every dataset's CURRENT pointer and
reads the whole snapshot it names, counting every read that is not an intact, known version.

Runs alternate between two logical dates so that every completed publish really switches
CURRENT (a rerun of the same date publishes the same version and switches nothing).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zerodoc.config import REPO_ROOT

STAGES = ("extract", "validate", "dbt", "publish")
DATES = ("2026-11-20", "2026-11-21")
READY = "READY"


# ---- the stages, as the tasks run them ---------------------------------------------------------


def _entities() -> list[str]:
    from zerodoc.catalog import agencies

    return [e.qualified for a in agencies().values() for e in a.entities.values()]


def run_stage(stage: str, ds: str) -> dict:
    """Every task of one stage for one logical date, one after another, as a worker would run them."""
    from zerodoc.catalog import datasets
    from zerodoc.orchestration import steps

    if stage == "extract":
        return {q: steps.extract_step(q, ds)["checksum"] for q in _entities()}
    if stage == "validate":
        from zerodoc.catalog import entity
        from zerodoc.config import settings
        from zerodoc.sources.extract import raw_partition

        cfg = settings()
        out = {}
        for q in _entities():
            raw = raw_partition(entity(q), ds, cfg) / "part-0.parquet"
            out[q] = steps.validate_step(q, ds, str(raw))["run_id"]
        return out
    if stage == "dbt":
        return steps.dbt_build_step(ds)
    if stage == "publish":
        out = {}
        for name in datasets():
            steps.gate_step(name, ds)
            out[name] = steps.publish_step(name, ds)["version"]
        return out
    raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")


def _pool(log_file: str) -> None:
    """A prefork worker, as Celery's: import once, then fork one process per task.

    stdin takes `<stage> <ds>` lines; stdout answers `START <pid>` when the task process exists
    and `EXIT <pid> <code>` when it has ended (code -9: killed). Task output goes to `log_file`.
    """
    import zerodoc.orchestration.steps  # noqa: F401
    import zerodoc.publish.publisher  # noqa: F401
    import zerodoc.quality.validate  # noqa: F401
    import zerodoc.sources.extract  # noqa: F401
    import zerodoc.transform.runner  # noqa: F401

    print(READY, flush=True)
    for line in sys.stdin:
        stage, ds = line.split()
        pid = os.fork()
        if pid == 0:  # the task process
            os.setpgid(0, 0)
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = 0
            try:
                run_stage(stage, ds)
            except BaseException:  # noqa: BLE001 - reported through the exit code, logged here
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        try:
            os.setpgid(pid, pid)  # both sides set it: no window where a kill of the group misses it
        except (PermissionError, ProcessLookupError):
            pass
        print(f"START {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


# ---- the reader --------------------------------------------------------------------------------


def read_current(dataset_dir: Path) -> tuple[str, str]:
    """Read CURRENT and the whole snapshot it names; raise if anything is missing or inconsistent.

    Returns the version and its content digest (zerodoc.transform.runner.content_digest): two runs
    that publish the same rows agree on it even when their files' bytes differ in row order.
    """
    import pyarrow.parquet as pq

    version = json.loads((dataset_dir / "CURRENT.json").read_text())["version"]
    vdir = dataset_dir / "versions" / version
    meta = json.loads((vdir / "metadata.json").read_text())
    data = (vdir / "data.parquet").read_bytes()
    checksum = hashlib.sha256(data).hexdigest()
    digest = meta["content_digest"]
    if meta["version"] != version or checksum != meta["checksum"] or not version.endswith(digest[:12]):
        raise ValueError(f"{version}: metadata {meta['version']}/{digest[:12]}/{meta['checksum'][:12]} "
                         f"vs data file {checksum[:12]}")
    rows = pq.read_table(io.BytesIO(data)).num_rows
    if rows != meta["row_count"]:
        raise ValueError(f"{version}: {rows} rows but metadata says {meta['row_count']}")
    return version, digest


def _child_reader(home: str, allowed_file: str, stop_file: str, out_file: str) -> None:
    """Poll until `stop_file` exists; a read is torn if it fails or shows content no clean run made."""
    allowed: dict[str, list[str]] = json.loads(Path(allowed_file).read_text())
    published = Path(home) / "published"
    reads = torn = 0
    examples: list[str] = []
    seen: dict[str, set[str]] = {d: set() for d in allowed}
    while not Path(stop_file).exists():
        for dataset, digests in allowed.items():
            reads += 1
            try:
                version, digest = read_current(published / dataset)
                if digest not in digests:
                    raise ValueError(f"{version}: content {digest[:12]} matches no undisturbed run")
                seen[dataset].add(version)
            except Exception as exc:  # noqa: BLE001 - every failure to read a whole version counts
                torn += 1
                if len(examples) < 10:
                    examples.append(f"{dataset}: {type(exc).__name__}: {exc}")
        time.sleep(0.1)  # leave the two cores to the stages under test
    Path(out_file).write_text(json.dumps({
        "reads": reads, "torn_reads": torn, "examples": examples,
        "versions_seen": {d: sorted(v) for d, v in seen.items()},
    }))


# ---- the parent ----------------------------------------------------------------------------------


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update({"ZERODOC_HOME": str(home), "PYTHONPATH": str(REPO_ROOT / "plugins"), "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")  # noqa: SIM115 - handed to the child, closed when it is reaped
    proc = subprocess.Popen([sys.executable, "-m", "zerodoc.orchestration.faults", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fh, cwd=REPO_ROOT,
                            start_new_session=True)
    fh.close()
    return proc


class WorkerPool:
    """The controller's handle on one prefork worker (see `_pool`)."""

    def __init__(self, env: dict[str, str], log: Path):
        self.log = log
        self.proc = _spawn(["pool", str(log)], env, log)
        line = self.proc.stdout.readline().decode().strip()
        if line != READY:
            self.close()
            raise RuntimeError(f"worker pool did not start (said {line!r}); see {log}")

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(text[-lines:])

    def _expect(self, word: str) -> list[str]:
        line = self.proc.stdout.readline().decode().split()
        if not line or line[0] != word:
            raise RuntimeError(f"worker pool said {line!r}, expected {word}; see {self.log}")
        return line[1:]

    def start(self, stage: str, ds: str) -> int:
        self.proc.stdin.write(f"{stage} {ds}\n".encode())
        self.proc.stdin.flush()
        return int(self._expect("START")[0])

    def wait(self, pid: int) -> int:
        got, code = self._expect("EXIT")
        if int(got) != pid:
            raise RuntimeError(f"worker pool reported {got}, expected {pid}")
        return int(code)

    def run(self, stage: str, ds: str) -> float:
        """One task to completion; the seconds it worked."""
        t0 = time.perf_counter()
        pid = self.start(stage, ds)
        code = self.wait(pid)
        if code != 0:
            raise RuntimeError(f"stage {stage} for {ds} failed (exit {code}); {self.log} ends:\n{self.tail()}")
        return time.perf_counter() - t0

    def kill_after(self, stage: str, ds: str, delay: float) -> bool:
        """Start the task, SIGKILL its process group `delay` s in; True if it was still working."""
        pid = self.start(stage, ds)
        deadline = time.perf_counter() + delay
        while time.perf_counter() < deadline:
            # A task ending early answers EXIT at once; poll the pipe without consuming other lines.
            import select

            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.perf_counter()))
            if ready:
                break
        try:
            os.killpg(pid, signal.SIGKILL)  # the task process and anything it started
        except ProcessLookupError:
            pass
        code = self.wait(pid)
        if code not in (0, -signal.SIGKILL):
            raise RuntimeError(f"stage {stage} for {ds} failed on its own (exit {code}); {self.log} ends:\n"
                               f"{self.tail()}")
        return code == -signal.SIGKILL

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def published_content(home: Path) -> dict[str, str]:
    """dataset -> content digest of the data CURRENT points at."""
    from zerodoc.catalog import datasets

    out = {}
    for name in datasets():
        _, digest = read_current(home / "published" / name)
        out[name] = digest
    return out


def log_problems(home: Path) -> list[str]:
    """Append-only files others read, after a run completed: every line whole, chains intact."""
    from zerodoc.audit.validation_log import log_path, verify_validation_log

    problems = []
    vlog = verify_validation_log(log_path(home / "reports"), home / "reports")
    if not vlog.ok:
        problems.append(f"validation log: {vlog.message}")
    for path in [home / "lineage" / "events.jsonl", *sorted((home / "published").glob("*/HISTORY.jsonl"))]:
        if not path.exists():
            continue
        for lineno, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
            try:
                json.loads(line)
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
            except ValueError as exc:
                problems.append(f"{path.relative_to(home)} line {lineno}: torn ({exc})")
    return problems


def content_hash(content: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class Trial:
    n: int
    run: int
    stage: str
    ds: str
    delay_s: float
    landed: bool


@dataclass
class FaultReport:
    seed: int
    persons: int
    trials: int = 0
    kills_landed: int = 0
    missed_kills: int = 0  # kills that arrived after the stage ended (re-aimed earlier, not trials)
    runs: int = 0
    torn_reads: int = 0
    reads: int = 0
    output_mismatches: int = 0
    log_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)
    torn_examples: list[str] = field(default_factory=list)
    versions_seen: dict[str, list[str]] = field(default_factory=dict)
    per_stage: dict[str, int] = field(default_factory=dict)
    trial_log: list[dict] = field(default_factory=list)
    run_log: list[dict] = field(default_factory=list)

    def as_metrics(self) -> dict:
        return {"faults.trials": self.trials, "faults.torn_reads": self.torn_reads,
                "faults.output_mismatches": self.output_mismatches}


def prepare(home: Path, persons: int, seed: int) -> None:
    """Generate the agency stand-ins (file and CSV drop) once into `home`."""
    from zerodoc.config import Settings
    from zerodoc.sources import generate as gen

    cfg = Settings(home=home.resolve())
    if not (cfg.sources_dir / "_expected.json").exists():
        expected = gen.generate(persons, seed, cfg.sources_dir)
        gen.write_expected(expected, cfg)


MAX_KILLS_PER_TASK = 2  # the DAGs' retries: the third attempt must be allowed to finish
MISSED_KILL_RETRIES = 4  # a kill that came too late is re-aimed at half the delay, this many times


def plan_runs(n: int, rng: random.Random) -> list[dict[str, int]]:
    """Spread `n` kills evenly over the stages, at most MAX_KILLS_PER_TASK per stage per run."""
    per_stage = {s: n // len(STAGES) + (i < n % len(STAGES)) for i, s in enumerate(STAGES)}
    runs = max(1, -(-max(per_stage.values()) // MAX_KILLS_PER_TASK))
    plan = [dict.fromkeys(STAGES, 0) for _ in range(runs)]
    for stage, count in per_stage.items():
        for _ in range(count):
            open_runs = [r for r in plan if r[stage] < MAX_KILLS_PER_TASK]
            rng.choice(open_runs)[stage] += 1
    return plan


def run_fault_trials(n: int, seed: int, home: Path | str, persons: int = 2000,
                     log=print) -> dict:  # noqa: ANN001 - any print-like callable
    """`n` kill -9 trials spread evenly over the stages; returns the report as a dict.

    Each pipeline run (one logical date, the two dates alternating) kills each stage's process
    0-2 times at random points, then lets the retry finish, as Airflow's retries would; the run's
    published content is then compared with the undisturbed reference for that date.
    Bench calls this for the soak; the test suite calls it with n=20.
    """
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    rng = random.Random(seed)
    log(f"fault trials: n={n} seed={seed} persons={persons} home={home}")
    prepare(home, persons, seed)
    env = child_env(home)
    child_log = home / "fault-children.log"
    report = FaultReport(seed=seed, persons=persons)
    with WorkerPool(env, child_log) as pool:
        # Reference: one undisturbed run per date, timing each stage's work.
        reference: dict[str, dict[str, str]] = {}
        recent: dict[str, float] = {}
        for ds in DATES:
            for stage in STAGES:
                recent[stage] = pool.run(stage, ds)
            reference[ds] = published_content(home)
        report.reference = {ds: content_hash(c) for ds, c in reference.items()}
        log(f"reference stage seconds: { {s: round(v, 2) for s, v in recent.items()} }")

        allowed = {d: sorted({reference[ds][d] for ds in DATES}) for d in reference[DATES[0]]}
        allowed_file, stop_file, reader_out = home / "reader-allowed.json", home / "reader.stop", home / "reader.json"
        allowed_file.write_text(json.dumps(allowed))
        stop_file.unlink(missing_ok=True)
        reader = _spawn(["read", str(home), str(allowed_file), str(stop_file), str(reader_out)], env, child_log)
        durations: dict[str, list[float]] = {s: [] for s in STAGES}
        try:
            for run_no, kills in enumerate(plan_runs(n, rng), start=1):
                ds = DATES[(run_no - 1) % len(DATES)]  # the reference ended on DATES[-1]: this switches
                t_run = time.perf_counter()
                for stage in STAGES:
                    for _ in range(kills[stage]):
                        # Within the last clean duration of this stage, measured under the same conditions.
                        delay = rng.uniform(0.05, 0.85) * recent[stage]
                        landed = pool.kill_after(stage, ds, delay)
                        for _ in range(MISSED_KILL_RETRIES):
                            if landed:
                                break
                            # The stage finished before the kill (it ran faster this time): that
                            # attempt is a clean run, not a trial; aim earlier at the same stage.
                            log(f"kill -9 {stage} {ds} at {delay:.2f}s arrived after the stage ended; "
                                f"aiming earlier")
                            report.missed_kills += 1
                            delay *= 0.5
                            landed = pool.kill_after(stage, ds, delay)
                        trial = Trial(report.trials + 1, run_no, stage, ds, round(delay, 3), landed)
                        report.trial_log.append(asdict(trial))
                        report.trials += 1
                        report.kills_landed += landed
                        report.per_stage[stage] = report.per_stage.get(stage, 0) + 1
                        log(f"trial {trial.n:>3} (run {run_no}): kill -9 {stage:<8} {ds} {delay:6.2f}s into "
                            f"its work ({'mid-stage' if landed else 'it had already ended'})")
                    recent[stage] = pool.run(stage, ds)  # the attempt that succeeds
                    durations[stage].append(recent[stage])
                got = content_hash(published_content(home))
                matches = got == report.reference[ds]
                report.log_problems += [f"run {run_no}: {p}" for p in log_problems(home)]
                report.runs += 1
                report.output_mismatches += not matches
                report.run_log.append({"run": run_no, "ds": ds, "kills": kills, "content_hash": got,
                                       "matches": matches, "seconds": round(time.perf_counter() - t_run, 1)})
                log(f"run {run_no} ({ds}) complete after {sum(kills.values())} kills: published content "
                    f"{'matches the undisturbed run' if matches else 'DIFFERS from the undisturbed run'}")
        finally:
            stop_file.write_text("stop\n")
            reader.wait(timeout=60)
    r = json.loads(reader_out.read_text())
    report.reads, report.torn_reads = r["reads"], r["torn_reads"]
    report.torn_examples, report.versions_seen = r["examples"], r["versions_seen"]
    report.stage_seconds = {s: round(sum(v) / len(v), 2) for s, v in durations.items() if v}
    report.seconds = round(time.perf_counter() - t_start, 1)
    log(f"fault trials done: {report.trials} kills ({report.kills_landed} mid-stage) over {report.runs} runs, "
        f"{report.reads} reads, {report.torn_reads} torn, {report.output_mismatches} mismatching runs, "
        f"{report.seconds}s")
    return asdict(report) | report.as_metrics()


# ---- a source outage ------------------------------------------------------------------------------


def airflow_retry_delays(task) -> list[float]:  # noqa: ANN001 - an Airflow operator
    """The least wait before each retry of `task`, as Airflow 3.3's `next_retry_datetime` computes it
    (it then adds a per-try jitter of up to the same again)."""
    base = task.retry_delay.total_seconds()
    mult = task.retry_exponential_backoff
    if mult in (0, 1):
        return [base] * task.retries
    return [max(1.0, math.ceil(base * mult ** (t - 1))) for t in range(1, task.retries + 1)]


@dataclass
class Attempt:
    started: float
    error: str | None


def run_with_retries(call, delays: list[float], scale: float = 1.0) -> tuple[object, list[Attempt]]:  # noqa: ANN001
    """Call until it succeeds or the retries run out, waiting `delays` (times `scale`) between tries,
    as the scheduler does with an up_for_retry task. Raises the last error, attempts attached."""
    attempts: list[Attempt] = []
    for i in range(len(delays) + 1):
        attempts.append(Attempt(time.monotonic(), None))
        try:
            return call(), attempts
        except Exception as exc:
            attempts[-1].error = f"{type(exc).__name__}: {exc}"
            if i == len(delays):
                exc.attempts = attempts  # type: ignore[attr-defined]
                raise
            time.sleep(delays[i] * scale)
    raise AssertionError("unreachable")


@contextmanager
def database_outage(admin_uri: str, database: str) -> Iterator[None]:
    """The source database goes away for everyone (its open sessions cut, new ones refused) and comes
    back on exit. Only this database: the shared server keeps serving everybody else."""
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        # One at a time, lock waiters first, each gone before the next is signalled. Signalled all at
        # once, a lock holder can exit first and hand its lock to a waiter that then finishes a small
        # COPY before its own signal lands: the outage would miss the very session it was aimed at.
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "ORDER BY coalesce(wait_event_type = 'Lock', false) DESC, pid", (database,))]
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
    try:
        yield
    finally:
        with psycopg.connect(admin_uri, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def main(argv: list[str]) -> None:
    if argv[:1] == ["pool"]:
        _pool(argv[1])
    elif argv[:1] == ["read"]:
        _child_reader(*argv[1:5])
    elif argv[:1] == ["trials"]:
        n, seed, home = int(argv[1]), int(argv[2]), argv[3]
        print(json.dumps(run_fault_trials(n, seed, home), indent=2))
    else:
        raise SystemExit("usage: python -m zerodoc.orchestration.faults stage|read|trials ...")


if __name__ == "__main__":
    main(sys.argv[1:])
