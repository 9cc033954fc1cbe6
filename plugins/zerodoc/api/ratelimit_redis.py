"""Rate limits shared by every API replica: one bucket per key holder in Redis, one EVALSHA a request.

Each ``take`` runs one Lua script (GCRA, the token bucket kept as a single number: the
"theoretical arrival time" after which the holder's bucket is full again). The script reads the
clock with Redis ``TIME``, so the replicas' own clocks never enter it, and Redis runs it
atomically, so two replicas' requests can never both take the last token. Rate and burst mean
what they mean for the host's buckets: allowed while ``tokens >= 1``; a refused request is told
``(1 - tokens) / rate`` seconds. The key is a hash of the holder (``anonymous:<client address>``
must not sit in a shared Redis in clear) and expires once the bucket is full again, so idle
holders cost nothing.

When Redis is unreachable the host's buckets answer instead (fail over to per-host limits,
neither open nor closed). Failing closed would turn an outage of the Celery broker into an
outage of every evidence answer, for a control that shares capacity fairly rather than protecting
data (authentication, purpose, consent and the audit log do not depend on Redis); failing open
would leave no limit at all. The host's buckets keep what the API had before Redis: during the
outage a consumer can get at most (replicas x) its limit. The answer, 200 or 429, is audited by the
app as always. One warning is logged when Redis stops answering and one when it answers again,
with the exception's type and message (they name the server, never a key holder or a password).
While Redis is down, one request per ``RETRY_AFTER`` seconds tries it again; the others do not
wait for it.

Timeouts are short (``TIMEOUT``, overridable in the URL: ``?socket_timeout=0.5``) and one retry,
without backoff, covers a connection that breaks mid-command; a timeout is not retried, so the
request that finds Redis silent waits TIMEOUT once. redis-py's default (ten retries, 5 s
timeouts) would hold each request for up to a minute when Redis is gone. A ``take`` waits on the
network: ``SharedRateLimiter.remote`` tells a caller on an event loop to call it from a thread.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

KEY_PREFIX = "zerodoc:ratelimit:v1:"
TIMEOUT = 0.2  # s, connect and read; Redis on the LAN answers in well under a millisecond
RETRY_AFTER = 1.0  # s between attempts while Redis is down

# KEYS[1]: the holder's bucket. ARGV[1]: emission interval (us per request, 1e6 / rate);
# ARGV[2]: burst tolerance (us, burst * interval). Returns 0 if the request may go now, else the
# microseconds until one may. Times are microseconds as Lua doubles (exact up to 2^53, ~285 years);
# they are written back with %.17g, since Lua's default number-to-string keeps only 14 digits.
# The expiry is at least 1 ms: an interval below a double's resolution there (~0.25 us, rates
# beyond millions a second) leaves new_tat == now, and Redis refuses PX 0.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now or tat > now + tolerance then
  -- full (idle long enough), or a time from before Redis's clock stepped back: full
  tat = now
end
local new_tat = tat + interval
local wait = new_tat - tolerance - now
if wait > 0 then
  return math.ceil(wait)
end
local ttl_ms = string.format('%d', math.max(1, math.ceil((new_tat - now) / 1000)))
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', ttl_ms)
return 0
"""


class Fallback(Protocol):
    def take(self, key: str) -> float | None: ...


class RedisRateLimiter:
    """``take(key)``: None if a request may go now, else the seconds until one may (all replicas)."""

    def __init__(
        self,
        url: str,
        rate: float,
        burst: float,
        fallback: Fallback,
        *,
        timeout: float = TIMEOUT,
        retry_after: float = RETRY_AFTER,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if rate <= 0:
            raise ValueError("a Redis rate limiter needs a rate > 0 (0 disables the limit: use no limiter)")
        self.rate, self.burst = rate, burst
        self.fallback = fallback
        self.retry_after = retry_after
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._script = self._client.register_script(GCRA)  # EVALSHA; loads the script once if Redis lacks it
        interval = 1e6 / rate
        self._args = (repr(interval), repr(burst * interval))
        self._lock = threading.Lock()
        self._down = False
        self._retry_at = 0.0  # time.monotonic() after which one request tries Redis again

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def bucket_key(key: str) -> str:
        return KEY_PREFIX + hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()

    def take(self, key: str) -> float | None:
        probing = self._down
        if probing and not self._claim_retry():
            return self.fallback.take(key)
        try:
            wait_us = self._script(keys=(self.bucket_key(key),), args=self._args)
        except self._errors as exc:
            self._went_down(exc)
            return self.fallback.take(key)
        if probing:
            self._came_back()
        return None if wait_us == 0 else wait_us / 1e6

    def _claim_retry(self) -> bool:
        """True for the one request that tries Redis again once RETRY_AFTER has passed."""
        now = time.monotonic()
        with self._lock:
            if now < self._retry_at:
                return False
            self._retry_at = now + self.retry_after
            return True

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self.retry_after
            if self._down:
                return
            self._down = True
        # redis-py's messages name the server and the script, never a command's arguments.
        log.warning(
            "rate limit: no answer from Redis (%s: %.200s); each API host enforces the limit alone until it answers",
            type(exc).__name__,
            exc,
        )

    def _came_back(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
        log.warning("rate limit: Redis answers again; the limit is shared by every replica again")
