"""Reading a day's inputs from the lake: target split, source, lookback window, candidates.

Every reader reads the lake, which holds validated days only (validate publishes them from
staging), and goes through :meth:`Layout.require`, so a missing partition fails with its
path and the name of the task that should have written it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ecat_tasks.config import EcatConfig
from ecat_tasks.models.data import read_lake
from ecat_tasks.splits import TargetSplit, split_target
from ecat_tasks.storage import Layout, shift_ds


def target_rows(ds: str, layout: Layout) -> pd.DataFrame:
    """Every validated target row of ``ds`` (the next-day evaluation set of ``ds - 1``'s models)."""
    return read_lake([layout.require(layout.lake("target", ds))])


def target_day(ds: str, cfg: EcatConfig, layout: Layout) -> TargetSplit:
    """(train, validation, holdout) target rows of ``ds``; only ``train`` may train a model."""
    return split_target(target_rows(ds, layout), cfg)


def source_day(ds: str, layout: Layout) -> pd.DataFrame:
    return read_lake([layout.require(layout.lake("source", ds))])


def window_days(ds: str, cfg: EcatConfig, layout: Layout) -> list[str]:
    """Days of the lookback window ending at ``ds`` that the lake holds (``ds`` required)."""
    layout.require(layout.lake("target", ds))
    days = []
    for back in range(cfg.lookback_days - 1, -1, -1):
        day = shift_ds(ds, -back)
        if layout.lake_has(day):
            days.append(day)
    return days


def entire_space(days: list[str], cfg: EcatConfig, layout: Layout) -> pd.DataFrame:
    """Source plus target-train rows of ``days`` (validation and holdout users never included)."""
    parts = []
    for day in days:
        parts.append(source_day(day, layout))
        parts.append(target_day(day, cfg, layout).train)
    return pd.concat(parts, ignore_index=True)


def weighted_candidates(ds: str, layout: Layout, source: pd.DataFrame | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Kept source candidates of ``ds`` with their importance weights, in sample_id order."""
    weights = pq.read_table(layout.require(layout.partition("selection/weights", ds))).to_pandas()
    source = source_day(ds, layout) if source is None else source
    frame = source.merge(weights[["sample_id", "weight"]], on="sample_id", how="inner")
    frame = frame.sort_values("sample_id", kind="stable").reset_index(drop=True)
    w = frame.pop("weight").to_numpy(np.float32)
    return frame, w
