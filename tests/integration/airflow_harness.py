"""A throwaway Airflow deployment for integration tests: real scheduler, real executor.

:class:`AirflowStack` owns one temporary directory holding its own ``AIRFLOW_HOME`` (SQLite
metadata DB, task logs, service logs) and ``ECAT_HOME`` (DuckDB warehouse, lake, models).
It starts the same services ``airflow standalone`` starts, minus the triggerer (the DAG has
no deferrable task): ``api-server`` (Airflow 3 task processes report state through its
execution API; it alone writes their state, so SQLite's single writer copes with a few
tasks at once), ``scheduler`` (LocalExecutor, ``parallelism`` task slots) and
``dag-processor``. Each service runs in its own process group and is killed, with
every descendant, on :meth:`stop`, whatever state the test left it in.

Progress is polled read-only from the SQLite metadata DB (cheap on a small machine), every
wait is bounded, and a timeout raises :class:`StackTimeout` carrying :meth:`diagnostics`:
the tail of every service log, the task states and the task log listing.

The environment comes from ``scripts/env.sh`` (the project's single definition of it),
sourced with every inherited ``AIRFLOW*``/``ECAT_*`` variable removed, so a developer's
shell (``source scripts/env.sh``) never points the stack at the checkout's own DB or data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")
SERVICES = ("api-server", "scheduler", "dag-processor")
FINISHED = ("success", "failed", "upstream_failed", "skipped", "removed")


class StackTimeout(AssertionError):
    """A bounded wait ran out; the message carries the stack's diagnostics."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def project_env(ecat_home: Path, airflow_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of ``scripts/env.sh`` for the given homes, free of inherited settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ECAT_"))}
    base.pop("PYTHONPATH", None)
    base.update(ECAT_HOME=str(ecat_home), AIRFLOW_HOME=str(airflow_home))
    out = subprocess.run(
        ["bash", "-c", f'source "{REPO_ROOT}/scripts/env.sh" >/dev/null && env -0'],
        env=base, capture_output=True, check=True, timeout=30,
    )
    env = dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


def tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"(no file {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


class AirflowStack:
    """Airflow services plus a private ECAT_HOME under ``root``."""

    def __init__(self, root: Path, parallelism: int = 1, extra_env: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.airflow_home = self.root / "airflow"
        self.ecat_home = self.root / "ecat_home"
        self.logs = self.root / "service_logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.db_path = self.airflow_home / "airflow.db"
        self.port = _free_port()
        self.env = project_env(self.ecat_home, self.airflow_home, {
            # SQLite serialises writers; wait for the lock (60 s) rather than fail after 5 s.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}?timeout=60",
            # LocalExecutor whose workers import torch, DGL, GX and MLflow once (ecat_tasks.warm_workers).
            "AIRFLOW__CORE__EXECUTOR": "ecat_tasks.warm_workers.WarmLocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Only the runs a test creates (backfills) run: no "latest interval" scheduled run.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            # One secret for every service, so the scheduler's task tokens verify at the API.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **(extra_env or {}),
        })
        self.procs: dict[str, subprocess.Popen] = {}
        self._log_files: list[Any] = []

    # --- setup -------------------------------------------------------------------------
    @property
    def warehouse(self) -> Path:
        return Path(self.env["ECAT_WAREHOUSE"])

    def python(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self._run([sys.executable, *args], timeout)

    def cli(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        """One ``airflow`` CLI command against this stack's DB.

        Retried (twice) when SQLite stayed locked past its busy timeout: ``tasks clear`` is
        idempotent and ``backfill create`` removes its partial backfill on a lock error.
        """
        for attempt in range(3):
            proc = self._run([AIRFLOW, *args], timeout, check=False)
            if proc.returncode == 0 or not _locked(proc) or attempt == 2:
                break
            print(f"[harness] 'airflow {args[0]} {args[1]}' hit 'database is locked'; retrying", flush=True)
            time.sleep(5)
        if check and proc.returncode != 0:
            raise AssertionError(_failed(args, proc))
        return proc

    def create_backfill(self, dag_id: str, *args: str, attempts: int = 3, freeze: bool = True) -> subprocess.CompletedProcess:
        """``airflow backfill create --dag-id dag_id *args``, robust to SQLite's lock errors.

        SQLite (WAL) can refuse the CLI's write at once ("database is locked"; the busy
        timeout does not apply): creating the runs, the CLI reads inside a transaction and
        then writes, and the write fails when another process committed in between. The
        scheduler commits every few seconds (its heartbeat, and the runs it starts: with a
        re-processing backfill it starts the first re-queued run while the CLI still clears
        the next one). Airflow's clean-up of the partial backfill only recognises
        PostgreSQL's and MySQL's lock errors, so on SQLite the partial backfill stays, and
        blocks a new one (AlreadyRunningBackfill) until the scheduler marks it complete: 30 s
        after its runs finish, 2 minutes after creation when it got none.

        So (``freeze``) the CLI runs while the scheduler and dag-processor are stopped
        (:meth:`writers_frozen`): nothing else writes. Should it still fail on the lock, do
        what an operator would: let the partial backfill finish, then create it again.
        PostgreSQL deployments need neither.
        """
        cmd = ["backfill", "create", "--dag-id", dag_id, *args]
        for attempt in range(attempts):
            with self.writers_frozen() if freeze else contextlib.nullcontext():
                proc = self._run([AIRFLOW, *cmd], 180, check=False)
            if proc.returncode == 0:
                return proc
            if attempt == attempts - 1 or not (_locked(proc) or "AlreadyRunningBackfill" in proc.stderr):
                break
            print(f"[harness] 'airflow backfill create' failed ({_last_line(proc)}); waiting for any partial "
                  f"backfill to finish, then creating it again", flush=True)
            self.wait_for_backfills_complete(dag_id, timeout=300)
        raise AssertionError(_failed(cmd, proc))

    @contextlib.contextmanager
    def writers_frozen(self, timeout: float = 60.0) -> Iterator[None]:
        """The scheduler and dag-processor (with their workers) stopped by SIGSTOP for the block.

        They are stopped at a moment when neither holds SQLite's write lock (checked with
        ``BEGIN IMMEDIATE``; otherwise resumed and tried again), so a CLI command in the
        block never waits on a frozen writer. Only for moments without running tasks (a
        running task's heartbeats go through the api-server, which stays up). Resumed
        (SIGCONT) on exit, whatever happened.
        """
        names = ("scheduler", "dag-processor")
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._signal_groups(names, signal.SIGSTOP)
                self._wait_stopped(names)
                if self._write_lock_free():
                    break
                self._signal_groups(names, signal.SIGCONT)
                if time.monotonic() > deadline:
                    raise StackTimeout(f"SQLite's write lock stayed taken for {timeout:.0f}s\n{self.diagnostics()}")
                time.sleep(0.3)
            yield
        finally:
            self._signal_groups(names, signal.SIGCONT)

    def _signal_groups(self, names: Sequence[str], sig: int) -> None:
        for name in names:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)

    def _wait_stopped(self, names: Sequence[str], timeout: float = 5.0) -> None:
        """Until every process of the named services' groups is stopped (SIGSTOP is asynchronous)."""
        import psutil

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = []
            for name in names:
                proc = self.procs.get(name)
                if proc is None or proc.poll() is not None:
                    continue
                with contextlib.suppress(psutil.NoSuchProcess):
                    parent = psutil.Process(proc.pid)
                    for p in (parent, *parent.children(recursive=True)):
                        with contextlib.suppress(psutil.NoSuchProcess):
                            if p.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                                running.append(p.pid)
            if not running:
                return
            time.sleep(0.05)
        raise StackTimeout(f"processes {running} of {list(names)} did not stop within {timeout:.0f}s")

    def _write_lock_free(self) -> bool:
        """Whether SQLite's write lock can be taken right now (taken and released at once)."""
        con = sqlite3.connect(str(self.db_path), timeout=0, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            raise
        finally:
            con.close()

    def _run(self, cmd: Sequence[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
        proc = subprocess.run(cmd, env=self.env, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)
        with open(self.logs / "commands.log", "a") as fh:  # every command, when, how long, its outcome
            fh.write(f"$ {' '.join(map(str, cmd))}\n[{started:%H:%M:%S} UTC, {time.monotonic() - t0:.1f}s] "
                     f"rc={proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}\n")
        if check and proc.returncode != 0:
            raise AssertionError(_failed(cmd, proc))
        return proc

    def migrate(self) -> None:
        self.cli("db", "migrate", timeout=300)

    def seed_warehouse(self, start_ds: str, days: int, rows: int) -> None:
        self.python("-m", "ecat_tasks.synthetic", "--warehouse", str(self.warehouse), "--start-ds", start_ds,
                    "--days", str(days), "--rows", str(rows))

    # --- services ----------------------------------------------------------------------
    def start(self) -> None:
        commands = {
            "api-server": ["api-server", "--port", str(self.port), "--host", "127.0.0.1", "--workers", "1"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
        }
        for name in SERVICES:
            log = open(self.logs / f"{name}.log", "ab")
            self._log_files.append(log)
            self.procs[name] = subprocess.Popen(
                [AIRFLOW, *commands[name]], env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def stop(self, grace: float = 15.0) -> None:
        """Terminate every service and all of its descendants (by pid and process group)."""
        import psutil

        victims: list[psutil.Process] = []
        for proc in self.procs.values():
            try:
                parent = psutil.Process(proc.pid)
                victims += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen service (writers_frozen) must see SIGTERM
                os.killpg(proc.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(victims, timeout=grace)
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for log in self._log_files:
            log.close()
        self.procs.clear()
        self._log_files.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator["AirflowStack"]:
        """Services up for the block; down afterwards, also on failure or SIGTERM (a CI timeout)."""
        import threading

        previous = None
        if threading.current_thread() is threading.main_thread():
            def on_term(signum: int, frame: Any) -> None:
                raise SystemExit(f"terminated by signal {signum}")
            previous = signal.signal(signal.SIGTERM, on_term)
        self.start()
        try:
            yield self
        except BaseException as exc:
            if not isinstance(exc, StackTimeout):  # a timeout's message already carries them
                print(self.diagnostics(), file=sys.stderr)
            raise
        finally:
            self.stop()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise AssertionError(f"Airflow service(s) exited: {dead}\n{self.diagnostics()}")

    # --- metadata DB (read-only polling) ---------------------------------------------
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        for attempt in range(20):
            try:
                con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
                try:
                    con.row_factory = sqlite3.Row
                    return list(con.execute(sql, params))
                finally:
                    con.close()
            except sqlite3.OperationalError as exc:  # "database is locked" under a writer
                if "locked" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def runs(self, dag_id: str) -> dict[str, sqlite3.Row]:
        """Latest dag run per ds (logical date)."""
        rows = self.query(
            "SELECT id, run_id, substr(logical_date, 1, 10) AS ds, state, run_type, backfill_id, start_date, end_date "
            "FROM dag_run WHERE dag_id = ? ORDER BY logical_date, id", (dag_id,))
        return {r["ds"]: r for r in rows}

    def task_instances(self, dag_id: str, ds: str | None = None) -> list[sqlite3.Row]:
        sql = ("SELECT ti.id, ti.task_id, ti.map_index, ti.rendered_map_index, substr(dr.logical_date, 1, 10) AS ds, ti.state, ti.try_number, ti.start_date, "
               "ti.end_date FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
               "WHERE ti.dag_id = ?")
        params: list[Any] = [dag_id]
        if ds is not None:
            sql += " AND substr(dr.logical_date, 1, 10) = ?"
            params.append(ds)
        return self.query(sql + " ORDER BY dr.logical_date, ti.start_date", params)

    # --- waiting -----------------------------------------------------------------------
    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
        """Poll ``predicate`` until truthy; StackTimeout with diagnostics after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise StackTimeout(f"timed out after {timeout:.0f}s waiting for: {what}\n{self.diagnostics()}")
            time.sleep(poll)

    def wait_for_dag(self, dag_id: str, timeout: float = 240) -> None:
        def ready() -> bool:
            if not self.db_path.exists():
                return False
            try:
                return bool(self.query(
                    "SELECT 1 FROM dag d JOIN serialized_dag s ON s.dag_id = d.dag_id "
                    "WHERE d.dag_id = ? AND NOT d.is_paused AND NOT d.is_stale", (dag_id,)))
            except sqlite3.OperationalError:
                return False

        self.wait_for(f"dag {dag_id} parsed, serialized and unpaused", ready, timeout)

    def wait_for_runs(self, dag_id: str, days: Sequence[str], timeout: float,
                      newer_than: dict[tuple[str, str], int] | None = None, hint: str = "") -> dict[str, sqlite3.Row]:
        """Wait until the runs of ``days`` succeed; fail fast when one fails.

        ``newer_than`` maps (ds, task_id) to the try number before a clear: the run only
        counts once every task of that day ran again (a higher try number).
        """
        def done() -> dict[str, sqlite3.Row] | None:
            runs = self.runs(dag_id)
            failed = [ds for ds in days if ds in runs and runs[ds]["state"] == "failed"]
            if failed:
                raise AssertionError(f"dag run(s) failed for {failed}\n{self.diagnostics()}")
            if not all(ds in runs and runs[ds]["state"] == "success" for ds in days):
                return None
            if newer_than:
                tis = {(r["ds"], r["task_id"]): r for ds in days for r in self.task_instances(dag_id, ds)}
                if any(tis[k]["try_number"] <= n or tis[k]["state"] != "success" for k, n in newer_than.items()):
                    return None
            return {ds: runs[ds] for ds in days}

        return self.wait_for(f"dag runs {list(days)} of {dag_id} succeeded{hint}", done, timeout)

    def wait_for_backfills_complete(self, dag_id: str, timeout: float = 200) -> None:
        """Wait until the scheduler marks every backfill of ``dag_id`` complete.

        It does so every 30 s once a backfill's runs are finished (2 minutes after creation
        for one left without runs); until then ``airflow backfill create`` refuses a new
        backfill of the DAG (AlreadyRunningBackfill).
        """
        self.wait_for(
            f"every backfill of {dag_id} marked complete",
            lambda: not self.query("SELECT id FROM backfill WHERE dag_id = ? AND completed_at IS NULL", (dag_id,)),
            timeout,
        )

    def tries(self, dag_id: str, days: Sequence[str]) -> dict[tuple[str, str], int]:
        """(ds, task_id) -> try number, to tell a re-run from the run before it."""
        return {(r["ds"], r["task_id"]): r["try_number"] for r in self.task_instances(dag_id) if r["ds"] in days}

    # --- diagnostics -------------------------------------------------------------------
    def diagnostics(self, lines: int = 40) -> str:
        parts = []
        parts.append(f"===== CLI commands (last {lines} lines)\n{tail(self.logs / 'commands.log', lines)}")
        for name in SERVICES:
            parts.append(f"===== {name} log (last {lines} lines)\n{tail(self.logs / f'{name}.log', lines)}")
        try:
            rows = self.query("SELECT substr(logical_date,1,10) ds, run_id, state, backfill_id FROM dag_run ORDER BY logical_date")
            parts.append("===== dag runs\n" + "\n".join(json.dumps(dict(r)) for r in rows))
            rows = self.query("SELECT substr(dr.logical_date,1,10) ds, ti.task_id, ti.state, ti.try_number FROM task_instance ti "
                              "JOIN dag_run dr ON dr.run_id = ti.run_id AND dr.dag_id = ti.dag_id ORDER BY dr.logical_date")
            parts.append("===== task instances\n" + "\n".join(json.dumps(dict(r)) for r in rows))
        except Exception as exc:  # noqa: BLE001 - diagnostics must never hide the original failure
            parts.append(f"===== metadata DB unreadable: {exc}")
        task_logs = sorted((self.airflow_home / "logs").rglob("*.log")) if (self.airflow_home / "logs").is_dir() else []
        parts.append("===== task logs\n" + "\n".join(str(p.relative_to(self.airflow_home)) for p in task_logs))
        latest = sorted(task_logs, key=lambda p: p.stat().st_mtime)[-2:]
        for p in latest:
            parts.append(f"===== {p.relative_to(self.airflow_home)} (last 30 lines)\n{tail(p, 30)}")
        return "\n".join(parts)


def _locked(proc: subprocess.CompletedProcess) -> bool:
    return "database is locked" in proc.stderr


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else f"rc={proc.returncode}"


def _failed(cmd: Sequence[str], proc: subprocess.CompletedProcess) -> str:
    return (f"command failed (rc={proc.returncode}): {' '.join(map(str, cmd))}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-4000:]}")


def parse_db_time(value: str | None) -> dt.datetime | None:
    """A timestamp column of the SQLite metadata DB as an aware datetime."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value.replace(" ", "T"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
