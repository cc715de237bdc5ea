"""What a trigger can change: deployment settings stay out of the params; registry errors are not "no champion"."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecat_tasks.config import EcatConfig, param_schema
from ecat_tasks.promote import RegistryError, current_champion
from ecat_tasks.tracking import client, tracking_uri


def test_tracking_uri_is_not_a_param_but_the_deployments(monkeypatch, tmp_path: Path):
    assert "mlflow_tracking_uri" not in param_schema(env={})
    with pytest.raises(ValueError, match="unknown config field 'mlflow_tracking_uri'"):
        EcatConfig.from_mapping({"mlflow_tracking_uri": f"sqlite:///{tmp_path}/elsewhere.db"}, env={})
    monkeypatch.delenv("ECAT_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert tracking_uri(tmp_path) == "http://mlflow.internal:5000"
    monkeypatch.setenv("ECAT_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking_uri(tmp_path) == "http://mlflow:5000"


@pytest.mark.parametrize("name", ["../../tmp/evil", "a/b", " ecat", "", "ecat student"])
def test_registered_model_name_pattern(name: str):
    with pytest.raises(ValueError, match="registered_model"):
        EcatConfig.from_mapping({"registered_model": name}, env={})
    assert EcatConfig.from_mapping({"registered_model": "ecat_student-v2.1"}, env={}).registered_model == "ecat_student-v2.1"


def test_no_model_or_no_alias_yet_is_no_champion(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("ECAT_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mc = client(EcatConfig.from_mapping({}, env={}), tmp_path)
    uri = tracking_uri(tmp_path)
    assert current_champion(mc, "never_registered", uri) is None
    mc.create_registered_model("registered_without_alias")
    assert current_champion(mc, "registered_without_alias", uri) is None


class _Refusing:
    """A registry client whose server answers every call with an error that is not "not found"."""

    def __init__(self, code: str) -> None:
        self.code = code

    def get_registered_model(self, name: str):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import ErrorCode

        raise MlflowException("User 'ci' does not have permission to READ registered model",
                              error_code=ErrorCode.Value(self.code))


@pytest.mark.parametrize("code", ["PERMISSION_DENIED", "INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE"])
def test_other_registry_errors_fail_promotion(code: str):
    with pytest.raises(RegistryError, match=f"cannot read alias 'champion' of registered model 'm' at http://x: {code}: User 'ci'"):
        current_champion(_Refusing(code), "m", "http://x")


def test_unreachable_registry_fails_promotion(monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mc = mlflow.MlflowClient("http://127.0.0.1:9", "http://127.0.0.1:9")
    with pytest.raises(RegistryError, match="at http://127.0.0.1:9: "):
        current_champion(mc, "ecat_student", "http://127.0.0.1:9")
