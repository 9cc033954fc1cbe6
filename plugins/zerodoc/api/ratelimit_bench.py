"""Cost of one rate-limit ``take``: the host's buckets against Redis (``python -m zerodoc.api.ratelimit_bench``).

In-process and printed, not a test. Redis is the URL given (default the local one, db 15);
every holder is new (``bench-<uuid>``) and its key expires within seconds of the run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from zerodoc.api.ratelimit import SharedRateLimiter
from zerodoc.api.ratelimit_redis import RedisRateLimiter


def _per_call_us(take: Callable[[str], float | None], keys: list[str], n: int, repeats: int) -> tuple[float, float]:
    """Medians over `repeats` of n sequential takes: wall and this process's CPU, microseconds a take.

    CPU is what a take costs the API's host; wall adds the wait for Redis (and, on a loaded
    machine, for a core).
    """
    wall, cpu = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        for i in range(n):
            take(keys[i % len(keys)])
        wall.append((time.perf_counter() - started) / n * 1e6)
        cpu.append((time.process_time() - cpu_started) / n * 1e6)
    return statistics.median(wall), statistics.median(cpu)


def _threaded_us(take: Callable[[str], float | None], keys: list[str], n: int, threads: int) -> tuple[float, float]:
    """Wall time per take with `threads` threads taking at once (the API's thread pool), microseconds."""
    barrier = threading.Barrier(threads + 1)

    def run(offset: int) -> None:
        barrier.wait()
        for i in range(n):
            take(keys[(offset + i) % len(keys)])

    workers = [threading.Thread(target=run, args=(t * 7,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for w in workers:
        w.join()
    total = n * threads
    return (time.perf_counter() - started) / total * 1e6, (time.process_time() - cpu_started) / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("-n", type=int, default=20_000, help="takes per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    # A rate high enough that every take is admitted (the write path, the dearer one in Redis),
    # and a low one where most are refused (read only).
    with tempfile.TemporaryDirectory(prefix="zerodoc-ratelimit-bench-") as tmp:
        rows = []
        for label, rate, burst in (("admitted", 1e9, 1e9), ("refused", 1.0, 1.0)):
            host = SharedRateLimiter(Path(tmp) / label / "host.bin", rate, burst, redis_url="")
            shared = SharedRateLimiter(Path(tmp) / label / "redis.bin", rate, burst, redis_url=args.redis_url)
            assert isinstance(shared.backend, RedisRateLimiter)
            one = [f"bench-{uuid.uuid4()}"]
            many = [f"bench-{uuid.uuid4()}" for _ in range(1000)]
            shared.take(one[0])  # connect and load the script before measuring
            for name, limiter in (("host mmap", host), ("redis", shared)):
                rows.append((name, label, "1 holder", _per_call_us(limiter.take, one, args.n, args.repeats)))
                rows.append((name, label, "1000 holders", _per_call_us(limiter.take, many, args.n, args.repeats)))
                threaded = _threaded_us(limiter.take, many, args.n // 4, args.threads)
                rows.append((name, label, f"{args.threads} threads", threaded))
            client = shared.backend._client  # the floor: one round trip that runs nothing
            rows.append(
                (
                    "redis PING",
                    label,
                    "1 holder",
                    _per_call_us(lambda _k, c=client: c.ping(), one, args.n, args.repeats),
                )
            )
            host.close()
            shared.close()
        down = SharedRateLimiter(Path(tmp) / "down.bin", 1e9, 1e9, redis_url="redis://127.0.0.1:1/0")
        down.take("warm")  # the one failed attempt; afterwards the host's buckets answer
        rows.append(("redis down", "admitted", "1 holder", _per_call_us(down.take, ["x"], args.n, args.repeats)))
        down.close()

    print(f"{'backend':<12} {'decision':<9} {'load':<13} {'wall us':>8} {'cpu us':>7}  (a take)")
    for name, label, load, (wall, cpu) in rows:
        print(f"{name:<12} {label:<9} {load:<13} {wall:8.1f} {cpu:7.1f}")


if __name__ == "__main__":
    main()
