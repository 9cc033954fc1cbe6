"""Token buckets per key holder: on this host's memory-mapped file, or in Redis for every replica.

``SharedRateLimiter`` is what the API builds. It enforces the limit in one of two places, chosen
by configuration when it is built:

- By default, the host's buckets (``HostRateLimiter``, below), shared by every API worker
  process on the host. The embedded deployment has no Redis, and needs none.
- With ``ZERODOC_API_RATE_REDIS_URL`` set (e.g. ``redis://redis:6379/1``), one bucket per holder
  in Redis, shared by every replica on every host (``zerodoc.api.ratelimit_redis``): with N
  replicas each enforcing the limit on its own, a consumer would get N times its limit. The rate
  and burst are the same settings either way. When Redis cannot be reached, the host's buckets
  answer instead (see ``ratelimit_redis``): the limit then holds per host until Redis answers.

uvicorn's workers are separate processes; a bucket per process would let a consumer through
N times as fast with N workers. The host's buckets live in one memory-mapped file under the state
directory (``state/ratelimit/buckets.bin``): every worker maps the same pages, and one
``take`` is a lock, two small struct reads/writes and an unlock, a few microseconds next to the
~200 us of an evidence answer. ``fcntl.flock`` orders the processes (threads of one process
share a file description, so a threading lock orders them first). The time base is
CLOCK_MONOTONIC, which all processes on the host share; after a reboot the stored times lie in
the future and those buckets count as full.

The table is fixed-size and open-addressed: a key hashes to a slot and probes PROBE slots
after it. A holder idle long enough to have refilled is as good as absent, so its slot is
reused; when every probed slot is active (a flood from very many client addresses), the
least recently used one is reused, which can only hand that holder a fresh, full bucket.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zerodoc.api.ratelimit_redis import RedisRateLimiter

MAGIC = b"ZDRATE01"
SLOTS = 16_384
PROBE = 16
HEADER = struct.Struct("<8sQ")  # magic, slots
SLOT = struct.Struct("<Qdd")  # key hash (0 = empty), tokens, last refill time
HEADER_SIZE = 64
FILE_SIZE = HEADER_SIZE + SLOTS * SLOT.size


def _key_hash(key: str) -> int:
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")
    return h or 1  # 0 marks an empty slot


REDIS_URL_ENV = "ZERODOC_API_RATE_REDIS_URL"


class SharedRateLimiter:
    """``take(key)``: None if a request may go now, else the seconds until one may.

    The backend is the host's buckets at ``path``, or Redis when ``redis_url`` (default: the
    ``ZERODOC_API_RATE_REDIS_URL`` environment variable) names one; the host's buckets are then
    Redis's fallback. ``clock`` is the host buckets' time base (Redis uses its own TIME).
    """

    def __init__(
        self,
        path: Path,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        redis_url: str | None = None,
    ) -> None:
        self.rate, self.burst = rate, burst
        self.host = HostRateLimiter(path, rate, burst, clock)
        url = (os.environ.get(REDIS_URL_ENV, "") if redis_url is None else redis_url).strip()
        if url and rate > 0:
            from zerodoc.api.ratelimit_redis import RedisRateLimiter  # imports redis only when configured

            self.backend: HostRateLimiter | RedisRateLimiter = RedisRateLimiter(url, rate, burst, fallback=self.host)
        else:
            self.backend = self.host
        # True when take() waits on the network (Redis), not only on this host's memory: a caller
        # on an event loop should then call it from a thread.
        self.remote = self.backend is not self.host
        # Bound once here rather than dispatched on every request.
        self.take: Callable[[str], float | None] = self.backend.take

    def close(self) -> None:
        if self.remote:
            self.backend.close()
        self.host.close()


class HostRateLimiter:
    """The buckets of one host, in a memory-mapped file; ``take`` as in SharedRateLimiter."""

    def __init__(self, path: Path, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.rate, self.burst, self.clock = rate, burst, clock
        self._lock = threading.Lock()
        self._fd = -1
        self._map: mmap.mmap | None = None
        if rate > 0:
            self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                head = os.pread(fd, HEADER.size, 0)
                if os.fstat(fd).st_size != FILE_SIZE or head != HEADER.pack(MAGIC, SLOTS):
                    # New, or from another layout: start with every bucket full.
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, FILE_SIZE)
                    os.pwrite(fd, HEADER.pack(MAGIC, SLOTS), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, FILE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def take(self, key: str) -> float | None:
        if self.rate <= 0:
            return None
        h = _key_hash(key)
        m = self._map
        assert m is not None
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                now = self.clock()
                offset = self._slot(m, h, now)
                stored, tokens, last = SLOT.unpack_from(m, offset)
                if stored != h or now < last:
                    tokens = self.burst  # a new holder, or a time from before a reboot
                else:
                    tokens = min(self.burst, tokens + (now - last) * self.rate)
                if tokens >= 1:
                    SLOT.pack_into(m, offset, h, tokens - 1, now)
                    return None
                SLOT.pack_into(m, offset, h, tokens, now)
                return (1 - tokens) / self.rate
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _slot(self, m: mmap.mmap, h: int, now: float) -> int:
        """Offset of h's slot: its own, else an empty or refilled one, else the least recently used."""
        idle = self.burst / self.rate
        start = h % SLOTS
        reusable = lru = None
        lru_last = float("inf")
        for i in range(PROBE):
            offset = HEADER_SIZE + ((start + i) % SLOTS) * SLOT.size
            stored, _tokens, last = SLOT.unpack_from(m, offset)
            if stored == h:
                return offset
            if reusable is None and (stored == 0 or now - last >= idle or now < last):
                reusable = offset
            if last < lru_last:
                lru, lru_last = offset, last
        assert lru is not None
        return reusable if reusable is not None else lru
