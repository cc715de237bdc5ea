"""MLflow plumbing: the tracking URI, one run per (ds, model), and the registry's pyfunc.

The tracking store is a deployment setting, never a run param (a trigger must not choose where
runs and models are written): ``ECAT_MLFLOW_TRACKING_URI``, else ``MLFLOW_TRACKING_URI``, else
SQLite under ECAT_HOME.
A rerun of a day deletes that day's earlier runs before logging, so history holds one run
per (ds, model), never duplicates.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ecat_tasks.config import EcatConfig
from ecat_tasks.runtime import library_defaults

log = logging.getLogger(__name__)

EXPERIMENT = "ecat_daily"
ALIAS = "champion"  # the registry alias of the model that serves


def tracking_uri(root: Path) -> str:
    """The deployment's tracking (and registry) URI, from the worker's environment."""
    return (os.environ.get("ECAT_MLFLOW_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{root / 'mlflow.db'}")


def client(cfg: EcatConfig, root: Path) -> Any:
    library_defaults()  # telemetry off, no progress bars, alembic quiet: before mlflow loads
    import mlflow

    uri = tracking_uri(root)
    # mlflow.set_*_uri also export MLFLOW_*_URI; left there, the first ECAT_HOME's store would
    # pose as the deployment's for every later call in this process (tracking_uri reads it).
    exported = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in exported.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=(root / "mlflow-artifacts").as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return mlflow.MlflowClient(uri, uri)


def replace_runs(mlflow_client: Any, ds: str, model: str) -> int:
    """Delete earlier runs of (ds, model) so a rerun replaces rather than duplicates."""
    exp = mlflow_client.get_experiment_by_name(EXPERIMENT)
    runs = mlflow_client.search_runs([exp.experiment_id], filter_string=f"tags.ds = '{_safe(ds)}' and tags.model = '{_safe(model)}'")
    for run in runs:
        mlflow_client.delete_run(run.info.run_id)
    return len(runs)


def _safe(value: str) -> str:
    """MLflow filter strings have no bind parameters: allow only plain tokens."""
    if not all(c.isalnum() or c in "-_." for c in value):
        raise ValueError(f"refusing unsafe value {value!r} in an MLflow filter")
    return value


def log_model_metrics(cfg: EcatConfig, root: Path, ds: str, model: str, metrics: dict[str, float],
                      params: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    import mlflow

    mc = client(cfg, root)
    replace_runs(mc, ds, model)
    with mlflow.start_run(run_name=f"{model}@{ds}", tags={**(tags or {}), "ds": ds, "model": model}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        return run.info.run_id


def add_run_metrics(cfg: EcatConfig, root: Path, ds: str, metrics: dict[str, dict[str, float]]) -> dict[str, str]:
    """Add each model's metrics to its run of (ds, model) (the next-day scores of a day's models), or
    start one; model -> run id. One client for all of them: setting one up is most of a call's cost."""
    import mlflow
    from mlflow.entities import Metric

    mc = client(cfg, root)
    exp = mc.get_experiment_by_name(EXPERIMENT)
    run_ids: dict[str, str] = {}
    for model, values in metrics.items():
        runs = mc.search_runs([exp.experiment_id],
                              filter_string=f"tags.ds = '{_safe(ds)}' and tags.model = '{_safe(model)}'")
        finite = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
        if runs:
            run_id = runs[0].info.run_id
        else:
            with mlflow.start_run(run_name=f"{model}@{ds}", tags={"ds": ds, "model": model}) as run:
                run_id = run.info.run_id
        now = int(pd.Timestamp.now(tz="UTC").timestamp() * 1000)
        mc.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in finite.items()])
        run_ids[model] = run_id
    return run_ids


# --- registry -------------------------------------------------------------------------
class RegistryError(RuntimeError):
    """The model registry could not be read: promotion cannot decide, so the task fails."""


def current_champion(mc: Any, name: str, uri: str) -> Any:
    """The ModelVersion the alias points at; None only when the model or its alias does not exist yet.

    Every other registry error (server down, permission denied, bad name) raises
    :class:`RegistryError`: treating it as "no champion" would promote past the real one.
    """
    from mlflow.exceptions import MlflowException

    try:
        try:
            model = mc.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        number = model.aliases.get(ALIAS)
        return None if number is None else mc.get_model_version(name, number)
    except MlflowException as exc:
        first = str(exc.message).splitlines()[0][:200]
        raise RegistryError(f"cannot read alias '{ALIAS}' of registered model '{name}' at {uri}: "
                            f"{exc.error_code}: {first}") from exc


def champion_version(cfg: EcatConfig, root: Path) -> Any:
    """The ModelVersion that serves (the alias' target), or None before the first promotion."""
    return current_champion(client(cfg, root), cfg.registered_model, tracking_uri(root))


def versions_of_day(cfg: EcatConfig, root: Path, ds: str) -> list[Any]:
    """Registered versions whose ``ds`` tag is ``ds``, newest first."""
    mc = client(cfg, root)
    found = mc.search_model_versions(f"name = '{_safe(cfg.registered_model)}'")
    return sorted((v for v in found if v.tags.get("ds") == ds), key=lambda v: -int(v.version))


def score_version(cfg: EcatConfig, root: Path, version: str, frame: pd.DataFrame) -> np.ndarray:
    """Probabilities of registered ``version`` on ``frame``, through the registry's pyfunc."""
    import mlflow

    client(cfg, root)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.registered_model}/{version}")
    return np.asarray(model.predict(frame), dtype=np.float64)


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    class EcatStudentModel(mlflow.pyfunc.PythonModel):
        """Scores a frame of ``samples`` rows with a checkpointed model, through its calibration (probabilities)."""

        def load_context(self, context: Any) -> None:
            from ecat_tasks.models.calibration import Calibration, CalibratedModel, read_calibration
            from ecat_tasks.models.continual import load_model

            path = context.artifacts.get("calibration")  # versions registered before calibration have none
            cal = read_calibration(path) if path else Calibration(reason="registered without calibration")
            self.loaded = CalibratedModel(load_model(Path(context.artifacts["checkpoint"])), cal)

        def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
            return self.loaded.score(model_input, "click")

    return EcatStudentModel


def register_model(cfg: EcatConfig, root: Path, ds: str, checkpoint_dir: Path, example: pd.DataFrame,
                   tags: dict[str, str], calibration: Path | None = None) -> Any:
    """Log the checkpoint (and the ``calibration.json`` its scores pass through) as a pyfunc model
    and register it; returns the ModelVersion."""
    import mlflow

    import ecat_tasks

    mc = client(cfg, root)
    with mlflow.start_run(run_name=f"register@{ds}", tags={"ds": ds, "model": "registration"}):
        info = mlflow.pyfunc.log_model(
            name="student",
            python_model=_pyfunc_class()(),
            artifacts={"checkpoint": str(checkpoint_dir), **({"calibration": str(calibration)} if calibration else {})},
            code_paths=[str(Path(ecat_tasks.__file__).parent)],
            input_example=example,
            registered_model_name=cfg.registered_model,
        )
    version = mc.get_model_version(cfg.registered_model, str(info.registered_model_version))
    for k, v in tags.items():
        mc.set_model_version_tag(cfg.registered_model, version.version, k, v)
    return version
