"""The feature spec: which warehouse columns feed the models, and how.

Models are built from this list (embeddings for sparse columns, normalised dense columns),
and validation checks the same columns, so adding a feature is a one-line change here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class SparseFeature:
    name: str
    low: int = 0  # smallest valid raw value (validation)


@dataclass(frozen=True)
class DenseFeature:
    name: str
    low: float = 0.0
    high: float = 1e9


@dataclass(frozen=True)
class FeatureSpec:
    sparse: tuple[SparseFeature, ...]
    dense: tuple[DenseFeature, ...]

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]


ID_COLUMNS = ("user_id", "item_id", "category_id")
LABEL_COLUMNS = ("click", "conversion")
META_COLUMNS = ("sample_id", "ds", "event_ts", "scenario")

DEFAULT_SPEC = FeatureSpec(
    sparse=(
        SparseFeature("user_id"),
        SparseFeature("item_id"),
        SparseFeature("category_id"),
        SparseFeature("user_age"),
        SparseFeature("user_gender"),
        SparseFeature("user_city"),
        SparseFeature("item_brand"),
        SparseFeature("device"),
        SparseFeature("hour"),
    ),
    dense=(
        DenseFeature("item_price", 0.0, 1e6),
        DenseFeature("user_activity", 0.0, 1e4),
        DenseFeature("item_popularity", 0.0, 1.0),
    ),
)


def sample_columns(spec: FeatureSpec = DEFAULT_SPEC) -> list[str]:
    """Every column of the ``samples`` contract, in warehouse order."""
    extra = [n for n in spec.sparse_names if n not in ID_COLUMNS]
    return [*META_COLUMNS, *ID_COLUMNS, *extra, *spec.dense_names, *LABEL_COLUMNS]


# The Arrow schema of an extracted lake partition (what extract writes and validate checks).
CONTRACT_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("ds", pa.date32()), ("event_ts", pa.timestamp("us")),
    ("scenario", pa.string()), ("user_id", pa.int64()), ("item_id", pa.int64()),
    ("category_id", pa.int64()), ("user_age", pa.int64()), ("user_gender", pa.int64()),
    ("user_city", pa.int64()), ("item_brand", pa.int64()), ("device", pa.int64()),
    ("hour", pa.int64()), ("item_price", pa.float64()), ("user_activity", pa.float64()),
    ("item_popularity", pa.float64()), ("click", pa.int64()), ("conversion", pa.int64()),
])
