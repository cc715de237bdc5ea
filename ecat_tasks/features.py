"""The features the models and validation use, derived from the demo feature spec.

``specs/demo.yaml`` is the one declaration (see :mod:`ecat_tasks.spec`): models are built
from :data:`DEFAULT_SPEC` (embeddings for sparse columns, normalised dense columns),
validation checks the same columns, and :data:`CONTRACT_SCHEMA` is the Arrow schema of an
extracted lake partition.
"""

from __future__ import annotations

from ecat_tasks.spec import DenseFeature, ModelFeatures, SparseFeature, demo_spec

__all__ = ["CONTRACT_SCHEMA", "DEFAULT_SPEC", "DenseFeature", "FeatureSpec", "SparseFeature", "sample_columns"]

FeatureSpec = ModelFeatures  # what a model needs of the spec: its sparse and dense features
DEFAULT_SPEC = demo_spec().model_features()
CONTRACT_SCHEMA = demo_spec().arrow_schema()  # what extract writes and validate checks


def sample_columns() -> list[str]:
    """Every column of the ``samples`` contract, in warehouse order."""
    return demo_spec().lake_names
