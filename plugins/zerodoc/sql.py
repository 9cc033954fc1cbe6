"""SQL text for values and names, in a module that imports nothing heavy (zerodoc.quality imports GX)."""

from __future__ import annotations

from typing import Any


def sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise ValueError(f"cannot render {value!r} as a SQL literal")
