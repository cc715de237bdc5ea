"""Reading a day's inputs from the lake: target split, source, lookback window, candidates.

Steps read their inputs only through this module. The lake holds validated days only
(validate publishes them from staging), and every reader goes through
:meth:`Layout.require`, so a missing partition fails with its path and the name of the task
that should have written it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ecat_tasks.config import EcatConfig
from ecat_tasks.models.data import read_lake
from ecat_tasks.models.daycache import DayCache, string_values
from ecat_tasks.models.stream import Part, select_ids
from ecat_tasks.splits import (
    SLICE_KEYS, VALIDATION, TargetSplit, slice_codes, slice_settings, split_target, train_mask,
)
from ecat_tasks.storage import MANIFEST, Layout, read_manifest, shift_ds


def target_rows(ds: str, layout: Layout) -> pd.DataFrame:
    """Every validated target row of ``ds``."""
    return read_lake([layout.require(layout.lake("target", ds))])


def next_day_rows(ds: str, cfg: EcatConfig, layout: Layout) -> pd.DataFrame:
    """The target rows of ``ds`` that ``ds - 1``'s models are reported on (the next-day metric): every
    row but ``ds``'s validation slice, in lake order. The guard (``guard_slice=previous_day``) reads
    those validation rows scored by the same models, so no reported row ever decides anything."""
    frame = target_rows(ds, layout)
    return frame[slice_codes(frame, cfg) != VALIDATION].reset_index(drop=True)


def target_day(ds: str, cfg: EcatConfig, layout: Layout) -> TargetSplit:
    """(train, validation, holdout) target rows of ``ds``; only ``train`` may train a model."""
    return split_target(target_rows(ds, layout), cfg)


def window_days(ds: str, cfg: EcatConfig, layout: Layout) -> list[str]:
    """Days of the lookback window ending at ``ds`` that the lake holds (``ds`` required)."""
    layout.require(layout.lake("target", ds))
    days = []
    for back in range(cfg.lookback_days - 1, -1, -1):
        day = shift_ds(ds, -back)
        if layout.lake_has(day):
            days.append(day)
    return days


# --- streamed parts: what training reads, without loading a day into memory ------------------
def target_train_part(days: list[str], cfg: EcatConfig, layout: Layout) -> Part:
    """The train slice of the target rows of ``days`` (:func:`split_target`'s rule), selected by
    position: each day's key columns are read once and sliced whole (the time cut needs the whole
    day), so no batch of any epoch hashes or compares keys again."""
    paths = tuple(layout.require(layout.lake("target", d)) for d in days)
    rows, start = [np.zeros(0, np.int64)], 0
    for path in paths:
        keys = lake_table(path, SLICE_KEYS).to_pandas(date_as_object=False)
        rows.append(start + np.flatnonzero(train_mask(keys, cfg)))
        start += len(keys)
    return Part(paths=paths, rows=np.concatenate(rows), name="target_train")


def source_part(days: list[str], layout: Layout) -> Part:
    """Every source row of ``days``."""
    return Part(paths=tuple(layout.require(layout.lake("source", d)) for d in days), name="source")


def entire_space_parts(days: list[str], cfg: EcatConfig, layout: Layout) -> list[Part]:
    """Source plus target-train rows of ``days``, streamed (validation rows and holdout users never included)."""
    return [source_part(days, layout), target_train_part(days, cfg, layout)]


SOURCE_ROWS = "source_rows"  # the day cache's kind of select_ids' positions


def source_subset_part(ds: str, layout: Layout, sample_ids: pa.Array, weight: np.ndarray | None = None,
                       name: str = "candidates") -> Part:
    """Source rows of ``ds`` whose sample_id is in ``sample_ids`` (weight aligned with them, default 1).

    The positions are looked up once per day (``select_ids`` reads the day's whole id column)
    and shared through the day cache by every task selecting the same ids with the same weights
    from the same published source partition (its version directory and checksum are in the key).
    """
    part = replace(source_part([ds], layout), name=name)
    source = part.paths[0]
    cache = DayCache(layout, ds)
    key = cache.key(SOURCE_ROWS, source.resolve(), read_manifest(source).get("checksum"), *string_values(sample_ids),
                    "no weight" if weight is None else np.asarray(weight, np.float32))
    hit = cache.get(SOURCE_ROWS, key)
    if hit is not None:
        return replace(part, rows=hit["rows"], row_weight=hit["row_weight"] if weight is not None else None)
    part = select_ids(part, sample_ids, weight)
    cache.put(SOURCE_ROWS, key, rows=part.rows,
              row_weight=part.row_weight if part.row_weight is not None else np.zeros(0, np.float32))
    return part


def candidates_part(ds: str, layout: Layout) -> tuple[Part, int, float]:
    """Kept, weighted source candidates of ``ds`` (domain_reweight's output): the part, its rows, its weight sum.

    Only the two columns of the weights partition are held in memory, never the source rows.
    """
    table = pq.read_table(layout.require(layout.partition("selection/weights", ds)), columns=["sample_id", "weight"])
    weight = table.column("weight").to_numpy().astype(np.float32)
    return source_subset_part(ds, layout, table.column("sample_id").combine_chunks(), weight), len(weight), float(weight.sum())


def graph_candidates_ids(ds: str, layout: Layout) -> pa.Table:
    """(sample_id, graph_score, graph_weight) of graph_select's candidates for ``ds``.

    A partition written before soft selection has no graph_weight: its candidates weigh 1.
    """
    path = layout.require(layout.partition("selection/graph", ds))
    names = pq.ParquetDataset(path).schema.names
    table = pq.read_table(path, columns=[c for c in ("sample_id", "graph_score", "graph_weight") if c in names])
    if "graph_weight" not in names:
        table = table.append_column("graph_weight", pa.array(np.ones(table.num_rows)))
    return table


def source_sample_ids(ds: str, layout: Layout) -> pa.ChunkedArray:
    """The sample_ids of ``ds``'s source rows, in file order (one column, never the rows)."""
    return pq.read_table(layout.require(layout.lake("source", ds)), columns=["sample_id"]).column("sample_id")


def eval_sets(ds: str, cfg: EcatConfig, layout: Layout) -> dict[str, pd.DataFrame]:
    """The validation and cold-start holdout slices of ``ds``'s target rows."""
    split = target_day(ds, cfg, layout)
    return {"validation": split.validation, "holdout": split.holdout}


def validation_window(ds: str, cfg: EcatConfig, layout: Layout, days: int) -> pd.DataFrame:
    """The validation rows of the last ``days`` days of the lookback window ending at ``ds``
    (no model trains on a validation row, on any day: every decision may read them)."""
    parts = [target_day(day, cfg, layout).validation for day in window_days(ds, cfg, layout)[-days:]]
    return pd.concat(parts, ignore_index=True)


def previous_day_pairs(ds: str, cfg: EcatConfig, layout: Layout, days: int) -> list[tuple[str, str]]:
    """(day before, day) for the last ``days`` days of the lookback window ending at ``ds`` that have
    an earlier lake day in the window: the models of the day before served the day, and the day's
    validation rows, which no model of the day before trained on, say how they did on it."""
    lake = window_days(ds, cfg, layout)
    return [(before, day) for before, day in zip(lake, lake[1:])][-days:]


def days_sliced_as_today(days: list[str], cfg: EcatConfig, layout: Layout) -> tuple[list[str], str | None]:
    """The newest of ``days`` (oldest first) whose student trained under today's slice settings,
    and the newest day whose student did not (None when none): a changed ``seed``,
    ``validation_by``, ... re-slices the older days, whose rows that validate now the chain has
    trained on. A day without a student manifest, or one from before the manifests recorded the
    settings, counts as today's."""
    today = json.loads(json.dumps(slice_settings(cfg)))  # as a manifest holds them
    for i in range(len(days) - 1, -1, -1):
        student = layout.model("student", days[i])
        recorded = read_manifest(student).get("slices") if (student / MANIFEST).is_file() else None
        if recorded is not None and recorded != today:
            return days[i + 1:], days[i]
    return days, None


def served_decision(ds: str, layout: Layout) -> dict[str, Any] | None:
    """The guard's manifest for ``ds`` (served model, fallback, reason), None when the guard did not run."""
    path = layout.model("served", ds) / MANIFEST
    return read_manifest(path.parent) if path.is_file() else None


def partition_files(path: Path) -> list[Path]:
    """A partition's Parquet files in order; a partition without one is an error (its manifest lies)."""
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"partition {path} has a manifest but no Parquet file")
    return files


def partition_batches(path: Path, rows: int, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
    """A partition's rows (staged or published) in file order, at most ``rows`` at a time; one
    empty table for an empty partition. Memory is bounded by ``rows``, not by the partition."""
    files = partition_files(path)
    empty = True
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=rows, columns=columns):
            empty = False
            yield pa.Table.from_batches([batch])
    if empty:
        schema = pq.read_schema(files[0])
        yield schema.empty_table() if columns is None else schema.empty_table().select(list(columns))


def lake_table(path: Path, columns: Sequence[str]) -> pa.Table:
    """``columns`` of a lake partition as one Arrow table (the graph's columnar path)."""
    return pa.concat_tables([pq.read_table(f, columns=list(columns)) for f in partition_files(path)]).combine_chunks()


def lake_rows(path: Path) -> int:
    """Rows of a lake partition, from the Parquet footers (no column is read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in partition_files(path))


def target_train_table(path: Path, cfg: EcatConfig, columns: Sequence[str]) -> pa.Table:
    """A target partition's training rows only: validation rows and holdout users never shape training inputs."""
    table = lake_table(path, list(dict.fromkeys([*columns, *SLICE_KEYS])))
    keep = train_mask(table.select(list(SLICE_KEYS)).to_pandas(date_as_object=False), cfg)
    return table.filter(pa.array(keep)).select(list(columns))


def domain_window(layout: Layout, domain: str, ds: str, lookback_days: int) -> list[str]:
    """Days of one domain's lookback window ending at ``ds`` that the lake holds, plus ``ds``."""
    days = [shift_ds(ds, -k) for k in range(lookback_days)]
    return sorted(d for d in days if d == ds or (layout.lake(domain, d) / MANIFEST).is_file())
