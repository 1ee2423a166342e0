"""Great Expectations gates: table checks stop a stage, row checks quarantine rows.

A dataset first has to have the columns it needs and at least one row (otherwise nothing
after it can be trusted). Then row-level expectations (not null, lengths, chosen != rejected,
no duplicates) run in one validation; each row they flag is set aside with its reasons, and
if more than the allowed fraction is set aside the gate fails as a whole with a one-line
report naming the file, the reasons and the first offending records.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from typing import Literal

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import ColumnPairMapExpectation
from great_expectations.expectations.metrics.map_metric_provider import (
    ColumnPairMapMetricProvider,
    column_pair_condition_partial,
)

from rlhf.core.settings import UserError


class GateError(UserError):
    """A dataset failed its validation gate."""


@dataclass(frozen=True)
class Suite:
    """What a dataset must satisfy."""

    name: str
    columns: tuple[str, ...]  # required (others are allowed and kept)
    text: tuple[str, ...] = ()  # text columns: not null, length within bounds
    present: tuple[str, ...] = ()  # other columns every record must give a value
    distinct: tuple[str, str] | None = None  # must differ within a record (chosen, rejected)
    # (column A, column B, reason): must differ as read (columns of the text normalised)
    read_distinct: tuple[str, str, str] | None = None
    unique: tuple[str, ...] = ()  # no two records may repeat these columns together
    min_chars: int = 1
    max_chars: int = 2000


@dataclass
class Outcome:
    clean: pd.DataFrame
    quarantined: pd.DataFrame  # the input rows set aside, with a "reason" column
    statistics: dict = field(default_factory=dict)


class ColumnPairValuesDiffer(ColumnPairMapMetricProvider):
    """Row by row: column A differs from column B, compared column against column (GX's
    unique-within-record applies nunique to every row: most of an import's time)."""

    condition_metric_name = "column_pair_values.differ"
    condition_domain_keys = (
        "batch_id",
        "table",
        "column_A",
        "column_B",
        "row_condition",
        "condition_parser",
        "ignore_row_if",
    )
    condition_value_keys = ()

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):  # noqa: N803 (GX passes these names)
        return column_A != column_B


class ExpectColumnPairValuesToDiffer(ColumnPairMapExpectation):
    """Expect the values of columns A and B to differ in every row."""

    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = (
        "both_values_are_missing"
    )
    map_metric = "column_pair_values.differ"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")
    args_keys = ("column_A", "column_B")


def new_context():
    for name in list(logging.root.manager.loggerDict):  # GX sets some of its loggers to INFO
        if name.startswith("great_expectations"):
            logging.getLogger(name).setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


_SOURCE_IDS = itertools.count()
DUPLICATE = "duplicate of an earlier record"


def _expectations(suite: Suite) -> list[gxe.Expectation]:
    """The row-level expectations, each carrying in meta the reason given to rows it flags."""
    out: list[gxe.Expectation] = []
    for col in suite.text:
        out.append(
            gxe.ExpectColumnValuesToNotBeNull(column=col, meta={"reason": f"{col}: missing"})
        )
        out.append(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=col,
                min_value=suite.min_chars,
                max_value=suite.max_chars,
                meta={"reason": f"{col}: length outside [{suite.min_chars}, {suite.max_chars}]"},
            )
        )
        out.append(
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=col, regex=r"^\s*$", meta={"reason": f"{col}: blank"}
            )
        )
    for col in suite.present:
        out.append(
            gxe.ExpectColumnValuesToNotBeNull(column=col, meta={"reason": f"{col}: missing"})
        )
    if suite.distinct:
        a, b = suite.distinct
        out.append(
            ExpectColumnPairValuesToDiffer(column_A=a, column_B=b, meta={"reason": f"{a} == {b}"})
        )
    if suite.read_distinct:
        a, b, reason = suite.read_distinct
        out.append(ExpectColumnPairValuesToDiffer(column_A=a, column_B=b, meta={"reason": reason}))
    if len(suite.unique) == 1:
        out.append(
            gxe.ExpectColumnValuesToBeUnique(column=suite.unique[0], meta={"reason": DUPLICATE})
        )
    elif suite.unique:
        out.append(
            gxe.ExpectCompoundColumnsToBeUnique(
                column_list=list(suite.unique), meta={"reason": DUPLICATE}
            )
        )
    return out


def _table_gate(df: pd.DataFrame, suite: Suite, where: str) -> None:
    missing = [c for c in suite.columns if c not in df.columns]
    if missing:
        raise GateError(
            f"{where}: missing column(s) {', '.join(missing)} "
            f"(found: {', '.join(c for c in map(str, df.columns) if c != '_record') or 'none'})"
        )
    if df.empty:
        raise GateError(f"{where}: no records")


def flag_rows(ctx, df: pd.DataFrame, suite: Suite) -> dict[int, list[str]]:
    """Row position -> reasons, from one GX validation of the row-level expectations."""
    # A context is reused across datasets and chunks; each validation gets its own data
    # source, deleted afterwards, or the context would keep every DataFrame it was given.
    name = f"ds-{suite.name}-{next(_SOURCE_IDS)}"
    batch = (
        ctx.data_sources.add_pandas(name)
        .add_dataframe_asset(name=suite.name)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": df})
    )
    gx_suite = gx.ExpectationSuite(name=f"{suite.name}_suite", expectations=_expectations(suite))
    try:
        result = batch.validate(gx_suite, result_format="COMPLETE")
    finally:
        del batch
        ctx.data_sources.delete(name)
    flagged: dict[int, list[str]] = {}
    for r in result.results:
        if r.success:
            continue
        reason = r.expectation_config.meta["reason"]
        for idx in r.result.get("unexpected_index_list") or []:
            flagged.setdefault(int(idx), []).append(reason)
    return flagged


def validate(
    df: pd.DataFrame,
    suite: Suite,
    where: str,
    max_fraction: float,
    prior: pd.DataFrame | None = None,
    ctx=None,
) -> Outcome:
    """Run the gate on df, which has a "_record" column naming each source record.

    prior: records already set aside before validation (unreadable ones), with their
    "_record" and "reason"; they count towards the gate's fraction and the report.
    """
    if df.empty and prior is not None and len(prior):  # every record was unreadable
        raise GateError(f"{where}: {report(records_by_reason(prior), len(prior), max_fraction)}")
    _table_gate(df, suite, where)
    df = df.reset_index(drop=True)
    flagged = flag_rows(ctx or new_context(), df.drop(columns=["_record"]), suite)
    if suite.unique:  # GX flags every member of a duplicate group; keep the first of each
        first = ~df.duplicated(list(suite.unique), keep="first")
        for i in first[first].index:
            reasons = [r for r in flagged.get(i, []) if r != DUPLICATE]
            flagged[i] = reasons
    flagged = {i: r for i, r in flagged.items() if r}
    bad = df.index.isin(list(flagged))
    quarantined = df[bad].copy()
    quarantined["reason"] = ["; ".join(flagged[i]) for i in quarantined.index]
    if prior is not None and len(prior):
        quarantined = pd.concat([prior, quarantined], ignore_index=True)
    total = len(df) + (0 if prior is None else len(prior))
    stats = {"records": total, "clean": int((~bad).sum()), "quarantined": len(quarantined)}
    if len(quarantined) > max_fraction * total:
        raise GateError(f"{where}: {report(records_by_reason(quarantined), total, max_fraction)}")
    return Outcome(df[~bad].reset_index(drop=True), quarantined, stats)


def records_by_reason(rows: pd.DataFrame) -> dict[str, list[str]]:
    return {
        reason: group["_record"].astype(str).tolist()
        for reason, group in rows.groupby("reason", sort=True)
    }


def report(
    rejected: dict[str, list[str]],
    total: int,
    max_fraction: float,
    counts: dict[str, int] | None = None,
) -> str:
    """One line: how many records failed, over which limit, why, and where.

    rejected: reason -> records (all of them, or the first few when counts gives the totals).
    """
    counts = counts or {reason: len(records) for reason, records in rejected.items()}
    n = sum(counts.values())
    parts = []
    for reason in sorted(counts):
        where = ", ".join(rejected[reason][:5])
        more = ", ..." if counts[reason] > 5 else ""
        parts.append(f"{reason}: {counts[reason]} (records {where}{more})")
    return (
        f"{n} of {total} records rejected "
        f"({n / total:.0%}, limit {max_fraction:.0%}): " + "; ".join(parts)
    )
