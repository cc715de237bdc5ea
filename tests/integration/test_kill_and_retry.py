"""A training task killed mid-way leaves every published partition intact, and its retry
completes, warm-starts from the day before and sweeps the killed writer's leftovers.

The task runs exactly as a worker runs it: ``teacher_refresh`` in its own process (here
``python -c``, with ``ECAT_HOME`` from ``scripts/env.sh``), killed with SIGKILL, the
signal a worker gets when the OOM killer or a lost node takes it. The retry is a fresh
process, as Airflow's retry would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from ecat_tasks.config import EcatConfig
from ecat_tasks.extract import extract
from ecat_tasks.storage import MANIFEST, Layout, MissingPartitionError, dir_checksum, read_manifest
from ecat_tasks.synthetic import seed_warehouse
from ecat_tasks.validate import validate

from .airflow_harness import project_env, tail

D1, D2 = "2026-11-01", "2026-11-02"
# Day 2 is big enough, and trains for enough epochs, to still be training when killed: the
# kill comes after epoch 1 is logged, the test fails if epoch EPOCHS was logged (1-2 s an
# epoch on 2 loaded cores: a margin of several seconds).
ROWS_D1, ROWS_D2 = 30_000, 150_000
EPOCHS = 5
CONF = {"lookback_days": 2, "extract_batch_rows": 50_000}

TEACHER_MAIN = """
import json, logging, sys
import ecat_tasks.airflow_edge  # what a worker's task imports first: its process settings (OMP_WAIT_POLICY) apply
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s")
from ecat_tasks.config import EcatConfig
from ecat_tasks.teacher_refresh import teacher_refresh
manifest = teacher_refresh(sys.argv[1], EcatConfig.from_mapping(json.loads(sys.argv[2])))
print("RESULT " + json.dumps(manifest), flush=True)
"""


def _tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (manifest included): any rewrite shows."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ECAT_HOME with two extracted, validated days (day 2 much larger) and day 1's teacher."""
    root = tmp_path_factory.mktemp("kill_and_retry")
    home = root / "ecat_home"
    warehouse = home / "warehouse.duckdb"
    seed_warehouse(warehouse, D1, 1, ROWS_D1)
    seed_warehouse(warehouse, D2, 1, ROWS_D2)
    cfg = EcatConfig.from_mapping(CONF, env={})
    layout = Layout(home)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for ds in (D1, D2):
            extract(con, ds, cfg, layout)
            validate(ds, cfg, layout)
    return home


def _env(home: Path) -> dict[str, str]:
    return project_env(home, home.parent / "airflow", {"ECAT_TEACHER_EPOCHS": str(EPOCHS), "ECAT_TEACHER_WARM_EPOCHS": str(EPOCHS),
                                                        "ECAT_TEACHER_BATCH_SIZE": "256"})


def _start_teacher(home: Path, ds: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", TEACHER_MAIN, ds, json.dumps(CONF)], env=_env(home), stdout=fh,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _run_teacher(home: Path, ds: str, log: Path, timeout: float = 420) -> dict:
    proc = _start_teacher(home, ds, log)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"teacher_refresh ds={ds} ran past {timeout}s\n{tail(log)}")
    assert rc == 0, f"teacher_refresh ds={ds} exited {rc}\n{tail(log)}"
    line = [x for x in log.read_text().splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.integration
def test_killed_teacher_leaves_partitions_intact_and_retry_warm_starts(home: Path) -> None:
    layout = Layout(home)
    teacher = home / "models" / "teacher"
    logs = home.parent

    day1 = _run_teacher(home, D1, logs / "teacher_d1.log")
    assert day1["cold_start"] is True

    lake = {(d, ds): _tree_digest(layout.lake(d, ds)) for d in ("source", "target") for ds in (D1, D2)}
    teacher_d1 = _tree_digest(layout.model("teacher", D1))
    teacher_d1_checksum = read_manifest(layout.model("teacher", D1))["checksum"]

    # --- the kill: SIGKILL as soon as the first epoch is logged ---------------------------
    log = logs / "teacher_d2_killed.log"
    proc = _start_teacher(home, D2, log)
    epoch_line = re.compile(rf"teacher/daily epoch 1/{EPOCHS}")
    deadline = time.monotonic() + 300
    try:
        while not (log.is_file() and epoch_line.search(log.read_text(errors="replace"))):
            assert proc.poll() is None, f"teacher_refresh ended before it could be killed\n{tail(log)}"
            assert time.monotonic() < deadline, f"no epoch line within 300s\n{tail(log)}"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_output = log.read_text(errors="replace")
    assert f"epoch {EPOCHS}/{EPOCHS}" not in killed_output and "RESULT" not in killed_output, "killed too late"

    # Nothing was published for day 2; day 1's checkpoint and the lake are byte-identical.
    assert not layout.model("teacher", D2).exists(), "a killed run published a partition"
    assert layout.existing_days("models/teacher") == [D1]
    assert _tree_digest(layout.model("teacher", D1)) == teacher_d1
    assert dir_checksum(layout.model("teacher", D1)) == teacher_d1_checksum
    assert {key: _tree_digest(layout.lake(*key)) for key in lake} == lake

    # A kill during the checkpoint write leaves a half-written temporary directory (the
    # atomic writer had no chance to remove it): plant one, as the kill above came earlier.
    stale = teacher / f".tmp-ds={D2}-deadbeef"
    stale.mkdir(exist_ok=True)
    (stale / "model.pt").write_bytes(b"\x50\x4b\x03\x04 truncated checkpoint")
    assert layout.existing_days("models/teacher") == [D1]  # readers never see it

    # --- the retry ------------------------------------------------------------------------
    retry = _run_teacher(home, D2, logs / "teacher_d2_retry.log")
    assert retry["cold_start"] is False and retry["warm_start_ds"] == D1
    manifest = read_manifest(layout.model("teacher", D2))
    assert manifest["warm_start_ds"] == D1 and manifest["cold_start"] is False
    assert manifest["warm_start_from"] == str(layout.model("teacher", D1))
    assert manifest["warm_start_checksum"] == teacher_d1_checksum
    assert manifest["train_days"] == [D2]
    assert manifest["checksum"] == dir_checksum(layout.model("teacher", D2)) == retry["checksum"]
    assert len(manifest["losses"]) == EPOCHS
    names = sorted(p.name for p in teacher.iterdir())
    assert [n for n in names if not n.startswith(".")] == [f"ds={D1}", f"ds={D2}"]
    versions = sorted(os.readlink(teacher / f"ds={d}") for d in (D1, D2))  # each day's pointer names one version
    assert [n for n in names if n.startswith(".")] == versions, "leftovers not swept"
    assert _tree_digest(layout.model("teacher", D1)) == teacher_d1  # the warm start only read it
    assert {key: _tree_digest(layout.lake(*key)) for key in lake} == lake


@pytest.mark.integration  # seconds, not minutes: marked so the integration run (-m integration) covers it
@pytest.mark.parametrize(
    ("step", "ds", "missing_area", "writer"),
    [
        # graph_select/domain_reweight never ran: the student names the weights partition.
        ("student_distill", "2026-03-02", "selection/weights", "domain_reweight"),
        # the day was never extracted: the teacher names the lake partition.
        ("teacher_refresh", "2026-03-09", "lake/target", "extract"),
        # the lake holds the day but no student was trained: evaluate names the student.
        ("evaluate", "2026-03-02", "models/student", "student_distill"),
    ],
)
def test_missing_upstream_partition_names_path_and_writer(layout: Layout, cfg: EcatConfig, step: str, ds: str,
                                                          missing_area: str, writer: str) -> None:
    import importlib

    func = getattr(importlib.import_module(f"ecat_tasks.{step}"), step)
    with pytest.raises(MissingPartitionError) as info:
        func(ds, cfg, layout)
    message = str(info.value)
    expected = layout.lake("target", ds) if missing_area == "lake/target" else layout.partition(missing_area, ds)
    assert not (expected / MANIFEST).exists()
    assert str(expected) in message, message
    assert f"'{writer}'" in message, message
