"""validate: Great Expectations 1.x suites over the staged source and target partitions.

A failed suite raises :class:`ValidationFailed` whose message lists every failed
expectation with counts and example values, after writing the results (JSON) and GX's HTML
data docs under ``reports/ds=/validation/``. Only a day that passes is published from
staging into the lake, so downstream tasks never read bad data.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.errors import PermanentError
from ecat_tasks.inputs import read_partition
from ecat_tasks.models.data import dense_psi
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


def _read(path: Path) -> pd.DataFrame:
    frame = read_partition(path)
    if "ds" in frame.columns:  # compare the partition day as text, whatever the reader's date type
        frame["ds"] = frame["ds"].astype(str)
    # GX 1.24's type check does not recognise pandas 3's default string dtype: hand it objects.
    for col in frame.columns:
        if pd.api.types.is_string_dtype(frame[col].dtype):
            frame[col] = frame[col].astype(object)
    return frame


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


def dense_drift(ds: str, frame: pd.DataFrame, cfg: EcatConfig, layout: Layout) -> tuple[dict[str, Any], list[str]]:
    """PSI of each dense feature of the day's entire space against the warm-start teacher's profile.

    Warns above ``drift_psi_warn``; returns a failure line per feature above ``drift_psi_fail``.
    """
    prev = layout.latest_before("models/teacher", ds)
    profile = read_manifest(layout.model("teacher", prev)).get("dense_profile") if prev else None
    if not profile:
        log.info("validate ds=%s: no warm-start teacher profile before this day, dense drift not checked", ds)
        return {}, []
    psi = dense_psi(frame, profile)
    failed = []
    for name, value in psi.items():
        if cfg.drift_psi_fail and value > cfg.drift_psi_fail:
            failed.append(f"dense drift({name}): PSI {value:.3f} > drift_psi_fail {cfg.drift_psi_fail} against the teacher of ds={prev}")
        elif value > cfg.drift_psi_warn:
            log.warning("validate ds=%s: dense drift of %s: PSI %.3f > drift_psi_warn %s against the teacher of ds=%s",
                        ds, name, value, cfg.drift_psi_warn, prev)
    return {"against": prev, "psi": {k: round(v, 4) for k, v in psi.items()}}, failed


def validate_day(ds: str, cfg: EcatConfig, layout: Layout, spec: FeatureSpec) -> dict[str, Any]:
    """Run both suites on the staged day ``ds``; raise :class:`ValidationFailed` on any failure."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # keep task logs readable
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    t0 = time.perf_counter()
    frames = {d: _read(layout.require(layout.staging(d, ds))) for d in ("target", "source")}
    summary: dict[str, Any] = {"ds": ds, "domains": {}}
    failures: dict[str, list[str]] = {}
    summary["drift"], drift_failures = dense_drift(ds, pd.concat(frames.values(), ignore_index=True), cfg, layout)
    if drift_failures:
        failures["drift"] = drift_failures
    report_dir = layout.report(ds) / "validation"
    with tempfile.TemporaryDirectory(prefix="ecat-gx-") as gx_root, atomic_dir(report_dir) as out:
        ctx = gx.get_context(mode="file", project_root_dir=gx_root)
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = ctx.data_sources.add_pandas("lake")
        for domain, frame in frames.items():
            rows_min = cfg.min_target_rows if domain == "target" else cfg.min_source_rows
            suite = ctx.suites.add(gx.ExpectationSuite(name=f"{domain}_suite"))
            for exp in build_expectations(domain, ds, rows_min, cfg, spec):
                suite.add_expectation(exp)
            batch_def = source.add_dataframe_asset(domain).add_batch_definition_whole_dataframe("whole")
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{domain}_{ds}", data=batch_def, suite=suite))
            checkpoint = ctx.checkpoints.add(gx.Checkpoint(
                name=f"{domain}_checkpoint", validation_definitions=[vd],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
            ))
            result = checkpoint.run(batch_parameters={"dataframe": frame})
            suite_result = next(iter(result.run_results.values()))
            (out / f"{domain}_result.json").write_text(json.dumps(suite_result.to_json_dict(), indent=1, default=str))
            stats = suite_result.statistics
            summary["domains"][domain] = {
                "rows": int(len(frame)),
                "evaluated": int(stats["evaluated_expectations"]),
                "failed": int(stats["unsuccessful_expectations"]),
            }
            if not suite_result.success:
                failures[domain] = _failure_lines(suite_result)
        docs = Path(gx_root) / "gx" / "uncommitted" / "data_docs" / "local_site"
        if docs.is_dir():
            shutil.copytree(docs, out / "data_docs")
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
        "(%.0f rows/s); report %s",
        ds, t["rows"], t["evaluated"], s["rows"], s["evaluated"], secs, (t["rows"] + s["rows"]) / max(secs, 1e-9), report_dir,
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
