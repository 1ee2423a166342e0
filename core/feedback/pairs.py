"""Reading the pair table (pairs.parquet) as the stages that train on it do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def read_pairs(path: Path, ties: bool = False, columns: list[str] | None = None) -> pd.DataFrame:
    """The pair table's rows; without its ties unless asked (a tie ranks neither response). A
    table merged before ties were kept has no tie column: every vote of it took a side."""
    has_ties = "tie" in pq.read_schema(path).names
    df = pd.read_parquet(path, columns=columns and [*columns, *(["tie"] if has_ties else [])])
    if not has_ties:
        df["tie"] = False
    return df if ties else df[~df["tie"]].reset_index(drop=True)
