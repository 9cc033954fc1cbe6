"""Agency CSV drop deliveries → Arrow batches in the declared schema, losing no line.

Every data record becomes exactly one output row. A record that cannot be read (undecodable
bytes, unbalanced quotes, wrong field count, NUL bytes, an oversized field, a value that is not
of its declared type) is still a row: declared columns NULL where unreadable, `_raw_line` holding
the source text and `_parse_error` the exact reason, so validation quarantines it. Spreadsheet
formula text is kept verbatim and flagged in `_flags` (a warning, not a rejection).

Encoding is decided per file: a UTF-8 BOM, else UTF-8 if the whole file decodes, else CP949
(the legacy Korean code page) if it does; a file neither decodes fully is read as UTF-8 and the
lines that are not become parse-error rows ("mixed encodings").
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 1 << 20  # a physical line beyond 1 MiB is a broken export, not data
MAX_RECORD_LINES = 50  # a quoted field may span lines; one still open after 50 never closes
BATCH_ROWS = 100_000
META_FIELDS = [
    ("_source_file", pa.string()),
    ("_line_number", pa.int64()),
    ("_raw_line", pa.string()),
    ("_parse_error", pa.string()),
    ("_flags", pa.string()),
]
_INT = re.compile(r"[+-]?[0-9]+")
_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(,[0-9]{3})+")
_FULLWIDTH = re.compile(r"[０-９]")
# Text a spreadsheet would execute (CSV injection, OWASP): =, +, @, or - followed by a non-number.
_FORMULA = re.compile(r"^(?:[=+@\t\r]|-[^0-9.\s])")

csv.field_size_limit(MAX_LINE_BYTES * MAX_RECORD_LINES)


class DeliveryError(RuntimeError):
    """A delivery file cannot be read as a whole (empty, or its header breaks the contract)."""


@dataclass
class FileStats:
    file: str
    encoding: str
    records: int = 0
    parse_errors: int = 0
    flagged: int = 0
    sha256: str = ""
    reasons: dict[str, int] = field(default_factory=dict)


def detect_encoding(path: Path) -> str:
    """'utf-8-sig', 'utf-8', 'cp949' or 'mixed' (read as UTF-8, undecodable lines rejected).

    Decided line by line: CP949 happily decodes most UTF-8 Hangul as other characters, so a file
    holding both valid non-ASCII UTF-8 lines and non-UTF-8 lines is "mixed", never CP949.
    """
    utf8_text = not_utf8 = cp949_ok = 0
    bom = False
    with open(path, "rb") as fh:
        for i, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES), b"")):
            if i == 0 and raw.startswith(BOM):
                bom, raw = True, raw[3:]
            if raw.isascii():
                continue
            try:
                raw.decode("utf-8")
                utf8_text += 1
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data" and not raw.endswith(b"\n"):
                    continue  # a read cut inside a character of an oversized line
                not_utf8 += 1
                try:
                    raw.decode("cp949")
                    cp949_ok += 1
                except UnicodeDecodeError:
                    pass
    if not not_utf8:
        return "utf-8-sig" if bom else "utf-8"
    if not utf8_text and not bom and cp949_ok == not_utf8:
        return "cp949"
    return "mixed"


@dataclass
class _Line:
    number: int
    text: str
    error: str | None
    ended: bool  # had a line terminator (a last line without one may be truncated)


def _physical_lines(path: Path, encoding: str) -> Iterator[_Line]:
    codec = "cp949" if encoding == "cp949" else "utf-8"
    with open(path, "rb") as fh:
        number = 0
        while True:
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            error = None
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                total = len(raw)
                while chunk := fh.readline(MAX_LINE_BYTES):  # skip the rest of the oversized line
                    total += len(chunk)
                    if chunk.endswith(b"\n"):
                        break
                error = f"line of {total} bytes exceeds the {MAX_LINE_BYTES}-byte limit (oversized field)"
                raw = raw[:200]
            if number == 1 and raw.startswith(BOM):
                raw = raw[3:]
            ended = raw.endswith(b"\n")
            body = raw.rstrip(b"\r\n") if ended else raw
            try:
                text = body.decode(codec)
            except UnicodeDecodeError as exc:
                text = body.decode(codec, errors="backslashreplace")
                if error is None:
                    what = "mixed encodings in one file" if encoding == "mixed" else f"file is {encoding}"
                    error = f"bytes not valid {codec} at offset {exc.start} ({what})"
            yield _Line(number, text, error, ended)


@dataclass
class Record:
    line_number: int
    text: str
    fields: list[str] | None
    error: str | None


def records(path: Path, encoding: str) -> Iterator[Record]:
    """Logical CSV records with their first physical line number; never raises on bad content."""
    pending: deque[_Line] = deque()
    source = _physical_lines(path, encoding)

    def pull() -> bool:
        nxt = next(source, None)
        if nxt is None:
            return False
        pending.append(nxt)
        return True

    while pending or pull():
        first = pending[0]
        if first.error:
            pending.popleft()
            yield Record(first.number, first.text, None, first.error)
            continue
        # Join physical lines while a quoted field is open ('"' count odd; "" escapes count twice).
        take, quotes = 1, first.text.count('"')
        while quotes % 2 == 1 and take < MAX_RECORD_LINES:
            if take == len(pending) and not pull():
                break
            nxt = pending[take]
            if nxt.error:
                break
            quotes += nxt.text.count('"')
            take += 1
        if quotes % 2 == 1:
            # Unbalanced: reject the opening line alone and resume right after it.
            pending.popleft()
            yield Record(first.number, first.text, None,
                         f"unbalanced quotes: a quoted field opened on line {first.number} never closes")
            continue
        lines = [pending.popleft() for _ in range(take)]
        text = "\n".join(ln.text for ln in lines)
        if "\x00" in text:
            yield Record(first.number, text.replace("\x00", "\\x00"), None,
                         f"NUL byte at character {text.index(chr(0)) + 1} of the record")
            continue
        try:
            fields = next(csv.reader([text], strict=True), [])
        except csv.Error as exc:
            yield Record(first.number, text, None, f"malformed CSV quoting: {exc}")
            continue
        rec = Record(first.number, text, fields, None)
        if not lines[-1].ended:
            rec.error = "no line end"  # resolved against the field count by the caller
        yield rec


# ---- typing --------------------------------------------------------------------------------------


def _convert(value: str, typ: str, column: str) -> tuple[object, str | None]:
    if value == "":
        return None, None
    if typ in ("int32", "int64"):
        if _INT.fullmatch(value):
            return int(value), None
        if _FULLWIDTH.search(value):
            return None, f"column {column}: full-width digits in {value!r}"
        if _THOUSANDS.fullmatch(value):
            return None, f"column {column}: thousands separators in {value!r}"
        return None, f"column {column}: {value!r} is not an integer"
    if typ == "float64":
        try:
            return float(value), None
        except ValueError:
            return None, f"column {column}: {value!r} is not a number"
    if typ == "timestamp":
        try:
            return dt.datetime.fromisoformat(value), None
        except ValueError:
            return None, f"column {column}: {value!r} is not a timestamp (YYYY-MM-DD HH:MM:SS)"
    if typ == "date":
        try:
            return dt.date.fromisoformat(value), None
        except ValueError:
            return None, f"column {column}: {value!r} is not a date"
    if typ == "bool":
        low = value.lower()
        if low in ("true", "t", "1", "y"):
            return True, None
        if low in ("false", "f", "0", "n"):
            return False, None
        return None, f"column {column}: {value!r} is not a boolean"
    return value, None


def read_delivery_file(path: Path, rel: str, columns: dict[str, str], on_schema_drift: str,
                       stats: FileStats) -> Iterator[pa.RecordBatch]:
    """One drop file as batches of declared columns + META_FIELDS."""
    names = list(columns)
    types = list(columns.values())
    schema = pa.schema([(c, _arrow(t)) for c, t in columns.items()] + META_FIELDS)
    if path.stat().st_size == 0:
        raise DeliveryError(f"{rel}: empty file (0 bytes, not even a header): the delivery is incomplete")
    recs = records(path, stats.encoding)
    header = next(recs)
    if header.fields is None:
        raise DeliveryError(f"{rel}: header line unreadable: {header.error}")
    got = [h.strip() for h in header.fields]
    drift_flag = None
    index = {c: i for i, c in enumerate(got)}
    if got != names:
        missing = [c for c in names if c not in index]
        extra = [c for c in got if c not in columns]
        moved = not missing and not extra
        detail = "; ".join(filter(None, [
            f"missing column(s) {', '.join(missing)}" if missing else "",
            f"new column(s) {', '.join(extra)}" if extra else "",
            "columns reordered" if moved else "",
        ]))
        if on_schema_drift == "fail":
            raise DeliveryError(f"{rel}: schema drift against config/sources.yml: {detail} (policy: fail)")
        drift_flag = f"schema_drift: {detail}"
    width = len(got)
    buf: dict[str, list] = {n: [] for n in schema.names}

    def flush() -> pa.RecordBatch:
        batch = pa.record_batch([pa.array(buf[n], type=schema.field(n).type) for n in schema.names], schema=schema)
        for v in buf.values():
            v.clear()
        return batch

    for rec in recs:
        stats.records += 1
        error = rec.error
        values: list[object] = [None] * len(names)
        flags: list[str] = [drift_flag] if drift_flag else []
        if rec.fields is not None:
            n = len(rec.fields)
            if n != width:
                kind = "extra columns" if n > width else "missing columns"
                error = f"expected {width} fields, got {n} ({kind})"
                if rec.error == "no line end":
                    error += "; last line has no line end (file truncated?)"
            else:
                error = None
                errs = []
                for j, (c, t) in enumerate(zip(names, types, strict=True)):
                    i = index.get(c)
                    if i is None:
                        continue
                    v, e = _convert(rec.fields[i], t, c)
                    if e:
                        errs.append(e)
                    values[j] = v
                    if t == "string" and v and _FORMULA.match(v):
                        flags.append(f"formula_text: {c}")
                error = "; ".join(errs) or None
        for j, c in enumerate(names):
            buf[c].append(values[j])
        buf["_source_file"].append(rel)
        buf["_line_number"].append(rec.line_number)
        buf["_raw_line"].append(rec.text if error else None)
        buf["_parse_error"].append(error)
        buf["_flags"].append("; ".join(flags) or None)
        if error:
            stats.parse_errors += 1
            kind = error.split(":", 1)[0] if error.startswith("column ") else error.split(" (", 1)[0]
            stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
        if flags:
            stats.flagged += 1
        if len(buf["_line_number"]) >= BATCH_ROWS:
            yield flush()
    if buf["_line_number"]:
        yield flush()


def _arrow(t: str) -> pa.DataType:
    from zerodoc.sources.extract import ARROW

    return ARROW[t]
