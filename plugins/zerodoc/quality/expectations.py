"""Custom GX expectations for identifiers and legacy dates, backed by `identifiers` in both engines."""

from __future__ import annotations

from typing import ClassVar

import sqlalchemy as sa
from great_expectations.execution_engine import PandasExecutionEngine, SqlAlchemyExecutionEngine
from great_expectations.expectations.expectation import ColumnMapExpectation
from great_expectations.expectations.metrics import ColumnMapMetricProvider, column_condition_partial

from zerodoc.quality.identifiers import is_valid_rrn, is_valid_yyyymmdd


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
