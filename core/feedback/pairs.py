"""Reading the pair table (pairs.parquet) as the stages that train on it do."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_pairs(path: Path, ties: bool = False, columns: list[str] | None = None) -> pd.DataFrame:
    """The pair table's rows; without its ties unless asked (a tie ranks neither response)."""
    df = pd.read_parquet(path, columns=columns and [*columns, "tie"])
    return df if ties else df[~df["tie"]].reset_index(drop=True)
