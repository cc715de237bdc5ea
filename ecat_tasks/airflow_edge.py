"""The only place that knows about Airflow: turns a task's context into plain arguments.

The DAG file calls :func:`run_step` with a step name; this module builds the typed config
from the run's params, opens the warehouse through the Airflow connection when the step
needs it, calls the step's plain function and returns its small manifest for XCom. Heavy
libraries (torch, dgl, GX) are imported only inside the step, never when the DAG is parsed.
Failures and promotion decisions also go to on-call by mail (:class:`OnCallNotifier`).
"""

from __future__ import annotations

import html
import importlib
import logging
import math
import os
import time
from typing import Any, Mapping

from airflow.sdk import BaseNotifier

from ecat_tasks.config import EcatConfig
from ecat_tasks.errors import PermanentError
from ecat_tasks.runtime import library_defaults

log = logging.getLogger(__name__)

library_defaults()  # before any step imports torch, MLflow or GX (OMP_WAIT_POLICY: ecat_tasks.runtime)

WAREHOUSE_CONN_ID = os.environ.get("ECAT_WAREHOUSE_CONN_ID", "ecat_warehouse")

# step name -> "module:function"; every step takes (ds, cfg, layout) and returns a manifest.
STEPS = {
    "check_conf": "ecat_tasks.config:check_conf",
    "extract": "ecat_tasks.extract:extract",
    "validate": "ecat_tasks.validate:validate",
    "score_previous_day": "ecat_tasks.score_previous_day:score_previous_day",
    "graph_select": "ecat_tasks.graph_select:graph_select",
    "domain_reweight": "ecat_tasks.domain_reweight:domain_reweight",
    "teacher_refresh": "ecat_tasks.teacher_refresh:teacher_refresh",
    "student_distill": "ecat_tasks.student_distill:student_distill",
    "train_baselines": "ecat_tasks.train_baselines:train_baselines",
    "plan_comparisons": "ecat_tasks.train_baselines:plan_comparisons",
    "train_comparison": "ecat_tasks.train_baselines:train_comparison",
    "guard": "ecat_tasks.guard:guard",
    "evaluate": "ecat_tasks.evaluate:evaluate",
    "promote": "ecat_tasks.promote:promote",
}

# What an on-call engineer should do, by the kind of error a step raised.
HINTS = {
    "MissingPartitionError": "an upstream partition is missing: run or clear the task named in the message for this ds",
    "ValidationFailed": "the day's data broke an expectation: read the listed failures and the data docs; fix the load, then clear 'extract'",
    "EmptyTargetError": "no target rows for this day: check the warehouse load or the target_scenario param",
    "SpecError": ("the warehouse table does not follow the feature spec (or the spec file is invalid): the message "
                  "names each column; fix the table or the spec (python -m ecat_tasks.spec check SPEC --warehouse W), "
                  "then clear the failed task"),
    "SpecError": ("the warehouse table does not follow the feature spec (every problem is named): fix the table or "
                  "the spec (python -m ecat_tasks.spec check), then clear 'extract'"),
    "SchemaError": "the warehouse table lacks a contract column or has values of the wrong type (named, with the day): fix the load, then clear 'extract'",
    "WarehouseQueryError": "the warehouse refused the extraction query (not a connection or lock error): read the message, fix the table or SQL, then clear 'extract'",
    "ConfigError": "a run parameter is unknown or invalid (named, with the closest valid name): trigger again with a corrected --conf",
    "AirflowSensorTimeout": "the day's rows never landed in the warehouse within ECAT_DATA_WAIT_TIMEOUT_S: check the upstream load, then clear 'wait_for_data'",
    "CheckpointError": "a checkpoint is unreadable or does not match the model: restore it or re-run the chain from the day that wrote it",
    "ModelHealthError": (
        "the model trained today is broken (NaN loss or weights, or constant predictions) and was not published: "
        "check the input data's dense columns and the warm-start checkpoint, then clear the task"),
    "RegistryError": (
        "the MLflow registry could not be read (server down, permissions, URI): promotion decided nothing and the "
        "alias did not move; check ECAT_MLFLOW_TRACKING_URI and the server, then clear 'promote'"),
    "ValueError": "a parameter or input value is invalid: the message names it",
    "AirflowTaskTimeout": "the task ran past execution_timeout: check data volume and the task's log timings",
    "AirflowInactiveAssetInInletOrOutletException": (
        "asset URIs follow ECAT_HOME and this Airflow metadata DB already knows the same asset names under "
        "another ECAT_HOME: use one ECAT_HOME per Airflow deployment (or a fresh AIRFLOW_HOME), then reserialize"),
}


def _setup_logging() -> None:
    logging.getLogger("ecat_tasks").setLevel(logging.INFO)


def config_from_params(params: Mapping[str, Any]) -> EcatConfig:
    """The run's typed config: defaults < env < the run's params (``--conf``)."""
    return EcatConfig.from_mapping(dict(params))


def warehouse_connection(conn_id: str = WAREHOUSE_CONN_ID) -> Any:
    """A DB-API connection to the warehouse through the Airflow connection ``conn_id``."""
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id).get_hook().get_conn()


def fail_fast(exc: PermanentError) -> BaseException:
    """Airflow's no-retry failure for an error retrying cannot heal; the original stays its cause."""
    from airflow.sdk.exceptions import AirflowFailException

    err = AirflowFailException(f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def run_step(step: str, ds: str, params: Mapping[str, Any], **kwargs: Any) -> Any:
    """Run one pipeline step for ``ds`` with the run's params (and a mapped task's ``kwargs``,
    e.g. ``model``); return its manifest.

    Data and config errors (:class:`PermanentError`) fail the task at once, without retries.
    """
    _setup_logging()
    try:
        return _run_step(step, ds, params, **kwargs)
    except PermanentError as exc:
        log.error("%s ds=%s failed without retry (%s: the same input fails the same way every try)",
                  step, ds, type(exc).__name__)
        raise fail_fast(exc) from exc


def data_landed(ds: str, params: Mapping[str, Any] | None = None) -> Any:
    """One poke of ``wait_for_data``: done once the warehouse table of the run's feature spec
    holds rows of ``ds``.

    A connection or lock error counts as "not yet" (the sensor pokes again until its timeout);
    any other warehouse error fails at once.
    """
    from airflow.sdk import PokeReturnValue

    from ecat_tasks.extract import WarehouseQueryError, is_transient, rows_landed
    from ecat_tasks.spec import spec_of

    _setup_logging()
    try:
        spec = spec_of(config_from_params(params or {}))
    except PermanentError as exc:
        raise fail_fast(exc) from exc
    try:
        connection = warehouse_connection()
        try:
            rows = rows_landed(connection, ds, spec)
        finally:
            connection.close()
    except Exception as exc:
        if not is_transient(exc):
            raise fail_fast(WarehouseQueryError(f"counting the warehouse rows of ds={ds} failed: {exc}")) from exc
        log.warning("wait_for_data ds=%s: warehouse not reachable yet (%s: %s); poking again",
                    ds, type(exc).__name__, str(exc).splitlines()[0][:200])
        rows = 0
    if rows:
        log.info("wait_for_data ds=%s: %d rows of the day are in the warehouse", ds, rows)
    else:
        log.info("wait_for_data ds=%s: no rows of the day in the warehouse yet; waiting (rescheduled)", ds)
    return PokeReturnValue(is_done=rows > 0, xcom_value={"ds": ds, "rows": rows})


def _run_step(step: str, ds: str, params: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    cfg = config_from_params(params)
    module_name, func_name = STEPS[step].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    t0 = time.perf_counter()
    if step == "extract":
        connection = warehouse_connection()
        try:
            manifest = func(connection, ds, cfg)
        finally:
            connection.close()
    elif step == "check_conf":
        manifest = _check_conf(func, ds, cfg)
    else:
        manifest = func(ds, cfg, **kwargs)
    if step == "promote":
        notify_promotion(ds, manifest)
    if step == "score_previous_day" and manifest.get("champion_check") == "rolled_back":
        notify_oncall(f"ECAT ROLLBACK ds={ds}", f"ECAT ROLLBACK ds={ds}: {manifest.get('champion_reason')}", {"ds": ds})
    log.info("step %s ds=%s finished in %.1fs", step, ds, time.perf_counter() - t0)
    return json_safe(manifest)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None: a manifest becomes the task's XCom (JSON),
    and an undefined metric (a GAUC over a slice where no user has both labels) is NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _check_conf(func: Any, ds: str, cfg: EcatConfig) -> dict[str, Any]:
    """check_conf with the warehouse when it answers (the spec's column check); without it when
    it does not (extract, which has retries, checks again)."""
    try:
        connection = warehouse_connection()
    except Exception as exc:  # noqa: BLE001 - an unreachable warehouse is wait_for_data's and extract's business
        log.warning("check_conf ds=%s: no warehouse connection (%s: %s); the feature spec's table check is left to extract",
                    ds, type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return func(ds, cfg)
    try:
        return func(ds, cfg, connection)
    finally:
        connection.close()


def on_failure(context: Mapping[str, Any]) -> None:
    """Failure callback: one short diagnosis line an on-call engineer can act on, logged and sent."""
    ti = context.get("task_instance")
    exc = context.get("exception")
    if type(exc).__name__ == "AirflowFailException" and isinstance(exc.__cause__, PermanentError):
        exc = exc.__cause__  # the project's error names the column, the day or the param
    kind = type(exc).__name__ if exc is not None else "unknown"
    hint = HINTS.get(kind, "read the task log above the traceback; the last ecat_tasks line says how far it got")
    line = "ECAT FAILURE dag=%s task=%s ds=%s try=%s error=%s: %s | what to do: %s" % (
        getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), context.get("ds"),
        getattr(ti, "try_number", "?"), kind, str(exc).splitlines()[0][:300] if exc else "", hint,
    )
    log.error("%s", line)
    notify_oncall(f"ECAT FAILURE {getattr(ti, 'task_id', '?')} ds={context.get('ds')}: {kind}",
                  f"{line}\n\nlog: {getattr(ti, 'log_url', None) or 'see the task log'}", context)


def notify_promotion(ds: str, decision: Mapping[str, Any]) -> None:
    """Tell on-call what promote decided (promoted or refused, and why)."""
    verdict = f"PROMOTED version {decision.get('version')}" if decision.get("promoted") else "NOT promoted"
    notify_oncall(f"ECAT promote ds={ds}: {verdict}", f"promote ds={ds}: {verdict}: {decision.get('reason')}", {"ds": ds})


def notify_oncall(subject: str, body: str, context: Mapping[str, Any]) -> None:
    """Send through :class:`OnCallNotifier`; a mail that cannot go out is logged, never raised."""
    try:
        OnCallNotifier(subject, body)(dict(context))
    except Exception as exc:  # the failure being reported (or the decision made) matters more than the mail
        log.warning("on-call notification '%s' could not be sent: %s: %s", subject, type(exc).__name__, exc)


class OnCallNotifier(BaseNotifier):
    """An Airflow notifier that mails on-call through the SMTP provider's :class:`SmtpNotifier`.

    Configured by the Airflow connection ``ECAT_SMTP_CONN_ID`` (default ``ecat_smtp``): host,
    port, login/password, and in its extra ``to`` (recipients) and ``from_email``, plus the
    provider's own keys (``disable_tls``, ``disable_ssl``, ``timeout``, ``retry_limit``). Without
    that connection it sends nothing (a log line says so). Subject and body are plain text,
    never rendered as templates (an error message may contain braces).
    """

    template_fields = ()

    def __init__(self, subject: str, body: str, conn_id: str | None = None) -> None:
        super().__init__()
        self.subject, self.body = subject, body
        self.conn_id = conn_id or os.environ.get("ECAT_SMTP_CONN_ID", "ecat_smtp")

    def notify(self, context: Any) -> None:
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            log.info("no Airflow connection '%s': on-call notification not sent (%s)", self.conn_id, self.subject)
            return
        to = conn.extra_dejson.get("to")
        if not to:
            log.warning("connection '%s' has no 'to' in its extra: on-call notification not sent (%s)", self.conn_id, self.subject)
            return
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        SmtpNotifier(to=to, subject=self.subject, html_content=f"<pre>{html.escape(self.body)}</pre>",
                     smtp_conn_id=self.conn_id).notify(context)
        log.info("on-call notified through connection '%s': %s", self.conn_id, self.subject)
