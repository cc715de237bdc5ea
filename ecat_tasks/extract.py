"""extract: warehouse ``samples`` -> ``staging/ds=/{source,target}`` Parquet partitions.

Extracts the day ``ds`` (always, replacing its staging) and any day of the lookback window
that the lake lacks, so graph selection and a teacher cold start find their history once
validate has checked and published them. Nothing here is read by training: only a passing
``validate`` moves a day from staging into the lake. Rows stream in batches into a temporary
directory that becomes the staged day only when both domains are complete: an empty target
day or an unknown scenario leaves staging and the lake as they were.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecat_tasks.config import EcatConfig
from ecat_tasks.errors import DataError, PermanentError
from ecat_tasks.spec import FeatureSpec, require_warehouse, spec_of, string_ids
from ecat_tasks.sql import bind, paramstyle_of, render_sql
from ecat_tasks.storage import Layout, atomic_dir, clean_stale_tmp, drop_partition, shift_ds, write_manifest

log = logging.getLogger(__name__)

class EmptyTargetError(DataError):
    """The target scenario has no rows for the day: never train a silent empty model."""


class SchemaError(DataError):
    """The warehouse lacks a contract column, or one arrives with values of the wrong type."""


class WarehouseQueryError(DataError):
    """The warehouse refused an extraction query for a reason other than connection or lock."""


# Warehouse errors that can heal by themselves (a lost connection, a lock held by a loader):
# the task's retries are for these. Matched by class name along the MRO, so no driver import.
TRANSIENT = {"IOException", "ConnectionException", "TransactionException", "OperationalError", "InterfaceError",
             "OSError", "TimeoutError", "ConnectionError"}


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a connection or lock error of the warehouse (worth a retry)."""
    return any(k.__name__ in TRANSIENT for k in type(exc).__mro__)


def _batches(connection: Any, sql_name: str, params: dict[str, Any], batch_rows: int,
             spec: FeatureSpec) -> Iterator[pa.RecordBatch]:
    """Stream a query's rows as Arrow batches: DuckDB natively, any other DB-API by fetchmany.

    The query's identifiers (table, columns) are rendered from ``spec``; values stay bound."""
    sql, bound = bind(render_sql(sql_name, spec), params, paramstyle_of(connection))
    if type(connection).__module__.startswith("duckdb"):
        reader = connection.execute(sql, bound).fetch_record_batch(batch_rows)
        for batch in reader:
            yield batch
        return
    cursor = connection.cursor()
    try:
        cursor.execute(sql, bound)
        names = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(batch_rows):
            columns = list(zip(*rows))
            yield pa.RecordBatch.from_arrays([pa.array(c) for c in columns], names=names)
    finally:
        cursor.close()


def _missing_columns_message(missing: list[str], ds: str, spec: FeatureSpec) -> str:
    return (f"warehouse table {spec.table} has no column(s) {missing} on ds={ds}; the feature spec {spec.path} "
            f"needs them: fix the warehouse load (or the spec); retrying cannot help")


def _uncastable(column: pa.ChunkedArray, target: pa.DataType) -> tuple[int, list[Any]]:
    """(rows, a few example values) of ``column`` that cannot be read as ``target``."""
    bad = []
    for value in pc.unique(column).to_pylist()[:100_000]:
        try:
            pa.array([value], type=column.type).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            bad.append(value)
    if not bad:
        return len(column), []
    rows = int(pc.sum(pc.is_in(column, value_set=pa.array(bad, type=column.type))).as_py() or 0)
    return rows, bad[:5]


def _conform(batch: pa.RecordBatch, ds: str, spec: FeatureSpec) -> pa.Table:
    """Cast a batch to the spec's lake contract (string ids hashed to int64), naming a missing
    column or a column of the wrong type."""
    schema = spec.arrow_schema()
    missing = [name for name in schema.names if name not in batch.schema.names]
    if missing:
        raise SchemaError(_missing_columns_message(missing, ds, spec))
    table = pa.Table.from_batches([batch]).select(schema.names)
    for col in spec.lake_columns():
        if col.sparse_type == "string" and col.kind in ("id", "sparse"):
            values = table.column(col.name).to_numpy(zero_copy_only=False)
            table = table.set_column(table.schema.get_field_index(col.name), col.name, pa.array(string_ids(values)))
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    for f in schema:  # which column: the cast error names neither it nor the day
        column = table.column(f.name)
        try:
            column.cast(f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            rows, examples = _uncastable(column, f.type)
            raise SchemaError(
                f"warehouse column {f.name!r} on ds={ds}: {rows} of {len(column)} rows (in a batch) cannot be read as "
                f"{f.type} (it arrives as {column.type}); examples {examples}. Fix the warehouse load or the "
                f"column's type; retrying cannot help"
            ) from None
    return table.cast(schema)


def _write_domain(connection: Any, domain: str, ds: str, cfg: EcatConfig, out: Path, spec: FeatureSpec) -> int:
    params = {"start_ds": ds, "end_ds": ds, "target_scenario": cfg.target_scenario}
    schema = spec.arrow_schema()
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in _batches(connection, f"extract_{domain}", params, cfg.extract_batch_rows, spec):
            if batch.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(out / "part-00000.parquet", schema)
            writer.write_table(_conform(batch, ds, spec))
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # empty domain: keep a valid, empty file so readers see the schema
        pq.write_table(schema.empty_table(), out / "part-00000.parquet")
    return rows


def rows_landed(connection: Any, ds: str, spec: FeatureSpec) -> int:
    """Rows of ``ds`` in the spec's warehouse table (any scenario): what ``wait_for_data`` waits for."""
    batches = list(_batches(connection, "day_row_count", {"ds": ds}, 10, spec))
    return int(batches[0].column(0)[0].as_py() or 0) if batches and batches[0].num_rows else 0


def _known_scenarios(connection: Any, ds: str, lookback_days: int, spec: FeatureSpec) -> list[str]:
    params = {"start_ds": shift_ds(ds, -lookback_days), "end_ds": ds}
    batches = list(_batches(connection, "scenario_counts", params, 10_000, spec))
    return [s for b in batches for s in b.column(0).to_pylist()]


def extract_day(connection: Any, ds: str, cfg: EcatConfig, layout: Layout, spec: FeatureSpec | None = None) -> dict[str, int]:
    """Stage one day, both domains in one atomic step; returns rows per domain."""
    spec = spec or spec_of(cfg)
    with atomic_dir(layout.staging_day(ds)) as day_tmp:
        tgt_tmp, src_tmp = day_tmp / "target", day_tmp / "source"
        tgt_tmp.mkdir()
        src_tmp.mkdir()
        n_target = _write_domain(connection, "target", ds, cfg, tgt_tmp, spec)
        if n_target == 0:
            known = _known_scenarios(connection, ds, cfg.lookback_days, spec)
            if cfg.target_scenario not in known:
                raise EmptyTargetError(
                    f"unknown target scenario {cfg.target_scenario!r}: no rows in the {cfg.lookback_days} days "
                    f"up to {ds}; scenarios present: {known}. Fix the 'target_scenario' param."
                )
            raise EmptyTargetError(
                f"target scenario {cfg.target_scenario!r} has no rows on {ds} (it has rows on nearby days): "
                f"check the warehouse load for {ds} before re-running; nothing was written"
            )
        n_source = _write_domain(connection, "source", ds, cfg, src_tmp, spec)
        params = {"target_scenario": cfg.target_scenario, "label": cfg.label}
        columns, about = spec.lake_names, spec.summary()
        write_manifest(tgt_tmp, "extract", ds, domain="target", rows=n_target, columns=columns, spec=about, parameters=params)
        write_manifest(src_tmp, "extract", ds, domain="source", rows=n_source, columns=columns, spec=about, parameters=params)
    return {"target": n_target, "source": n_source}


def extract(connection: Any, ds: str, cfg: EcatConfig, layout: Layout | None = None) -> dict[str, Any]:
    """Task entry point: stage ``ds`` and the lookback days the lake lacks, for validate to check."""
    layout = layout or Layout()
    t0 = time.perf_counter()
    clean_stale_tmp(layout.root / "staging")
    days = [ds]
    for back in range(1, cfg.lookback_days):
        day = shift_ds(ds, -back)
        if not layout.lake_has(day):
            days.append(day)
    counts: dict[str, dict[str, int]] = {}
    no_history = []
    try:
        # The feature spec's check first: every missing column, wrong type and unknown label at
        # once, before anything is written (a SpecError is a DataError: no retries).
        spec = spec_of(cfg)
        require_warehouse(spec, connection, cfg.label, (shift_ds(ds, -(cfg.lookback_days - 1)), ds))
        counts[ds] = extract_day(connection, ds, cfg, layout, spec)
        for day in days[1:]:
            try:
                counts[day] = extract_day(connection, day, cfg, layout, spec)
            except EmptyTargetError:
                no_history.append(day)
                drop_partition(layout.staging_day(day))  # an older staging of it must not be published now
    except PermanentError:
        raise
    except Exception as exc:
        if is_transient(exc):
            log.warning("extract ds=%s: warehouse connection or lock error (%s: %s); the task's retries apply",
                        ds, type(exc).__name__, str(exc).splitlines()[0][:200])
            raise
        raise WarehouseQueryError(
            f"extraction query for ds={ds} failed with {type(exc).__name__}: {str(exc).splitlines()[0][:300]}; "
            f"not a connection or lock error, so retrying cannot help"
        ) from exc
    if no_history:
        log.info("lookback days without target rows in the warehouse (history starts later): %s", sorted(no_history))
    secs = time.perf_counter() - t0
    rows = sum(c["target"] + c["source"] for c in counts.values())
    manifest = {
        "ds": ds,
        "target_path": str(layout.staging("target", ds)),
        "source_path": str(layout.staging("source", ds)),
        "target_rows": counts[ds]["target"],
        "source_rows": counts[ds]["source"],
        "days_extracted": sorted(counts),
        "seconds": round(secs, 2),
    }
    log.info(
        "extract ds=%s: target=%d rows, source=%d rows -> %s (staged for validate); lookback days extracted=%d; "
        "%d rows in %.1fs (%.0f rows/s)",
        ds, counts[ds]["target"], counts[ds]["source"], layout.root / "staging", len(counts) - 1, rows, secs, rows / max(secs, 1e-9),
    )
    return manifest
