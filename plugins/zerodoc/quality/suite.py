"""Suite files (`expectations/<suite>.yml`): load, build the GX suite, compile each check to DuckDB SQL."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zerodoc.quality.identifiers import region_regex
from zerodoc.sql import sql_ident  # noqa: F401 - part of this module's interface (validate.py)
from zerodoc.sql import sql_literal as _sql_literal

SEVERITIES = ("fail", "warn")


class SuiteError(ValueError):
    """A suite file is malformed or uses an expectation type we cannot compile to SQL."""


@dataclass(frozen=True)
class Check:
    id: str
    type: str
    kwargs: dict[str, Any]
    severity: str
    description: str

    @property
    def column(self) -> str:
        return self.kwargs["column"]


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    entity: str
    key: str
    description: str
    max_fail_percent: float
    checks: tuple[Check, ...]
    sha256: str = field(repr=False)

    @property
    def agency(self) -> str:
        return self.entity.split(".", 1)[0]

    @property
    def entity_name(self) -> str:
        return self.entity.split(".", 1)[1]


def load_suite(name: str, expectations_dir: Path) -> Suite:
    path = expectations_dir / f"{name}.yml"
    if not path.is_file():
        raise SuiteError(f"no suite file {path}; suites live in expectations/<agency>__<entity>.yml")
    raw = path.read_bytes()
    doc = yaml.safe_load(raw)
    try:
        checks = tuple(
            Check(
                id=e["id"],
                type=e["type"],
                kwargs=dict(e["kwargs"]),
                severity=e["severity"],
                description=e["description"].strip(),
            )
            for e in doc["expectations"]
        )
        suite = Suite(
            name=doc["suite"],
            version=int(doc["version"]),
            entity=doc["entity"],
            key=doc["key"],
            description=doc["description"].strip(),
            max_fail_percent=float(doc["gate"]["max_fail_percent"]),
            checks=checks,
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except (KeyError, TypeError) as exc:
        raise SuiteError(f"{path}: missing or malformed field {exc}") from exc
    if suite.name != name:
        raise SuiteError(f"{path}: `suite: {suite.name}` does not match the file name")
    ids = [c.id for c in checks]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: expectation ids must be unique, got {ids}")
    for check in checks:
        if check.severity not in SEVERITIES:
            raise SuiteError(f"{path}: {check.id}: severity must be one of {SEVERITIES}")
        unexpected_predicate(check)  # fail at load time, not mid-run, on an unsupported type
    return suite


def to_gx_suite(suite: Suite) -> Any:
    """The same checks as a GX ExpectationSuite; each expectation carries its id and severity in `meta`."""
    import great_expectations as gx
    from great_expectations.expectations.registry import get_expectation_impl

    import zerodoc.quality  # noqa: F401  (custom expectations and the DuckDB fix)

    gx_suite = gx.ExpectationSuite(
        name=suite.name,
        meta={"zerodoc_version": suite.version, "zerodoc_sha256": suite.sha256, "entity": suite.entity},
    )
    for check in suite.checks:
        cls = get_expectation_impl(check.type)
        gx_suite.add_expectation(
            cls(
                **check.kwargs,
                notes=check.description,
                meta={"zerodoc_id": check.id, "severity": check.severity},
            )
        )
    return gx_suite


# ---- DuckDB predicates ---------------------------------------------------------------------------
# Each returns SQL that is TRUE exactly for the rows GX counts as unexpected. GX map expectations
# ignore NULLs (they are `not_be_null`'s business), so every predicate except not_be_null does too.


def sql_literal(value: Any) -> str:
    """zerodoc.sql.sql_literal, refusing what it cannot render as a suite error (it comes from a suite file)."""
    try:
        return _sql_literal(value)
    except ValueError as exc:
        raise SuiteError(str(exc)) from None


def _between(col: str, kw: dict[str, Any]) -> str:
    bounds = []
    if kw.get("min_value") is not None:
        bounds.append(f"{col} {'>' if kw.get('strict_min') else '>='} {sql_literal(kw['min_value'])}")
    if kw.get("max_value") is not None:
        bounds.append(f"{col} {'<' if kw.get('strict_max') else '<='} {sql_literal(kw['max_value'])}")
    if not bounds:
        raise SuiteError("expect_column_values_to_be_between needs min_value or max_value")
    return f"NOT ({' AND '.join(bounds)})"


def _unique(col: str, kw: dict[str, Any], table: str) -> str:
    # Every copy of a duplicated value is unexpected, as in GX.
    return f"{col} IN (SELECT {col} FROM {table} WHERE {col} IS NOT NULL GROUP BY {col} HAVING count(*) > 1)"


_CONDITIONS = {
    "expect_column_values_to_match_regex": lambda c, kw, t: (
        f"NOT regexp_matches({c}, {sql_literal(kw['regex'])})"
    ),
    "expect_column_values_to_not_match_regex": lambda c, kw, t: (
        f"regexp_matches({c}, {sql_literal(kw['regex'])})"
    ),
    "expect_column_values_to_be_in_set": lambda c, kw, t: (
        f"{c} NOT IN ({', '.join(sql_literal(v) for v in kw['value_set'])})"
    ),
    "expect_column_values_to_not_be_in_set": lambda c, kw, t: (
        f"{c} IN ({', '.join(sql_literal(v) for v in kw['value_set'])})"
    ),
    "expect_column_values_to_be_between": lambda c, kw, t: _between(c, kw),
    "expect_column_values_to_be_unique": _unique,
    "expect_column_values_to_be_valid_rrn": lambda c, kw, t: f"NOT zd_rrn_valid({c})",
    "expect_column_values_to_be_valid_yyyymmdd": lambda c, kw, t: f"NOT zd_valid_yyyymmdd({c})",
    "expect_column_values_to_be_valid_foreign_registration_number": lambda c, kw, t: f"NOT zd_frn_valid({c})",
    "expect_column_values_to_be_valid_business_registration_number": lambda c, kw, t: f"NOT zd_brn_valid({c})",
    "expect_column_values_to_be_plausible_hangul_name": lambda c, kw, t: f"NOT zd_hangul_name({c})",
    "expect_column_values_to_be_existing_region_code": lambda c, kw, t: (
        f"NOT regexp_full_match({c}, {sql_literal(region_regex(kw.get('level', 'sigungu')))})"
    ),
}

SUPPORTED_TYPES = frozenset(_CONDITIONS) | {
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_be_null",
}

# kwargs that change which rows GX counts; anything else (mostly, result_format, ...) only changes success.
_IGNORED_KWARGS = {"column", "mostly", "result_format", "catch_exceptions"}
_ROW_KWARGS = {
    "expect_column_values_to_match_regex": {"regex"},
    "expect_column_values_to_not_match_regex": {"regex"},
    "expect_column_values_to_be_in_set": {"value_set"},
    "expect_column_values_to_not_be_in_set": {"value_set"},
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_values_to_be_existing_region_code": {"level"},
}


def unexpected_predicate(check: Check, table: str = "batch") -> str:
    """DuckDB SQL, over `table`, true for the rows GX reports as unexpected for `check`."""
    if check.type not in SUPPORTED_TYPES:
        raise SuiteError(
            f"{check.id}: {check.type} has no DuckDB predicate; "
            f"supported: {', '.join(sorted(SUPPORTED_TYPES))}"
        )
    unknown = set(check.kwargs) - _IGNORED_KWARGS - _ROW_KWARGS.get(check.type, set())
    if unknown:
        raise SuiteError(f"{check.id}: kwargs {sorted(unknown)} are not compiled to SQL (row_condition etc.)")
    col = sql_ident(check.column)
    if check.type == "expect_column_values_to_not_be_null":
        return f"{col} IS NULL"
    if check.type == "expect_column_values_to_be_null":
        return f"{col} IS NOT NULL"
    return f"({col} IS NOT NULL AND {_CONDITIONS[check.type](col, check.kwargs, table)})"
