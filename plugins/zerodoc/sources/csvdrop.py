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
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
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
                # Short CP949 runs can be valid UTF-8 by accident (lead C2-C8, trail A1-BF), but they
                # decode to Latin letters, never to Hangul: only Hangul marks a UTF-8 line.
                if _HANGUL.search(raw.decode("utf-8")):
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


# ---- fast path ----------------------------------------------------------------------------------
# Arrow's multithreaded CSV reader over the transcoded bytes, for files with nothing to report.
# Any sign of trouble (mixed encodings, NUL, an oversized line, a record spanning lines, a field
# count or value the reader rejects) returns None and the exact line-by-line reader above takes
# the file, so both paths give identical rows (tests/sources compare them on the whole corpus).
_UTF8_HANGUL = re.compile(rb"[\xea-\xed][\x80-\xbf][\x80-\xbf]")
_INT_RE2 = r"^[+-]?[0-9]+$"
# A quote that neither opens nor closes a field nor escapes one: Arrow reads it leniently, the
# exact reader reports it.
_STRAY_QUOTE = re.compile(rb'(?<![,\n"])"(?![,\n"])')
_TS_FORMAT = "%Y-%m-%d %H:%M:%S"


def fast_encoding(data: bytes, path: Path) -> str | None:
    if data.startswith(BOM):
        try:
            data[3:].decode("utf-8")
            return "utf-8-sig"
        except UnicodeDecodeError:
            return None
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        data.decode("cp949")
    except UnicodeDecodeError:
        return None
    # CP949 decodes most UTF-8 too: only a file with no UTF-8 Hangul-like run is surely CP949.
    if _UTF8_HANGUL.search(data):
        return "cp949" if detect_encoding(path) == "cp949" else None
    return "cp949"


def read_delivery_file_fast(path: Path, rel: str, columns: dict[str, str], stats: FileStats) -> list | None:
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    data = path.read_bytes()
    if not data or b"\x00" in data or b"\r" in data or _STRAY_QUOTE.search(data):
        return None
    encoding = fast_encoding(data, path)
    if encoding is None:
        return None
    nl = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    if len(nl) and (np.diff(np.r_[-1, nl]).max() > MAX_LINE_BYTES or len(data) - nl[-1] - 1 > MAX_LINE_BYTES):
        return None
    if not len(nl) and len(data) > MAX_LINE_BYTES:
        return None
    text = data[3:] if encoding == "utf-8-sig" else data
    if encoding == "cp949":
        text = text.decode("cp949").encode("utf-8")
    names = list(columns)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(text),
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names}, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.column_names != names:
        return None
    physical = len(nl) + (0 if data.endswith(b"\n") else 1)
    if table.num_rows != physical - 1:  # a record spanned lines, or blank lines: let the exact path decide
        return None
    n = table.num_rows
    cols: list[pa.Array] = []
    flags = [None] * n
    bad = np.zeros(n, dtype=bool)
    for c, t in columns.items():
        col = table[c].combine_chunks()
        if t in ("int32", "int64"):
            bad |= ~pc.fill_null(pc.match_substring_regex(col, _INT_RE2), True).to_numpy(zero_copy_only=False)
        elif t == "timestamp":
            parsed = pc.strptime(col, format=_TS_FORMAT, unit="us", error_is_null=True)
            bad |= (pc.is_null(parsed).to_numpy(zero_copy_only=False) & pc.is_valid(col).to_numpy(zero_copy_only=False))
        elif t != "string":
            return None  # date/float/bool: the exact path's parsing rules
    # Rows with a value the fast rules do not accept get the exact reader's per-value conversion.
    bad_rows = np.flatnonzero(bad)
    fixed: dict[str, list] = {c: [] for c in columns}
    errors: list[str | None] = []
    for i in bad_rows:
        errs = []
        for c, t in columns.items():
            v, e = _convert(table[c][int(i)].as_py() or "", t, c)
            fixed[c].append(v)
            if e:
                errs.append(e)
        errors.append("; ".join(errs) or None)
    mask = pa.array(bad)
    for c, t in columns.items():
        col = table[c].combine_chunks()
        typ = _arrow(t)
        if t in ("int32", "int64"):
            clean = pc.if_else(mask, pa.scalar(None, pa.string()), col) if len(bad_rows) else col
            try:
                col = pc.cast(clean, typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        elif t == "timestamp":
            col = pc.strptime(col, format=_TS_FORMAT, unit="us", error_is_null=True)
        else:
            hit = pc.fill_null(pc.match_substring_regex(col, _FORMULA.pattern), False)
            for i in np.flatnonzero(hit.to_numpy(zero_copy_only=False)):
                flags[i] = f"formula_text: {c}" if flags[i] is None else f"{flags[i]}; formula_text: {c}"
        if len(bad_rows):
            col = pc.replace_with_mask(col, mask, pa.array(fixed[c], typ))
        cols.append(col)
    raw_line: list[str | None] = [None] * n
    parse_error: list[str | None] = [None] * n
    if len(bad_rows):
        tnl = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 10)
        starts = np.r_[0, tnl + 1]
        for i, err in zip(bad_rows, errors, strict=True):
            if err is None:
                continue
            line = int(i) + 1  # 0 = header
            end = tnl[line] if line < len(tnl) else len(text)
            raw_line[i] = text[starts[line] : end].decode("utf-8")
            parse_error[i] = err
    stats.parse_errors = sum(e is not None for e in parse_error)
    for e in parse_error:
        if e:
            kind = e.split(":", 1)[0] if e.startswith("column ") else e.split(" (", 1)[0]
            stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
    stats.encoding = encoding
    stats.records = n
    stats.flagged = sum(f is not None for f in flags)
    meta = [
        pa.array([rel] * n, pa.string()) if n else pa.array([], pa.string()),
        pa.array(np.arange(2, n + 2, dtype=np.int64)),
        pa.array(raw_line, pa.string()),
        pa.array(parse_error, pa.string()),
        pa.array(flags, pa.string()),
    ]
    schema = pa.schema([(c, _arrow(t)) for c, t in columns.items()] + META_FIELDS)
    out = pa.Table.from_arrays(cols + meta, schema=schema)
    return out.to_batches(max_chunksize=BATCH_ROWS)
