import json
import re

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import DAYS
from ecat_tasks.extract import extract
from ecat_tasks.storage import read_manifest
import ecat_tasks.validate as validate_module
from ecat_tasks.validate import ValidationFailed, validate

DS = DAYS[1]


@pytest.fixture()
def staged(layout, cfg, warehouse):
    """The lake holds both validated days; ``DS`` is extracted again into staging (a rerun)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        extract(con, DS, cfg, layout)
    return layout


def _corrupt(layout, domain, change, row_group_size=None):
    """Rewrite a staged partition through ``change`` (simulating bad warehouse data)."""
    path = layout.staging(domain, DS) / "part-00000.parquet"
    frame = pq.read_table(path).to_pandas()
    change(frame)
    frame.to_parquet(path, index=False, row_group_size=row_group_size)


def test_good_day_passes_and_writes_report(staged, cfg):
    layout = staged
    m = validate(DS, cfg, layout)
    report = layout.report(DS) / "validation"
    assert m["target_rows"] > 0 and (report / "summary.json").is_file()
    assert (report / "data_docs" / "index.html").is_file()
    assert json.loads((report / "summary.json").read_text())["passed"] is True


@pytest.mark.parametrize("domain,change,expected", [
    ("target", lambda f: f.__setitem__("user_id", f["user_id"].astype("float").where(f.index % 7 != 0)),
     "expect_column_values_to_not_be_null(user_id)"),
    ("source", lambda f: f.__setitem__("sample_id", f["sample_id"].where(f.index % 5 != 0, "dup")),
     "expect_column_values_to_be_unique(sample_id)"),
    ("target", lambda f: f.__setitem__("click", f["click"].where(f.index % 11 != 0, 2)),
     "expect_column_values_to_be_in_set(click)"),
    ("source", lambda f: f.pop("item_price"), "expect_column_to_exist(item_price)"),
    ("target", lambda f: f.__setitem__("ds", pd.Timestamp("2026-01-01").date()), "expect_column_values_to_be_in_set(ds)"),
])
def test_bad_input_fails_with_readable_summary(staged, cfg, domain, change, expected):
    layout = staged
    _corrupt(layout, domain, change)
    lake_before = read_manifest(layout.lake(domain, DS))
    with pytest.raises(ValidationFailed) as err:
        validate(DS, cfg, layout)
    msg = str(err.value)
    assert expected in msg and f"[{domain}]" in msg and "nothing downstream runs" in msg
    summary = json.loads((layout.report(DS) / "validation" / "summary.json").read_text())
    assert summary["passed"] is False and summary["failures"][domain]
    assert read_manifest(layout.lake(domain, DS)) == lake_before  # the validated partition stays published
    assert layout.staging_day(DS).is_dir()  # the rejected day stays staged, for inspection


def test_label_rate_bounds_come_from_config(staged, cfg):
    layout = staged
    with pytest.raises(ValidationFailed, match="expect_column_mean_to_be_between"):
        validate(DS, cfg.replace(label_rate_max=0.01), layout)


def _late_errors(frame):
    """Bad rows only at the end of the partition: clicks of 7 on the last three rows, and the last
    row repeats the sample_id of row 3 (the duplicate pair sits in the first and the last chunk)."""
    frame.loc[frame.index[-3:], "click"] = 7
    frame.loc[frame.index[-1], "sample_id"] = frame["sample_id"].iloc[3]


def _failure(layout, cfg):
    with pytest.raises(ValidationFailed) as err:
        validate(DS, cfg, layout)
    result = json.loads((layout.report(DS) / "validation" / "source_result.json").read_text())
    return re.sub(r"home/reports/.*index.html", "", str(err.value)), result


def test_chunks_report_what_one_run_over_the_whole_partition_reports(staged, cfg, monkeypatch):
    """validate streams a partition through GX chunk by chunk (memory bounded by the chunk, not the
    day): a bad row in a later chunk, and a duplicate sample_id split across chunks, fail the day
    with the message and the result one GX run over the whole partition gives."""
    layout = staged
    _corrupt(layout, "source", _late_errors, row_group_size=4_000)
    whole_msg, whole = _failure(layout, cfg.replace(validate_chunk_rows=5_000_000))
    chunked_msg, chunked = _failure(layout, cfg.replace(validate_chunk_rows=10_000))
    assert chunked["meta"]["chunks"]["count"] >= 4 and whole["meta"]["chunks"]["count"] == 1
    dup = re.search(r"\[source\] expect_column_values_to_be_unique\(sample_id\): 2 unexpected of \d+; examples \['(.+)', '\1'\]",
                    chunked_msg)
    assert dup, chunked_msg
    assert re.search(r"\[source\] expect_column_values_to_be_in_set\(click\): 3 unexpected of \d+; examples \['7', '7', '7'\]",
                     chunked_msg)
    assert chunked_msg == whole_msg
    assert [(r["success"], r["result"]) for r in chunked["results"]] == [(r["success"], r["result"]) for r in whole["results"]]

    # equal 64-bit hashes are only candidates: with every sample_id colliding, still exactly the one pair
    monkeypatch.setattr(validate_module.pd.util, "hash_array", lambda values: np.zeros(len(values), np.uint64))
    collided_msg, _ = _failure(layout, cfg.replace(validate_chunk_rows=10_000))
    assert collided_msg == chunked_msg
