"""ecat_daily: one run per date partition ``ds``; wiring only, every body is one call.

check_conf -> wait_for_data (sensor) -> extract (to staging) -> validate (publishes to the lake)
-> score_previous_day (yesterday's models on today's rows, before anything trains on today)
-> {graph_select, teacher_refresh, plan_comparisons} -> domain_reweight (reads the graph's
candidates and today's frozen teacher) -> {student_distill, train_comparison[model] per due
comparison model} -> guard (which model is served) -> evaluate
-> promote. Logic lives in
``ecat_tasks``; see README.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from ecat_tasks.airflow_edge import data_landed, on_failure, run_step
from ecat_tasks.config import ecat_home, param_schema

HOME = ecat_home()
TRAIN_QUEUE = os.environ.get("ECAT_TRAIN_QUEUE", "default")
# Airflow creates no task instances for a logical date before start_date (the run "succeeds"
# empty), so it lies before any day one may backfill; catchup=False keeps the scheduler quiet.
START = pendulum.parse(os.environ.get("ECAT_START_DATE", "2020-01-01"))


def _asset(area: str) -> Asset:
    return Asset(name=f"ecat.{area.replace('/', '.')}", uri=f"file://{HOME / area}")


def _param(spec: dict) -> Param:
    spec = dict(spec)
    return Param(spec.pop("default"), **spec)


TRAIN = dict(queue=TRAIN_QUEUE, depends_on_past=True, execution_timeout=timedelta(hours=2))
# wait_for_data frees its worker slot between pokes (reschedule) and fails after the timeout.
DATA_WAIT = dict(mode="reschedule", retries=0,
                 poke_interval=float(os.environ.get("ECAT_DATA_POKE_INTERVAL_S", "300")),
                 timeout=float(os.environ.get("ECAT_DATA_WAIT_TIMEOUT_S", str(6 * 3600))))


@dag(
    dag_id="ecat_daily",
    schedule="@daily",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    tags=["ecat", "training"],
    params={name: _param(spec) for name, spec in param_schema().items()},
    default_args=dict(
        owner="ml-platform",
        retries=1,
        retry_delay=timedelta(minutes=1),
        execution_timeout=timedelta(minutes=30),
        on_failure_callback=on_failure,
    ),
    doc_md=__doc__,
)
def ecat_daily() -> None:
    @task(retries=0, execution_timeout=timedelta(minutes=5))
    def check_conf(ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("check_conf", ds, params)

    @task.sensor(**DATA_WAIT)
    def wait_for_data(_: dict, ds: str | None = None, params: dict | None = None) -> Any:
        return data_landed(ds, params)

    @task(retries=3, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
    def extract(_: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("extract", ds, params)

    @task(retries=0, outlets=[_asset("lake/source"), _asset("lake/target"), _asset("reports/validation")])
    def validate(_: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("validate", ds, params)

    @task(outlets=[_asset("reports/next_day")])
    def score_previous_day(_: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("score_previous_day", ds, params)

    @task(outlets=[_asset("selection/graph")])
    def graph_select(_: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("graph_select", ds, params)

    @task(queue=TRAIN_QUEUE, outlets=[_asset("selection/weights")])
    def domain_reweight(_g: dict, _t: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("domain_reweight", ds, params)

    @task(**TRAIN, outlets=[_asset("models/teacher")])
    def teacher_refresh(_: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("teacher_refresh", ds, params)

    @task(**TRAIN, outlets=[_asset("models/student")])
    def student_distill(_w: dict, _t: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("student_distill", ds, params)

    @task
    def plan_comparisons(_: dict, ds: str | None = None, params: dict | None = None) -> list:
        return run_step("plan_comparisons", ds, params)

    # One task per comparison model (mapped over today's plan): each retried alone, on the
    # train queue, so models run in parallel on the train workers.
    @task(**TRAIN, outlets=[_asset("models/baselines")], map_index_template="{{ comparison_model }}")
    def train_comparison(model: str, _w: dict, _t: dict, ds: str | None = None, params: dict | None = None) -> dict:
        get_current_context()["comparison_model"] = model
        return run_step("train_comparison", ds, params, model=model)

    # none_failed: on a day no comparison model is due, the empty mapping is skipped; the guard
    # then compares ECAT with no fallback and the report scores their newest checkpoints.
    @task(outlets=[_asset("models/served")], trigger_rule="none_failed")
    def guard(_s: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("guard", ds, params)

    @task(outlets=[_asset("reports/metrics")])
    def evaluate(_g: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("evaluate", ds, params)

    @task(retries=0)
    def promote(_: dict, ds: str | None = None, params: dict | None = None) -> dict:
        return run_step("promote", ds, params)

    scored = score_previous_day(validate(extract(wait_for_data(check_conf()))))
    teacher = teacher_refresh(scored)
    weights = domain_reweight(graph_select(scored), teacher)  # its classifier reads the day's frozen teacher
    student = student_distill(weights, teacher)
    comparisons = train_comparison.partial(_w=weights, _t=teacher).expand(model=plan_comparisons(scored))
    guarded = guard(student)
    comparisons >> guarded
    promote(evaluate(guarded))


ecat_daily()
