import json

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import DAYS
from ecat_tasks.extract import extract
from ecat_tasks.storage import read_manifest
from ecat_tasks.validate import ValidationFailed, validate

DS = DAYS[1]


@pytest.fixture()
def staged(layout, cfg, warehouse):
    """The lake holds both validated days; ``DS`` is extracted again into staging (a rerun)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        extract(con, DS, cfg, layout)
    return layout


def _corrupt(layout, domain, change):
    """Rewrite a staged partition through ``change`` (simulating bad warehouse data)."""
    path = layout.staging(domain, DS) / "part-00000.parquet"
    frame = pq.read_table(path).to_pandas()
    change(frame)
    frame.to_parquet(path, index=False)


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
