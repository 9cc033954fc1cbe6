"""A simulated agency REST API on loopback (FastAPI + uvicorn), serving the generated registries.

`GET /v1/{agency}/{entity}?page_size=&cursor=` (keyset paging, what the extractor uses) or
`?page=&page_size=` (offset paging). Both answer
`{"data": [...], "page_size": n, "total": N, "next_cursor": "<key>" | null}`.
Rows are served in key order from `$ZERODOC_HOME/sources/<agency>/<entity>.parquet`.

`faults` makes it misbehave the way agency gateways do, for the bad-input corpus: a list of
`Fault(kind, request, times)` — the `request`-th call (1-based, per entity) and the next
`times - 1` calls answer with `kind`: "500", "429", "timeout", "malformed_json", "short_page", "503",
"data_object" (the page's `data` is an object, not an array). Record faults damage the record with
key `key` in every answer that serves it, as a bad row in the agency's table would: "record_set"
sets `field` to `value`, "record_drop" removes `field`, "record_replace" replaces the whole record
with `value`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLOW_SECONDS = 3.0


@dataclass
class Fault:
    kind: str
    request: int = 1
    times: int = 1
    key: int | None = None
    field: str | None = None
    value: Any = None


def create_app(sources_dir: Path, faults: dict[str, list[Fault]] | None = None):
    import pyarrow.parquet as pq
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="Simulated agency API", docs_url=None, redoc_url=None)
    cache: dict[str, tuple[list[dict], str, list]] = {}
    calls: dict[str, int] = {}
    lock = threading.Lock()
    app.state.faults = faults or {}
    app.state.calls = calls

    def rows(agency: str, entity: str) -> tuple[list[dict], str, list]:
        q = f"{agency}.{entity}"
        if q not in cache:
            path = sources_dir / agency / f"{entity}.parquet"
            if not path.is_file():
                raise HTTPException(404, f"no registry {q}")
            table = pq.read_table(path)
            key = table.column_names[0]
            data = [_jsonable(r) for r in table.to_pylist()]
            # Stable key order (duplicates keep file order), like an agency's ORDER BY key.
            order = sorted(range(len(data)), key=lambda i: (data[i][key], i))
            ordered = [data[i] for i in order]
            cache[q] = (ordered, key, [r[key] for r in ordered])
        return cache[q]

    @app.get("/v1/{agency}/{entity}")
    def page(agency: str, entity: str, page_size: int = Query(1000, ge=1, le=10_000),
             page: int | None = Query(None, ge=1), cursor: str | None = None,
             updated_after: str | None = None, updated_until: str | None = None):
        q = f"{agency}.{entity}"
        with lock:
            calls[q] = calls.get(q, 0) + 1
            n = calls[q]
        faults = app.state.faults.get(q, [])
        fault = next((f for f in faults if not f.kind.startswith("record_")
                      and f.request <= n < f.request + f.times), None)
        if fault and fault.kind == "500":
            return JSONResponse({"error": "internal error"}, status_code=500)
        if fault and fault.kind == "503":
            return JSONResponse({"error": "maintenance"}, status_code=503)
        if fault and fault.kind == "429":
            return JSONResponse({"error": "rate limited"}, status_code=429, headers={"Retry-After": "0"})
        if fault and fault.kind == "timeout":
            time.sleep(SLOW_SECONDS)
        data, key, keys = rows(agency, entity)
        if updated_after or updated_until:
            # Change-window query, as agency change-feed APIs offer it (ISO timestamps, same format).
            data = [r for r in data if (not updated_after or r["updated_at"] > updated_after)
                    and (not updated_until or r["updated_at"] <= updated_until)]
            keys = [r[key] for r in data]
        if page is not None:
            start = (page - 1) * page_size
        elif cursor is None:
            start = 0
        else:
            # Keyset: the position after the last row carrying the cursor key (duplicates included).
            start = bisect.bisect_right(keys, int(cursor))
        chunk = data[start : start + page_size]
        end = start + len(chunk)
        # Never cut a page inside a run of equal keys, or a keyset cursor would skip the rest.
        while chunk and end < len(data) and data[end][key] == chunk[-1][key]:
            chunk.append(data[end])
            end += 1
        body = {"data": chunk, "page_size": page_size, "total": len(data),
                "next_cursor": str(chunk[-1][key]) if end < len(data) and chunk else None}
        if fault and fault.kind == "short_page":
            body["data"] = chunk[: max(0, len(chunk) - 1)]
        if fault and fault.kind == "data_object":
            body["data"] = {"rows": chunk}
        damaged = list(body["data"]) if isinstance(body["data"], list) else []
        for f in (f for f in faults if f.kind.startswith("record_")):
            hits = [i for i, r in enumerate(damaged) if isinstance(r, dict) and r.get(key) == f.key]
            if not hits:
                continue
            i = hits[0]
            if f.kind == "record_replace":
                damaged[i] = f.value
            elif f.kind == "record_set":
                damaged[i] = damaged[i] | {f.field: f.value}
            elif f.kind == "record_drop":
                damaged[i] = {k: v for k, v in damaged[i].items() if k != f.field}
            body["data"] = damaged
        text = json.dumps(body, ensure_ascii=False)
        if fault and fault.kind == "malformed_json":
            text = text[: len(text) // 2]
        return Response(text, media_type="application/json")

    return app


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, dt.datetime | dt.date) else v) for k, v in row.items()}


@contextmanager
def serve(sources_dir: Path, faults: dict[str, list[Fault]] | None = None, port: int = 0) -> Iterator[str]:
    """Run the agency API on 127.0.0.1 in a background thread; yield its base URL."""
    import uvicorn

    config = uvicorn.Config(create_app(sources_dir, faults), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="agency-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("agency API did not start")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
