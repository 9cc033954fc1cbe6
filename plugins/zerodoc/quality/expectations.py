"""Custom GX expectations for identifiers and legacy dates, backed by `identifiers` in both engines."""

from __future__ import annotations

from typing import ClassVar

import sqlalchemy as sa
from great_expectations.execution_engine import PandasExecutionEngine, SqlAlchemyExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial

from zerodoc.quality.identifiers import (
    is_existing_region_code,
    is_plausible_hangul_name,
    is_valid_brn,
    is_valid_frn,
    is_valid_rrn,
    is_valid_yyyymmdd,
    region_regex,
)


class ColumnValuesValidRrn(ColumnMapMetricProvider):
    """Rows whose RRN passes `is_valid_rrn`; SQL uses the `zd_rrn_valid` macro of the scratch database."""

    condition_metric_name = "column_values.zd_valid_rrn"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_valid_rrn).astype(bool)

    @column_condition_partial(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(cls, column, **kwargs):
        return sa.func.zd_rrn_valid(column, type_=sa.Boolean)


class ColumnValuesValidYyyymmdd(ColumnMapMetricProvider):
    """Rows holding an existing day as `YYYYMMDD` text; SQL uses the `zd_valid_yyyymmdd` macro."""

    condition_metric_name = "column_values.zd_valid_yyyymmdd"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_valid_yyyymmdd).astype(bool)

    @column_condition_partial(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(cls, column, **kwargs):
        return sa.func.zd_valid_yyyymmdd(column, type_=sa.Boolean)


class ColumnValuesValidFrn(ColumnMapMetricProvider):
    """Rows whose foreign registration number passes `is_valid_frn`; SQL uses `zd_frn_valid`."""

    condition_metric_name = "column_values.zd_valid_frn"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_valid_frn).astype(bool)

    @column_condition_partial(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(cls, column, **kwargs):
        return sa.func.zd_frn_valid(column, type_=sa.Boolean)


class ColumnValuesValidBrn(ColumnMapMetricProvider):
    """Rows whose business registration number passes `is_valid_brn`; SQL uses `zd_brn_valid`."""

    condition_metric_name = "column_values.zd_valid_brn"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_valid_brn).astype(bool)

    @column_condition_partial(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(cls, column, **kwargs):
        return sa.func.zd_brn_valid(column, type_=sa.Boolean)


class ColumnValuesPlausibleHangulName(ColumnMapMetricProvider):
    """Rows holding 2-5 precomposed Hangul syllables; SQL uses `zd_hangul_name`."""

    condition_metric_name = "column_values.zd_plausible_hangul_name"

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return column.map(is_plausible_hangul_name).astype(bool)

    @column_condition_partial(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(cls, column, **kwargs):
        return sa.func.zd_hangul_name(column, type_=sa.Boolean)


class ColumnValuesExistingRegionCode(ColumnMapMetricProvider):
    """Rows whose code is in `dbt_project/seeds/regions.csv` at the given level (sigungu or sido)."""

    condition_metric_name = "column_values.zd_existing_region_code"
    condition_value_keys = ("level",)

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, level="sigungu", **kwargs):
        return column.map(lambda v: is_existing_region_code(v, level)).astype(bool)

    @column_condition_partial(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(cls, column, level="sigungu", **kwargs):
        return sa.func.regexp_full_match(column, sa.literal(region_regex(level)), type_=sa.Boolean)


class ExpectColumnValuesToBeValidRrn(ColumnMapExpectation):
    """Expect resident registration numbers (YYMMDD-SXXXXXX) with an existing birth date and, for
    numbers issued before October 2020, a correct check digit. Nulls are left to `not_be_null`."""

    map_metric: ClassVar[str] = "column_values.zd_valid_rrn"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["zerodoc", "identifier"]}


class ExpectColumnValuesToBeValidYyyymmdd(ColumnMapExpectation):
    """Expect `YYYYMMDD` text naming a day that exists (catches legacy values such as `20230230`)."""

    map_metric: ClassVar[str] = "column_values.zd_valid_yyyymmdd"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["zerodoc", "date"]}


class ExpectColumnValuesToBeValidForeignRegistrationNumber(ColumnMapExpectation):
    """Expect foreign registration numbers: the RRN rules with a 7th digit of 5-8 (5/6 born 1900s,
    7/8 born 2000s); check digit (base 13) only for numbers issued before October 2020."""

    map_metric: ClassVar[str] = "column_values.zd_valid_frn"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["zerodoc", "identifier"]}


class ExpectColumnValuesToBeValidBusinessRegistrationNumber(ColumnMapExpectation):
    """Expect business registration numbers `XXX-XX-XXXXX` whose 10th digit is the NTS check digit."""

    map_metric: ClassVar[str] = "column_values.zd_valid_brn"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["zerodoc", "identifier"]}


class ExpectColumnValuesToBePlausibleHangulName(ColumnMapExpectation):
    """Expect a name of 2-5 precomposed Hangul syllables (no jamo, Latin letters, digits or spaces)."""

    map_metric: ClassVar[str] = "column_values.zd_plausible_hangul_name"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly",)
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["zerodoc", "name"]}


class ExpectColumnValuesToBeExistingRegionCode(ColumnMapExpectation):
    """Expect an administrative code that exists: `level="sigungu"` (5 digits, default) or `"sido"` (2)."""

    level: str = "sigungu"
    map_metric: ClassVar[str] = "column_values.zd_existing_region_code"
    success_keys: ClassVar[tuple[str, ...]] = ("mostly", "level")
    library_metadata: ClassVar[dict] = {"maturity": "production", "tags": ["zerodoc", "region"]}
