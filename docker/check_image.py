"""Build-time check of the ECAT image (run by docker/Dockerfile; exits non-zero on a problem)."""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import tempfile


def main() -> int:
    problems: list[str] = []
    import torch

    cpu_build = "cpu" in os.environ.get("TORCH_INDEX_URL", "cpu")
    cuda_wheels = sorted({d.metadata["Name"] for d in md.distributions()
                          if (d.metadata["Name"] or "").lower().startswith("nvidia-")})
    print(f"torch {torch.__version__} (cuda {torch.version.cuda}); apache-airflow {md.version('apache-airflow')}")
    if cpu_build and torch.version.cuda is not None:
        problems.append(f"a CUDA torch build was installed: {torch.__version__}")
    if cpu_build and cuda_wheels:
        problems.append(f"CUDA wheels were pulled: {cuda_wheels}")
    if md.version("apache-airflow") != "3.3.2":
        problems.append(f"apache-airflow is {md.version('apache-airflow')}, not 3.3.2")
    for module in ("airflow.providers.celery", "airflow.providers.postgres", "airflow.providers.duckdb",
                   "ecat_tasks.airflow_edge", "psycopg2", "mlflow", "dgl"):
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - report every problem at once
            problems.append(f"cannot import {module}: {exc}")

    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp())
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["ECAT_TRAIN_QUEUE"] = "train"
    from airflow.dag_processing.dagbag import DagBag

    dags = os.environ.get("ECAT_DAGS_FOLDER", "/opt/airflow/dags")
    bag = DagBag(dag_folder=dags)
    if bag.import_errors:
        problems.append(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags.get("ecat_daily")
    if dag is None:
        problems.append(f"DAG ecat_daily not found in {dags}")
    else:
        queues = {t.task_id: t.queue for t in dag.tasks}
        print(f"ecat_daily task queues: {queues}")
        for task in ("domain_reweight", "teacher_refresh", "student_distill", "train_baselines"):
            if queues.get(task) != "train":
                problems.append(f"{task} is on queue {queues.get(task)!r}, not 'train'")

    for p in problems:
        print(f"IMAGE CHECK FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
