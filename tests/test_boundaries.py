"""Step boundaries a new engineer can see: steps share code through models/ and inputs.py only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ecat_tasks.airflow_edge import STEPS
from ecat_tasks.config import REPO_ROOT

# check_conf is the typed config's own check: every step imports the config, by design.
STEP_MODULES = sorted({target.split(":")[0] for target in STEPS.values()} - {"ecat_tasks.config"})
LAKE_READERS = {"read_table", "read_parquet", "read_lake", "ParquetFile", "ParquetDataset", "dataset"}


def _tree(module: str) -> ast.Module:
    path = REPO_ROOT / Path(*module.split(".")).with_suffix(".py")
    return ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("module", STEP_MODULES)
def test_a_step_imports_no_other_step(module: str) -> None:
    others = set(STEP_MODULES) - {module}
    assert not _imports(_tree(module)) & others, f"{module} imports another step; move the shared code to models/"


@pytest.mark.parametrize("module", STEP_MODULES)
def test_a_step_reads_partitions_only_through_inputs(module: str) -> None:
    calls = {n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
             for n in ast.walk(_tree(module)) if isinstance(n, ast.Call)}
    assert not calls & LAKE_READERS, f"{module} reads Parquet itself ({sorted(calls & LAKE_READERS)}); use ecat_tasks.inputs"


def test_models_import_no_step() -> None:
    for path in (REPO_ROOT / "ecat_tasks" / "models").glob("*.py"):
        module = f"ecat_tasks.models.{path.stem}"
        assert not _imports(_tree(module)) & set(STEP_MODULES), f"{module} imports a pipeline step"


def test_trainer_store_and_model_stay_apart() -> None:
    """fit_day's jobs live apart: the model module neither trains nor writes, the trainer builds
    networks only through the model module and writes no checkpoint, the store trains nothing."""
    model = _imports(_tree("ecat_tasks.models.model"))
    trainer = _imports(_tree("ecat_tasks.models.trainer"))
    store = _imports(_tree("ecat_tasks.models.store"))
    writers = {"ecat_tasks.models.training.save_checkpoint", "ecat_tasks.storage.atomic_dir",
               "ecat_tasks.storage.write_manifest"}
    assert not model & (writers | {"ecat_tasks.models.trainer", "ecat_tasks.models.store",
                                   "ecat_tasks.models.training.train_epochs"})
    assert not trainer & (writers | {"ecat_tasks.models.networks"})
    assert not store & {"ecat_tasks.models.trainer.train", "ecat_tasks.models.training.train_epochs",
                        "ecat_tasks.models.networks"}
