import pytest

from ecat_tasks.config import EcatConfig, param_schema


def test_defaults_then_env_then_values():
    cfg = EcatConfig.from_mapping({"lookback_days": 3}, env={"ECAT_LOOKBACK_DAYS": "5", "ECAT_SEED": "9"})
    assert cfg.lookback_days == 3  # the run's value wins over env
    assert cfg.seed == 9  # env wins over the default
    assert EcatConfig.from_mapping({}, env={}).seed == 42


def test_env_values_are_typed():
    cfg = EcatConfig.from_mapping({}, env={"ECAT_KD_ENABLED": "false", "ECAT_BASELINES": '["star"]',
                                           "ECAT_KD_LAMBDA": "0.25"})
    assert cfg.kd_enabled is False and cfg.baselines == ["star"] and cfg.kd_lambda == 0.25


def test_unknown_field_is_named():
    with pytest.raises(ValueError, match="lookback_dayz"):
        EcatConfig.from_mapping({"lookback_dayz": 3}, env={})


def test_bad_env_value_names_the_field():
    with pytest.raises(ValueError, match="walk_length"):
        EcatConfig.from_mapping({}, env={"ECAT_WALK_LENGTH": "many"})


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="baselines"):
        EcatConfig.from_mapping({"baselines": ["target_only", "nope"]}, env={})


def test_a_value_outside_its_enum_is_refused_from_the_environment_too():
    """An ECAT_GUARD_RULE typo fails at config time, naming the field, not in the guard task days later."""
    with pytest.raises(ValueError, match="guard_rule.*'best' is not one of"):
        EcatConfig.from_mapping({}, env={"ECAT_GUARD_RULE": "best"})
    assert EcatConfig.from_mapping({"guard_rule": "evidence"}, env={}).guard_rule == "evidence"


def test_param_schema_has_type_and_bounds_for_every_field():
    schema = param_schema()
    assert set(schema) == set(EcatConfig.__dataclass_fields__)
    assert schema["lookback_days"]["type"] == "integer" and schema["lookback_days"]["minimum"] == 1
    assert schema["label"]["enum"] == ["click", "conversion"]
    assert all("description" in s and "type" in s for s in schema.values())


def test_readme_parameter_table_is_current() -> None:
    from ecat_tasks.config import REPO_ROOT, readme_with_params

    text = (REPO_ROOT / "README.md").read_text()
    assert readme_with_params(text) == text, "README's parameter table is stale: run python -m ecat_tasks.config --update-readme"
