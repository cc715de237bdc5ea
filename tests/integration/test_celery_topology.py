"""The CeleryExecutor topology, checked without Docker: docker/ files and the DAG's queue routing.

There is no Docker engine on the development machines, so ``docker/docker-compose.yaml`` is
checked the way ``docker compose config`` would read it: ``docker/.env.example`` filled with
dummy secrets, variables interpolated (``${X}``, ``${X:-d}``, ``${X:?e}``, ``$$``), YAML merge
keys resolved. The live topology (PostgreSQL, Redis, MLflow, api-server, scheduler,
dag-processor, a default and a ``train`` Celery worker) runs in
``scripts/celery_integration.sh`` (``make test-celery``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
TRAIN_TASKS = {"domain_reweight", "teacher_refresh", "student_distill", "train_comparison"}
OTHER_TASKS = {"check_conf", "wait_for_data", "extract", "validate", "score_previous_day", "graph_select", "plan_comparisons",
               "guard", "evaluate", "promote"}
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-worker-train", "airflow-init"}
SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET",
           "AIRFLOW_API_SECRET_KEY", "_AIRFLOW_WWW_USER_PASSWORD")
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_]\w*))")


def parse_env_file(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def interpolate(obj: Any, env: dict[str, str], problems: list[str]) -> Any:
    """Compose's variable interpolation over every string of a parsed compose file."""
    if isinstance(obj, dict):
        return {k: interpolate(v, env, problems) for k, v in obj.items()}
    if isinstance(obj, list):
        return [interpolate(v, env, problems) for v in obj]
    if not isinstance(obj, str):
        return obj

    def sub(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name, op, arg = m.group(2) or m.group(5), m.group(3), m.group(4)
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if not value:
                problems.append(f"{name}: {arg}")
            return value or ""
        if value is None:
            problems.append(f"{name} is not set and has no default")
        return value or ""

    return _VAR.sub(sub, obj)


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return parse_env_file((DOCKER / ".env.example").read_text())


@pytest.fixture(scope="module")
def compose(example_env: dict[str, str]) -> dict:
    env = {k: (v or f"dummy-{k.lower()}") for k, v in example_env.items()}  # a filled-in .env
    problems: list[str] = []
    doc = interpolate(yaml.safe_load((DOCKER / "docker-compose.yaml").read_text()), env, problems)
    assert not problems, f"interpolation with a filled-in .env.example: {problems}"
    return doc


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def _volumes(service: dict) -> dict[str, str]:
    """container path -> source of each volume of a service."""
    out = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        out[parts[1]] = parts[0]
    return out


def test_compose_topology(compose: dict) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "mlflow", *AIRFLOW_SERVICES} <= set(services)
    assert services["airflow-worker"]["command"].split() == ["celery", "worker", "--queues", "default"]
    assert services["airflow-worker-train"]["command"].split() == ["celery", "worker", "--queues", "train"]
    for name in AIRFLOW_SERVICES:
        env = _env(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["ECAT_TRAIN_QUEUE"] == "train", name
        assert env["ECAT_MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:") and "@redis:6379/" in env["AIRFLOW__CELERY__BROKER_URL"]
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"], name
        conn = json.loads(env["AIRFLOW_CONN_ECAT_WAREHOUSE"])
        assert conn["conn_type"] in ("duckdb", "postgres"), name
        volumes = _volumes(services[name])
        assert volumes[env["ECAT_HOME"]] == "ecat-home", name
        for target, source in (("/opt/airflow/dags", "dags"), ("/opt/ecat/ecat_tasks", "ecat_tasks"), ("/opt/ecat/sql", "sql")):
            assert (DOCKER / volumes[target]).resolve() == REPO / source, (name, target)
        assert env["PYTHONPATH"] == "/opt/ecat"  # ecat_tasks.config finds sql/ beside ecat_tasks/
    mlflow = services["mlflow"]
    store = _env(mlflow)["MLFLOW_BACKEND_STORE_URI"]
    assert store.startswith("postgresql+psycopg2://") and store.endswith("@postgres:5432/mlflow")
    assert "--port=5000" in mlflow["command"]
    assert _volumes(mlflow)["/opt/ecat/home"] == "ecat-home"
    assert set(compose["volumes"]) >= {"ecat-home", "postgres-db-volume"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_no_secrets_in_code(example_env: dict[str, str]) -> None:
    text = (DOCKER / "docker-compose.yaml").read_text()
    for name in SECRETS:
        assert example_env.get(name, None) == "", f".env.example must leave {name} empty"
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} unused"
        assert all(u == "" or u.startswith(":?") for u in uses), f"{name} has a default in docker-compose.yaml: {uses}"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()
    assert not re.search(r"(?i)password\s*[:=]\s*['\"]?(airflow|admin|secret)\b", text)


def test_dockerfile() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:3\.3\.2-python3\.11$", text, re.M)
    assert re.search(r"^FROM \$\{AIRFLOW_IMAGE\}$", text, re.M)
    torch_at = text.index('--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"')
    reqs_at = text.index("-r /opt/ecat/requirements.txt -c /opt/ecat/constraints.txt")
    assert torch_at < reqs_at, "torch must come from the CPU index before requirements.txt"
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements.txt").read_text(), re.M).group(1)
    assert f"ARG TORCH_VERSION={pinned}" in text
    ignore = [line.strip() for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allowlist: ignore everything, then re-include"
    for needed in ("requirements.txt", "constraints.txt", "ecat_tasks/", "sql/", "dags/", "docker/check_image.py"):
        assert f"!{needed}" in ignore


def test_celery_integration_script() -> None:
    script = REPO / "scripts" / "celery_integration.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)


QUEUES = r"""
import json, os, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(json.dumps({t.task_id: t.queue for t in bag.dags["ecat_daily"].tasks}))
"""


@pytest.mark.parametrize("train_queue", [None, "train"])
def test_training_tasks_routed_by_configuration(train_queue: str | None, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ECAT_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), ECAT_HOME=str(tmp_path / "ecat"), PYTHONPATH=str(REPO),
               AIRFLOW__CORE__LOAD_EXAMPLES="False")
    if train_queue:
        env["ECAT_TRAIN_QUEUE"] = train_queue
    proc = subprocess.run([sys.executable, "-c", QUEUES, str(REPO / "dags")], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    queues = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(queues) == TRAIN_TASKS | OTHER_TASKS
    for task in TRAIN_TASKS:
        assert queues[task] == (train_queue or "default"), task
    for task in OTHER_TASKS:
        assert queues[task] == "default", task
