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


ENCODING_BLOCK = 8 * MAX_LINE_BYTES  # a multiple of the line limit: oversized lines split where readline would


class _EncodingScan:
    """The per-line encoding rule of `detect_encoding`, applied to multi-MiB blocks of whole lines.

    Rule, per physical line (as `readline(MAX_LINE_BYTES)` cuts them): ASCII lines say nothing; a
    line that decodes as UTF-8 counts as UTF-8 text if it holds Hangul (short CP949 runs can be
    valid UTF-8 by accident, but they decode to Latin letters, never to Hangul); any other line is
    "not UTF-8" and must decode as CP949 for the file to be CP949.

    A block takes two C-speed decodes instead of one per line: if it decodes as UTF-8 every line
    does; if it decodes as CP949 every line does, and only the few lines holding a UTF-8 Hangul byte
    pattern need a look of their own. A block that fails both (or holds an oversized line, or ends
    inside a character at EOF) is read line by line, so the bad line is still found exactly.
    """

    def __init__(self) -> None:
        self.bom = False
        self.utf8_text = False
        self.not_utf8 = False
        self.not_cp949 = False

    def result(self) -> str:
        if not self.not_utf8:
            return "utf-8-sig" if self.bom else "utf-8"
        if not self.utf8_text and not self.bom and not self.not_cp949:
            return "cp949"
        return "mixed"

    def line(self, raw: bytes, first: bool = False, cp949_ok: bool = False) -> None:
        if first and raw.startswith(BOM):
            self.bom, raw = True, raw[3:]
        if raw.isascii():
            return
        try:
            if _HANGUL.search(raw.decode("utf-8")):
                self.utf8_text = True
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data" and not raw.endswith(b"\n"):
                return  # a read cut inside a character of an oversized line
            self.not_utf8 = True
            if cp949_ok:
                return
            try:
                raw.decode("cp949")
            except UnicodeDecodeError:
                self.not_cp949 = True

    def lines(self, block: bytes, at_file_start: bool) -> None:
        for i, piece in enumerate(_pieces(block)):
            self.line(piece, first=at_file_start and i == 0)

    def block(self, block: bytes, at_file_start: bool, lines_checked: bool = False) -> str | None:
        """Scan a run of whole lines (cut after a newline, or at EOF); return its text if it is all
        CP949-decodable, for the caller to transcode without decoding twice. `lines_checked`: the
        caller knows no line exceeds MAX_LINE_BYTES."""
        if at_file_start and block.startswith(BOM):
            self.bom = True  # the BOM is valid UTF-8 and not Hangul: the block checks below hold with it
        if block.isascii():
            return block.decode("ascii")
        if not lines_checked and len(block) > MAX_LINE_BYTES and _longest_line(block) > MAX_LINE_BYTES:
            self.lines(block, at_file_start)
            return None
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":  # EOF inside a character: the last line's rule
                self.lines(block, at_file_start)
                return None
        else:
            if _HANGUL.search(text):
                self.utf8_text = True
            return None
        self.not_utf8 = True  # some line holds bytes that are not UTF-8
        try:
            text = block.decode("cp949")
        except UnicodeDecodeError:
            self.lines(block, at_file_start)
            return None
        for start, end in _utf8_hangul_lines(block):
            self.line(block[start:end], first=at_file_start and start == 0, cp949_ok=True)
        return text


def _pieces(block: bytes) -> Iterator[bytes]:
    """The pieces `readline(MAX_LINE_BYTES)` returns for a block that starts at a line start."""
    pos, n = 0, len(block)
    while pos < n:
        end = block.find(b"\n", pos, pos + MAX_LINE_BYTES)
        end = min(pos + MAX_LINE_BYTES, n) if end < 0 else end + 1
        yield block[pos:end]
        pos = end


def _utf8_hangul_lines(block: bytes) -> list[tuple[int, int]]:
    """(start, end) of every line holding a UTF-8 Hangul byte pattern (E[A-D] followed by two
    continuation bytes), found vectorised: in CP949 text such lines are a few in a hundred."""
    import numpy as np

    a = np.frombuffer(block, dtype=np.uint8)
    if len(a) < 3:
        return []
    lead = np.flatnonzero((a[:-2] - np.uint8(0xEA)) <= 3)  # EA..ED (uint8 wraps below EA)
    hits = lead[((a[lead + 1] & 0xC0) == 0x80) & ((a[lead + 2] & 0xC0) == 0x80)]
    if not len(hits):
        return []
    nl = np.flatnonzero(a == 10)
    lines = np.unique(np.searchsorted(nl, hits))  # line k runs from after newline k-1 through newline k
    starts, ends = np.r_[0, nl + 1][lines], np.r_[nl + 1, len(a)][lines]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _longest_line(block: bytes) -> int:
    import numpy as np

    nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    return int(np.diff(np.r_[-1, nl, len(block) - 1]).max())


def _blocks(fh) -> Iterator[tuple[bytes, bool]]:
    """(block, whole): blocks cut after their last newline. A block with no newline is a piece of an
    oversized line, exactly ENCODING_BLOCK long so `readline`'s cuts stay aligned; it and the block
    that finishes that line are not `whole` (they start or end inside a line)."""
    carry = b""
    inside = False  # the previous block ended inside an oversized line
    while True:
        chunk = fh.read(ENCODING_BLOCK - len(carry))
        block = carry + chunk
        if not block:
            return
        cut = len(block) if not chunk else block.rfind(b"\n") + 1
        if cut == 0:
            carry = b""
            yield block, False
            inside = True
            continue
        carry = block[cut:]
        yield block[:cut], not inside
        inside = False
        if not chunk:
            return


def detect_encoding(path: Path) -> str:
    """'utf-8-sig', 'utf-8', 'cp949' or 'mixed' (read as UTF-8, undecodable lines rejected).

    Decided line by line (see `_EncodingScan`): CP949 happily decodes most UTF-8 Hangul as other
    characters, so a file holding both valid non-ASCII UTF-8 lines and non-UTF-8 lines is "mixed",
    never CP949.
    """
    scan = _EncodingScan()
    with open(path, "rb") as fh:
        for i, (block, whole) in enumerate(_blocks(fh)):
            if whole:
                scan.block(block, i == 0)
            else:
                scan.lines(block, i == 0)  # inside an oversized line: only the per-line rule applies
    return scan.result()


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


def _has_stray_quote(arr, q) -> bool:
    """A quote (offsets `q` in `arr`) that neither opens nor closes a field nor escapes one
    (`_STRAY_QUOTE`, vectorised)."""
    import numpy as np

    if not len(q):
        return False
    edge = np.array([44, 10, 34], dtype=np.uint8)  # , \n "
    before = np.zeros(len(q), dtype=bool)
    after = np.zeros(len(q), dtype=bool)
    has_before, has_after = q > 0, q < len(arr) - 1
    before[has_before] = np.isin(arr[q[has_before] - 1], edge)
    after[has_after] = np.isin(arr[q[has_after] + 1], edge)
    return bool((~before & ~after).any())


def fast_transcode(data: bytes) -> tuple[str, bytes] | None:
    """(encoding, UTF-8 bytes) for a file whose lines are all within MAX_LINE_BYTES, or None when
    the file is "mixed" (the exact reader then names every undecodable line). Same rule as
    `detect_encoding`, the CP949 text of each block kept so nothing is decoded twice."""
    scan = _EncodingScan()
    texts: list[str | None] = []
    blocks: list[bytes] = []
    pos, n = 0, len(data)
    while pos < n:
        end = n if pos + ENCODING_BLOCK >= n else data.rfind(b"\n", pos, pos + ENCODING_BLOCK) + 1
        if end <= pos:
            return None  # cannot happen when no line is oversized; the exact reader decides
        block = data[pos:end]
        blocks.append(block)
        texts.append(scan.block(block, pos == 0, lines_checked=True))
        pos = end
    encoding = scan.result()
    if encoding == "utf-8":
        return encoding, data
    if encoding == "utf-8-sig":
        return encoding, data[3:]
    if encoding != "cp949":
        return None
    out = []
    for block, text in zip(blocks, texts, strict=True):
        if text is None:  # a block that was valid UTF-8 (no Hangul): its CP949 reading is what counts
            try:
                text = block.decode("cp949")
            except UnicodeDecodeError:
                return None  # the exact reader reports the line
        out.append(text.encode("utf-8"))
    return encoding, b"".join(out)


def _formula_rows(col: pa.Array) -> list[int]:
    """Rows whose text a spreadsheet would execute (`_FORMULA`): a cheap first-character screen over
    the column, the regex only on the rows it lets through."""
    import numpy as np
    import pyarrow.compute as pc

    first = pc.utf8_slice_codeunits(col, 0, 1)
    maybe = np.flatnonzero(pc.fill_null(pc.is_in(first, pa.array(["=", "+", "@", "\t", "\r", "-"])), False)
                           .to_numpy(zero_copy_only=False))
    values = col.take(pa.array(maybe, pa.int64())).to_pylist() if len(maybe) else []
    return [int(i) for i, v in zip(maybe, values, strict=True) if v and _FORMULA.match(v)]


def _sparse_strings(n: int, values: dict[int, str]) -> pa.Array:
    """A string column of `n` nulls except at `values`' rows."""
    import numpy as np

    if not values:
        return pa.nulls(n, pa.string())
    arr = np.full(n, None, dtype=object)
    for i, v in values.items():
        arr[i] = v
    return pa.array(arr, pa.string())


@dataclass
class Prepared:
    """A delivery file read, hashed, screened and transcoded to UTF-8 (the GIL-bound half of the fast path)."""

    data: bytes
    sha256: str
    encoding: str | None = None  # None: the exact reader must take this file
    text: bytes = b""
    nl: object = None  # newline offsets in `data` (numpy)
    quotes: object = None  # '"' offsets in `data` (numpy)


def prepare_fast(path: Path) -> Prepared:
    """Everything before Arrow: run one file ahead, in a thread, while Arrow parses the previous one."""
    import hashlib

    import numpy as np

    data = path.read_bytes()
    prep = Prepared(data, hashlib.sha256(data).hexdigest())
    if not data or b"\x00" in data or b"\r" in data:
        return prep
    arr = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(arr == 34)
    if _has_stray_quote(arr, quotes):
        return prep
    nl = np.flatnonzero(arr == 10)
    del arr
    if len(nl) and (np.diff(np.r_[-1, nl]).max() > MAX_LINE_BYTES or len(data) - nl[-1] - 1 > MAX_LINE_BYTES):
        return prep
    if not len(nl) and len(data) > MAX_LINE_BYTES:
        return prep
    decoded = fast_transcode(data)
    if decoded is not None:
        prep.encoding, prep.text = decoded
        prep.nl = nl
        prep.quotes = quotes
    return prep


def read_delivery_file_fast(path: Path, rel: str, columns: dict[str, str], stats: FileStats,
                            prepared: Prepared | None = None) -> list | None:
    prep = prepared or prepare_fast(path)
    stats.sha256 = prep.sha256
    if prep.encoding is None:
        return None
    return _parse_fast(prep, rel, columns, stats)


def _parse_fast(prep: Prepared, rel: str, columns: dict[str, str], stats: FileStats) -> list | None:
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    data, nl, encoding = prep.data, prep.nl, prep.encoding
    codec = "cp949" if encoding == "cp949" else "utf-8"
    names = list(columns)
    # Records with the wrong field count are set aside by Arrow and become parse-error rows below,
    # as the exact reader makes them; before, one such record sent its whole file to the exact
    # reader (a generated 400k-row unemployment-benefit delivery: 11.1 s instead of ~1 s).
    skipped: list = []

    def set_aside(row) -> str:  # noqa: ANN001 - pyarrow.csv.InvalidRow
        skipped.append(row)
        return "skip"

    # Where each record starts and ends, by the exact reader's rule: a newline inside an open quoted
    # field ('"' count so far odd) continues the record. Police summaries span lines this way.
    quotes = prep.quotes
    if len(quotes) % 2:
        return None  # a quoted field never closes: the exact reader says where
    physical = len(nl) + (0 if data.endswith(b"\n") else 1)
    inside = (np.searchsorted(quotes, nl) % 2).astype(bool)  # per newline: within a quoted field
    ends = np.flatnonzero(~inside)  # newlines that end a record (0-based line index of that line)
    first_line = np.r_[1, ends + 2]  # 1-based physical line each record starts on (0: the header)
    last_line = np.r_[ends + 1, physical]
    if data.endswith(b"\n"):  # the final newline starts no record
        first_line, last_line = first_line[:-1], last_line[:-1]
    if len(first_line) and (last_line - first_line + 1).max() > MAX_RECORD_LINES:
        return None
    multiline = bool(inside.any())

    def parse(use_threads: bool) -> pa.Table:
        skipped.clear()
        return pacsv.read_csv(
            pa.py_buffer(prep.text),
            read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=use_threads),
            parse_options=pacsv.ParseOptions(newlines_in_values=multiline, invalid_row_handler=set_aside),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names}, null_values=[""], strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    try:
        table = parse(use_threads=True)
        if skipped:  # only the serial reader knows the line numbers of the records it skips
            table = parse(use_threads=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    prep.text = b""
    if table.column_names != names:
        return None
    n = table.num_rows + len(skipped)
    if n != len(first_line) - 1:  # blank lines, say: let the exact path decide
        return None
    errors: dict[int, str] = {}
    for row in skipped:  # row.number: the record, 1 = the header
        if row.number is None or not 2 <= row.number <= n + 1:
            return None
        kind = "extra columns" if row.actual_columns > len(names) else "missing columns"
        error = f"expected {len(names)} fields, got {row.actual_columns} ({kind})"
        if row.number == n + 1 and not data.endswith(b"\n"):
            error += "; last line has no line end (file truncated?)"
        errors[row.number - 2] = error
    text_cols = {c: table[c].combine_chunks() for c in names}
    del table
    if errors:  # the set-aside records back in their places, every declared column NULL
        place = np.full(n, -1, dtype=np.int64)
        kept = np.ones(n, dtype=bool)
        kept[list(errors)] = False
        place[kept] = np.arange(n - len(errors))
        spread = pa.array(place, mask=~kept)
        text_cols = {c: col.take(spread) for c, col in text_cols.items()}
    bad = np.zeros(n, dtype=bool)
    typed: dict[str, pa.Array] = {}
    for c, t in columns.items():
        col = text_cols[c]
        if t in ("int32", "int64"):
            # ASCII digits only is the common case; the few others (a sign, or not an integer) get the regex.
            ok = pc.fill_null(pc.ascii_is_decimal(col), True).to_numpy(zero_copy_only=False)
            others = np.flatnonzero(~ok)
            if len(others):
                signed = pc.match_substring_regex(col.take(pa.array(others)), _INT_RE2)
                ok[others] = pc.fill_null(signed, False).to_numpy(zero_copy_only=False)
            bad |= ~ok
        elif t == "timestamp":
            typed[c] = pc.strptime(col, format=_TS_FORMAT, unit="us", error_is_null=True)
            bad |= (pc.is_null(typed[c]).to_numpy(zero_copy_only=False)
                    & pc.is_valid(col).to_numpy(zero_copy_only=False))
        elif t != "string":
            return None  # date/float/bool: the exact path's parsing rules
    # Rows with a value the fast rules do not accept get the exact reader's per-value conversion.
    bad_rows = np.flatnonzero(bad)
    fixed: dict[str, list] = {c: [] for c in columns}
    if len(bad_rows):
        take = pa.array(bad_rows)
        bad_values = {c: text_cols[c].take(take).to_pylist() for c in names}
        for k, i in enumerate(bad_rows):
            errs = []
            for c, t in columns.items():
                v, e = _convert(bad_values[c][k] or "", t, c)
                fixed[c].append(v)
                if e:
                    errs.append(e)
            if errs:
                errors[int(i)] = "; ".join(errs)
    mask = pa.array(bad)
    cols: list[pa.Array] = []
    flags: dict[int, str] = {}
    for c, t in columns.items():
        col = text_cols.pop(c)
        typ = _arrow(t)
        if t in ("int32", "int64"):
            clean = pc.if_else(mask, pa.scalar(None, pa.string()), col) if len(bad_rows) else col
            try:
                col = pc.cast(clean, typ)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return None
        elif t == "timestamp":
            col = typed.pop(c)
        else:
            for i in _formula_rows(col):
                flags[i] = f"formula_text: {c}" if i not in flags else f"{flags[i]}; formula_text: {c}"
        # Text needs no fix-up: the exact rule keeps it as read ("" is already NULL).
        if len(bad_rows) and t != "string":
            col = pc.replace_with_mask(col, mask, pa.array(fixed[c], typ))
        cols.append(col)
    starts = np.r_[0, nl + 1]
    raw_line = {}
    for i in errors:  # the record's text, all its lines (0-based line indexes below)
        first, last = first_line[i + 1] - 1, last_line[i + 1] - 1
        end = nl[last] if last < len(nl) else len(data)
        raw_line[i] = data[starts[first] : end].decode(codec)
    stats.parse_errors = len(errors)
    for e in errors.values():
        kind = e.split(":", 1)[0] if e.startswith("column ") else e.split(" (", 1)[0]
        stats.reasons[kind] = stats.reasons.get(kind, 0) + 1
    stats.encoding = encoding
    stats.records = n
    stats.flagged = len(flags)
    meta = [
        pa.repeat(rel, n).cast(pa.string()) if n else pa.array([], pa.string()),
        pa.array(first_line[1:].astype(np.int64)),
        _sparse_strings(n, raw_line),
        _sparse_strings(n, errors),
        _sparse_strings(n, flags),
    ]
    schema = pa.schema([(c, _arrow(t)) for c, t in columns.items()] + META_FIELDS)
    out = pa.Table.from_arrays(cols + meta, schema=schema)
    return out.to_batches(max_chunksize=BATCH_ROWS)
