"""validate: Great Expectations 1.x suites over the staged source and target partitions.

A failed suite raises :class:`ValidationFailed` whose message lists every failed
expectation with counts and example values, after writing the results (JSON) and GX's HTML
data docs under ``reports/ds=/validation/``. Only a day that passes is published from
staging into the lake, so downstream tasks never read bad data.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from ecat_tasks.config import EcatConfig
from ecat_tasks.errors import PermanentError
from ecat_tasks.inputs import partition_batches
from ecat_tasks.models.data import DenseHistogram
from ecat_tasks.runtime import library_defaults
from ecat_tasks.spec import FeatureSpec, spec_of
from ecat_tasks.storage import Layout, atomic_dir, drop_partition, publish_staged, read_manifest, shift_ds

log = logging.getLogger(__name__)

_PANDAS_TYPES = {
    "string": ["str"],
    "int64": ["int64", "Int64", "int32", "int64[pyarrow]"],
    "float64": ["float64", "Float64", "double[pyarrow]"],
}


class ValidationFailed(PermanentError, RuntimeError):
    """A suite failed; the message is the readable summary on-call reads."""


def build_expectations(domain: str, ds: str, rows_min: int, cfg: EcatConfig, spec: FeatureSpec) -> list[Any]:
    """The suite of one domain, derived from the feature spec's lake contract."""
    import great_expectations as gx

    E = gx.expectations
    exps: list[Any] = [E.ExpectTableRowCountToBeBetween(min_value=rows_min)]
    for f in spec.arrow_schema():
        exps.append(E.ExpectColumnToExist(column=f.name))
        kind = str(f.type)
        if kind in ("string", "int64", "double"):
            types = _PANDAS_TYPES["float64" if kind == "double" else kind]
            exps.append(E.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=types))
    for col in spec.lake_columns():
        if col.kind in ("role", "id"):
            exps.append(E.ExpectColumnValuesToNotBeNull(column=col.name))
    exps.append(E.ExpectColumnValuesToBeUnique(column="sample_id"))
    for label in spec.labels:
        exps.append(E.ExpectColumnValuesToNotBeNull(column=label.name))
        exps.append(E.ExpectColumnValuesToBeInSet(column=label.name, value_set=list(label.values)))
    exps.append(E.ExpectColumnMeanToBeBetween(column=cfg.label, min_value=cfg.label_rate_min, max_value=cfg.label_rate_max))
    exps.append(E.ExpectColumnValuesToBeInSet(column="ds", value_set=[ds]))
    if domain == "target":
        exps.append(E.ExpectColumnValuesToBeInSet(column="scenario", value_set=[cfg.target_scenario]))
    else:
        exps.append(E.ExpectColumnValuesToNotBeInSet(column="scenario", value_set=[cfg.target_scenario]))
    for sf in spec.all_sparse:  # string features are hashed ids: no bound
        if sf.low is not None and sf.type == "int":
            exps.append(E.ExpectColumnValuesToBeBetween(column=sf.name, min_value=sf.low))
    for df in spec.dense:
        exps.append(E.ExpectColumnValuesToBeBetween(column=df.name, min_value=df.low, max_value=df.high))
    return exps


RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}


def _frame(table: pa.Table, offset: int) -> pd.DataFrame:
    """A chunk as GX sees it, indexed by its row numbers in the partition (so GX's unexpected
    index lists are the partition's)."""
    frame = table.to_pandas()
    frame.index = pd.RangeIndex(offset, offset + len(frame))
    if "ds" in frame.columns:  # compare the partition day as text, whatever the reader's date type
        frame["ds"] = frame["ds"].astype(str)
    # GX 1.24's type check does not recognise pandas 3's default string dtype: hand it objects.
    for col in frame.columns:
        if pd.api.types.is_string_dtype(frame[col].dtype):
            frame[col] = frame[col].astype(object)
    return frame


def _chunks(path: Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The partition's rows in file order as GX frames, at most ``rows`` at a time."""
    offset = 0
    for table in partition_batches(path, rows, columns):
        yield _frame(table, offset)
        offset += table.num_rows


class _Partition:
    """What the suite needs of a whole partition, accumulated chunk by chunk: rows, the label's
    sum, and one 64-bit hash per non-null sample_id (8 bytes a row, never the rows)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.rows = 0
        self.label_sum = 0
        self.label_count = 0
        self.id_nulls = 0
        self._hashes: list[np.ndarray] = []

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        if self.label in frame and pd.api.types.is_numeric_dtype(frame[self.label].dtype):
            values = frame[self.label].dropna()
            self.label_sum += values.sum()
            self.label_count += len(values)
        if "sample_id" in frame:
            ids = frame["sample_id"]
            present = ids.notna().to_numpy()
            self.id_nulls += int((~present).sum())
            self._hashes.append(pd.util.hash_array(ids.to_numpy()[present]))

    def label_mean(self) -> float:
        return float(self.label_sum / self.label_count) if self.label_count else float("nan")

    def duplicates(self, path: Path, chunk_rows: int) -> tuple[int, list[Any], list[int]]:
        """(rows whose sample_id occurs more than once, the first five such values, their row numbers).

        Equal hashes are only candidates: a second pass over the sample_id column alone counts
        the candidates' actual values, so a hash collision never fails a day."""
        hashes = np.concatenate(self._hashes) if self._hashes else np.zeros(0, np.uint64)
        self._hashes = []  # 8 bytes a row from here: sorted in place
        hashes.sort()
        candidates = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
        del hashes
        if not len(candidates):
            return 0, [], []
        counts: dict[Any, int] = {}
        first_rows: dict[Any, list[int]] = {}
        for frame in _chunks(path, chunk_rows, ["sample_id"]):
            ids = frame["sample_id"]
            ids = ids[ids.notna()]
            hit = ids[np.isin(pd.util.hash_array(ids.to_numpy()), candidates)]
            for row, value in hit.items():
                counts[value] = counts.get(value, 0) + 1
                rows = first_rows.setdefault(value, [])
                if len(rows) < RESULT_FORMAT["partial_unexpected_count"]:
                    rows.append(row)
        duplicated = [v for v, c in counts.items() if c > 1]
        first = sorted((row, v) for v in duplicated for row in first_rows[v])[:RESULT_FORMAT["partial_unexpected_count"]]
        return sum(counts[v] for v in duplicated), [v for _, v in first], [row for row, _ in first]


def _raised(result: Any) -> bool:
    """Whether GX could not evaluate an expectation (its metrics or its check raised)."""
    info = result.exception_info or {}
    return bool(info.get("raised_exception")) or bool(info) and "raised_exception" not in info


def _merge_chunk_results(results: list[Any]) -> tuple[bool, dict[str, Any]]:
    """One expectation's (success, result) over the whole partition from its per-chunk results."""
    from great_expectations.expectations.expectation import _format_map_output

    if "unexpected_count" not in (results[0].result or {}):  # not row by row (column exists, column dtype)
        failed = next((r for r in results if not r.success), results[0])
        return failed.success, copy.deepcopy(failed.result)
    sums = {k: sum(r.result.get(k) or 0 for r in results) for k in ("element_count", "missing_count", "unexpected_count")}
    limit = RESULT_FORMAT["partial_unexpected_count"]
    values = [v for r in results for v in r.result.get("partial_unexpected_list", [])][:limit]
    index = [i for r in results for i in r.result.get("partial_unexpected_index_list", [])][:limit]
    nonnull = sums["element_count"] - sums["missing_count"] if "missing_count" in results[0].result else None
    out = _format_map_output(
        result_format={**RESULT_FORMAT, "include_unexpected_rows": False}, success=all(r.success for r in results),
        element_count=sums["element_count"], nonnull_count=nonnull, unexpected_count=sums["unexpected_count"],
        unexpected_list=values, unexpected_index_list=index if "partial_unexpected_index_list" in results[0].result else None,
    )
    return out["success"], out["result"]


def _whole_partition_metrics(exp: Any, part: _Partition, path: Path, chunk_rows: int) -> dict[str, Any] | None:
    """The metrics of an expectation that needs the whole partition (row count, unique sample_id,
    label mean), from the streamed pass; None for every other expectation."""
    from great_expectations.core.metric_function_types import SummarizationMetricNameSuffixes as S

    kind, column = exp.expectation_type, exp.configuration.kwargs.get("column")
    if kind == "expect_table_row_count_to_be_between":
        return {"table.row_count": part.rows}
    if kind == "expect_column_mean_to_be_between" and column == part.label:
        return {"column.mean": part.label_mean()}
    if kind == "expect_column_values_to_be_unique" and column == "sample_id":
        count, values, index = part.duplicates(path, chunk_rows)
        return {"table.row_count": part.rows, f"column_values.nonnull.{S.UNEXPECTED_COUNT.value}": part.id_nulls,
                f"{exp.map_metric}.{S.UNEXPECTED_COUNT.value}": count,
                f"{exp.map_metric}.{S.UNEXPECTED_VALUES.value}": values,
                f"{exp.map_metric}.{S.UNEXPECTED_INDEX_LIST.value}": index}
    return None


def _validate_partition(batch_def: Any, suite: Any, path: Path, cfg: EcatConfig,
                        drift: DenseHistogram | None) -> tuple[Any, int]:
    """The suite's result over a whole partition, read ``validate_chunk_rows`` rows at a time.

    GX validates every chunk; row-by-row expectations add up their counts (the examples and
    row numbers are the partition's first five), column-level ones take the first failing
    chunk's result, and the expectations that need the whole partition (row count, unique
    sample_id, label mean) are decided by GX from metrics of one streamed pass. The result is
    the one a single GX run over the whole partition gives, in its order. Returns it and the rows.
    """
    from great_expectations.core.expectation_validation_result import ExpectationSuiteValidationResult
    from great_expectations.validator.validation_statistics import calc_validation_statistics

    part = _Partition(cfg.label)
    per_chunk: dict[str, list[Any]] = {}
    first = None
    for frame in _chunks(path, cfg.validate_chunk_rows):
        result = batch_def.get_batch(batch_parameters={"dataframe": frame}).validate(suite, result_format=RESULT_FORMAT)
        if first is None:
            first = result
        for r in result.results:
            per_chunk.setdefault(r.expectation_config.id, []).append(r)
        part.add(frame)
        if drift is not None:
            drift.add(frame)
        del frame, result
    by_id = {exp.id: exp for exp in suite.expectations}
    merged = []
    for r in first.results:  # GX's order: expectations it could not evaluate first, then the suite's
        chunk_results = per_chunk[r.expectation_config.id]
        failed = next((c for c in chunk_results if _raised(c)), None)
        if failed is not None:  # GX could not evaluate it (a missing column): as GX reports it
            merged.append(copy.deepcopy(failed))
            continue
        out = copy.deepcopy(r)
        exp = by_id[r.expectation_config.id]
        metrics = _whole_partition_metrics(exp, part, path, cfg.validate_chunk_rows)
        if metrics is None:
            out.success, out.result = _merge_chunk_results(chunk_results)
        else:
            decided = exp._validate(metrics=metrics, runtime_configuration={"result_format": RESULT_FORMAT})
            out.success, out.result = decided["success"], decided["result"]
        merged.append(out)
    stats = calc_validation_statistics(merged)
    meta = copy.deepcopy(first.meta)
    meta.get("batch_markers", {}).pop("pandas_data_fingerprint", None)  # one chunk's, not the partition's
    meta["chunks"] = {"rows": cfg.validate_chunk_rows, "count": len(next(iter(per_chunk.values())))}
    return ExpectationSuiteValidationResult(
        success=stats.success, results=merged, suite_name=suite.name,
        statistics={"evaluated_expectations": stats.evaluated_expectations,
                    "successful_expectations": stats.successful_expectations,
                    "unsuccessful_expectations": stats.unsuccessful_expectations,
                    "success_percent": stats.success_percent},
        meta=meta, batch_id=first.batch_id,
    ), part.rows


def _failure_lines(suite_result: Any) -> list[str]:
    lines = []
    for r in suite_result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        res = r.result or {}
        detail = []
        if "unexpected_count" in res:
            detail.append(f"{res['unexpected_count']} unexpected of {res.get('element_count')}")
        if res.get("partial_unexpected_list"):
            examples = [str(v) for v in res["partial_unexpected_list"][:5]]
            detail.append(f"examples {examples}")
        if "observed_value" in res:
            detail.append(f"observed {res['observed_value']}")
        if r.exception_info and r.exception_info.get("raised_exception"):
            detail.append(f"error: {str(r.exception_info.get('exception_message'))[:160]}")
        lines.append(f"{cfg.type}({column or ''}): {'; '.join(detail) or 'failed'}")
    return lines


def drift_profile(ds: str, layout: Layout) -> tuple[str | None, dict[str, dict] | None]:
    """(day, dense profile) of the warm-start teacher before ``ds``; (None, None) without one."""
    prev = layout.latest_before("models/teacher", ds)
    profile = read_manifest(layout.model("teacher", prev)).get("dense_profile") if prev else None
    if not profile:
        log.info("validate ds=%s: no warm-start teacher profile before this day, dense drift not checked", ds)
        return None, None
    return prev, profile


def dense_drift(ds: str, prev: str | None, hist: DenseHistogram | None, cfg: EcatConfig) -> tuple[dict[str, Any], list[str]]:
    """PSI of each dense feature of the day's entire space against the warm-start teacher's profile.

    Warns above ``drift_psi_warn``; returns a failure line per feature above ``drift_psi_fail``.
    """
    if hist is None:
        return {}, []
    psi = hist.psi()
    failed = []
    for name, value in psi.items():
        if cfg.drift_psi_fail and value > cfg.drift_psi_fail:
            failed.append(f"dense drift({name}): PSI {value:.3f} > drift_psi_fail {cfg.drift_psi_fail} against the teacher of ds={prev}")
        elif value > cfg.drift_psi_warn:
            log.warning("validate ds=%s: dense drift of %s: PSI %.3f > drift_psi_warn %s against the teacher of ds=%s",
                        ds, name, value, cfg.drift_psi_warn, prev)
    return {"against": prev, "psi": {k: round(v, 4) for k, v in psi.items()}}, failed


def validate_day(ds: str, cfg: EcatConfig, layout: Layout, spec: FeatureSpec) -> dict[str, Any]:
    """Run both suites on the staged day ``ds``; raise :class:`ValidationFailed` on any failure.

    Each partition streams through the suite ``validate_chunk_rows`` rows at a time
    (:func:`_validate_partition`), so memory does not grow with the day's rows.
    """
    library_defaults()  # GX analytics off and its logger quiet, before GX loads
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    t0 = time.perf_counter()
    paths = {d: layout.require(layout.staging(d, ds)) for d in ("target", "source")}
    summary: dict[str, Any] = {"ds": ds, "domains": {}}
    prev, profile = drift_profile(ds, layout)
    hist = DenseHistogram(profile) if profile else None
    results: dict[str, Any] = {}
    report_dir = layout.report(ds) / "validation"
    with tempfile.TemporaryDirectory(prefix="ecat-gx-") as gx_root, atomic_dir(report_dir) as out:
        ctx = gx.get_context(mode="file", project_root_dir=gx_root)
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = ctx.data_sources.add_pandas("lake")
        run_id = RunIdentifier(run_time=datetime.datetime.now(datetime.timezone.utc))
        for domain, path in paths.items():
            rows_min = cfg.min_target_rows if domain == "target" else cfg.min_source_rows
            # added whole: adding expectations one by one rewrites the stored suite each time (seconds)
            suite = ctx.suites.add(gx.ExpectationSuite(name=f"{domain}_suite",
                                                       expectations=build_expectations(domain, ds, rows_min, cfg, spec)))
            batch_def = source.add_dataframe_asset(domain).add_batch_definition_whole_dataframe("whole")
            suite_result, rows = _validate_partition(batch_def, suite, path, cfg, hist)
            suite_result.meta.update(run_id=run_id, validation_time=run_id.run_time)
            key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
                                             run_id=run_id, batch_identifier=suite_result.batch_id)
            ctx.validation_results_store.store_validation_results(suite_result, key)
            (out / f"{domain}_result.json").write_text(json.dumps(suite_result.to_json_dict(), indent=1, default=str))
            stats = suite_result.statistics
            summary["domains"][domain] = {
                "rows": rows,
                "evaluated": int(stats["evaluated_expectations"]),
                "failed": int(stats["unsuccessful_expectations"]),
            }
            results[domain] = suite_result
        ctx.build_data_docs()
        docs = Path(gx_root) / "gx" / "uncommitted" / "data_docs" / "local_site"
        if docs.is_dir():
            shutil.copytree(docs, out / "data_docs")
        summary["drift"], drift_failures = dense_drift(ds, prev, hist, cfg)
        failures: dict[str, list[str]] = {"drift": drift_failures} if drift_failures else {}
        failures.update({d: _failure_lines(r) for d, r in results.items() if not r.success})
        summary["passed"] = not failures
        summary["failures"] = failures
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    secs = time.perf_counter() - t0
    if failures:
        lines = [f"  [{d}] {line}" for d, ls in failures.items() for line in ls]
        log.error("validate ds=%s FAILED: %d expectation(s); report %s", ds, len(lines), report_dir)
        raise ValidationFailed(
            f"validation of ds={ds} failed ({len(lines)} expectation(s)); the day is not published (the lake keeps "
            f"its previous partition, if any) and nothing downstream runs. "
            f"Fix the warehouse data (or the bounds params) and clear 'extract' for this ds.\n"
            + "\n".join(lines) + f"\nFull report: {report_dir}/data_docs/index.html"
        )
    t, s = summary["domains"]["target"], summary["domains"]["source"]
    log.info(
        "validate ds=%s passed: target %d rows (%d expectations), source %d rows (%d expectations) in %.1fs "
        "(%.0f rows/s, %d-row chunks); report %s",
        ds, t["rows"], t["evaluated"], s["rows"], s["evaluated"], secs, (t["rows"] + s["rows"]) / max(secs, 1e-9),
        cfg.validate_chunk_rows, report_dir,
    )
    return {"ds": ds, "report": str(report_dir), "target_rows": t["rows"], "source_rows": s["rows"],
            "drift_psi": summary["drift"].get("psi", {})}


def validate(ds: str, cfg: EcatConfig, layout: Layout | None = None, spec: FeatureSpec | None = None) -> dict[str, Any]:
    """Task entry point: validate the staged day and its staged lookback days; publish what passes.

    The lake holds validated days only: every reader (graph window, teacher cold start,
    next-day evaluation) reads the lake, never staging. ``ds`` failing raises
    :class:`ValidationFailed` and publishes nothing, so a failed rerun leaves the day's previous
    partition, and everything trained from it, as they were. A lookback day that fails is not
    published (a warning names it and its report): history then lacks that day.
    """
    layout = layout or Layout()
    spec = spec or spec_of(cfg)
    manifest = validate_day(ds, cfg, layout, spec)
    published, rejected = [], {}
    for back in range(1, cfg.lookback_days):
        day = shift_ds(ds, -back)
        staged = layout.staging_day(day)
        if layout.lake_has(day):
            drop_partition(staged)  # left by a validate killed after publishing it
            continue
        if not staged.exists():
            continue
        try:
            validate_day(day, cfg, layout, spec)
        except ValidationFailed as exc:
            rejected[day] = str(exc).splitlines()[1:]
            log.warning("validate ds=%s: lookback day %s failed validation and is NOT published (history lacks it); "
                        "report %s", ds, day, layout.report(day) / "validation")
            continue
        publish_staged(layout, day)
        published.append(day)
    publish_staged(layout, ds)
    manifest.update(
        lake_path=str(layout.lake_day(ds)),
        target_checksum=read_manifest(layout.lake("target", ds))["checksum"],
        source_checksum=read_manifest(layout.lake("source", ds))["checksum"],
        lookback_published=sorted(published), lookback_rejected=rejected,
    )
    log.info("validate ds=%s: published %s to the lake (lookback days published=%s, rejected=%s)",
             ds, ds, sorted(published), sorted(rejected))
    return manifest
