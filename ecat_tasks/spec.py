"""The feature spec: one YAML file declares the warehouse table the pipeline reads.

A spec names the table; its sample-id, date, event-time and scenario columns; the user,
item and category id columns; the sparse features (embedded; optional vocabulary bounds:
``vocab_size``, ``hash_buckets``, ``min_count``), the dense features (bounds and a
normalisation) and the labels (``click`` required, ``conversion`` optional, each with its
allowed values). The loaded :class:`FeatureSpec` derives the extraction column list, the
lake's Arrow contract, the table DDL and the README's contract section; the tests hold
the demo spec (``specs/demo.yaml``) equal to the contract extract writes, validate checks,
the models embed and the synthetic generator creates.

The lake keeps fixed names for the role columns (``sample_id``, ``ds``, ``event_ts``,
``scenario``, ``user_id``, ``item_id``, ``category_id``) and the labels; features keep their
warehouse names. Identifiers are checked against ``[A-Za-z_][A-Za-z0-9_]*`` when the spec
loads and are always double-quoted in SQL; values stay bound parameters.

``python -m ecat_tasks.spec check SPEC --warehouse W`` (also run first by ``extract``) names
every missing column, wrong type and unknown label of the warehouse table in one message.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ecat_tasks.config import REPO_ROOT
from ecat_tasks.errors import DataError

DEMO_SPEC_PATH = REPO_ROOT / "specs" / "demo.yaml"
SPEC_ENV = "ECAT_FEATURE_SPEC"

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Role -> the lake's fixed column name.
ROLE_COLUMNS = {"sample_id": "sample_id", "date": "ds", "event_time": "event_ts", "scenario": "scenario"}
ID_ROLES = {"user": "user_id", "item": "item_id", "category": "category_id"}
KNOWN_LABELS = ("click", "conversion")  # what the pipeline can train on and weigh graph edges with
NORMALISATIONS = ("log_standard", "standard")
SPARSE_TYPES = ("int", "string")

# Warehouse type families (DuckDB and PostgreSQL spellings, lower-cased, without parameters).
_FAMILIES = {
    "integer": ("bigint", "integer", "int", "int8", "int4", "int2", "smallint", "tinyint", "hugeint", "ubigint",
                "uinteger", "usmallint", "utinyint", "int64", "int32", "long"),
    "float": ("double", "double precision", "float", "float8", "float4", "real", "decimal", "numeric"),
    "string": ("varchar", "character varying", "text", "string", "char", "character", "bpchar"),
    "date": ("date",),
    "timestamp": ("timestamp", "timestamp without time zone", "datetime", "timestamp_us", "timestamp_ns",
                  "timestamp_ms", "timestamp_s"),
    "boolean": ("boolean", "bool"),
}
_DDL_TYPES = {"integer": "BIGINT", "float": "DOUBLE", "string": "VARCHAR", "date": "DATE", "timestamp": "TIMESTAMP"}


class SpecError(DataError):
    """The spec file is invalid, or the warehouse does not match it; the message names each column.
    Retrying cannot help: fix the table or the spec."""


def type_family(sql_type: str) -> str:
    """``BIGINT`` -> ``integer``, ``VARCHAR(64)`` -> ``string``, ... (``other`` when unknown)."""
    base = re.sub(r"\(.*\)", "", str(sql_type)).strip().lower()
    for family, names in _FAMILIES.items():
        if base in names:
            return family
    return "other"


def quote_ident(name: str) -> str:
    """A validated identifier, double-quoted for SQL (never a free-form string)."""
    if not _IDENT.match(name):
        raise SpecError(f"{name!r} is not a valid column or table name (letters, digits, _; not starting with a digit)")
    return f'"{name}"'


def quote_table(name: str) -> str:
    """``table`` or ``schema.table``, each part validated and quoted."""
    return ".".join(quote_ident(p) for p in name.split("."))


def string_ids(values: Any) -> Any:
    """Stable int64 ids of string values (a salted 64-bit hash), as a nullable array: nulls stay null
    for validation to report."""
    import numpy as np
    import pandas as pd

    series = pd.Series(values, dtype=object)
    null = series.isna().to_numpy()
    ids = pd.util.hash_array(series.fillna("").astype(str).to_numpy(dtype=object), hash_key="ecat-feature-ids")
    return pd.arrays.IntegerArray(ids.view(np.int64), null)


# --- typed objects ----------------------------------------------------------------------
@dataclass(frozen=True)
class SparseFeature:
    """A categorical column with its own embedding table.

    ``vocab_size`` bounds the ids that get their own row (None: unbounded); an id is admitted
    once seen ``min_count`` times in one day's training rows. Ids without a row share
    ``hash_buckets`` rows by a hash of the id, or the single out-of-vocabulary row 0 when
    ``hash_buckets`` is 0. The table never exceeds ``1 + hash_buckets + vocab_size`` rows.
    """

    name: str  # column in the lake and key of the embedding table
    column: str = ""  # warehouse column ("" = name)
    type: str = "int"  # warehouse type: int | string (strings are hashed to int64 ids)
    low: int | None = 0  # smallest valid raw value (int columns; None = no bound)
    vocab_size: int | None = None
    hash_buckets: int = 0
    min_count: int = 1

    @property
    def source(self) -> str:
        return self.column or self.name

    @property
    def max_rows(self) -> int | None:
        """The largest embedding table this feature can ever need (None when unbounded)."""
        return None if self.vocab_size is None else 1 + self.hash_buckets + self.vocab_size


@dataclass(frozen=True)
class DenseFeature:
    """A numeric column, a model input after normalisation; values outside [low, high] fail validation."""

    name: str
    low: float = 0.0
    high: float = 1e9
    normalisation: str = "log_standard"  # log_standard: log1p(max(x, 0)) standardised; standard: x standardised

    @property
    def source(self) -> str:
        return self.name


@dataclass(frozen=True)
class Label:
    name: str  # click | conversion (the lake column)
    column: str  # warehouse column
    values: tuple[int, ...] = (0, 1)


@dataclass(frozen=True)
class ModelFeatures:
    """What a model needs of the spec (stored in every checkpoint, so scoring needs no spec file)."""

    sparse: tuple[SparseFeature, ...]
    dense: tuple[DenseFeature, ...]

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    def to_dict(self) -> dict[str, Any]:
        return {"sparse": [asdict(f) for f in self.sparse], "dense": [asdict(f) for f in self.dense]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelFeatures":
        return cls(tuple(SparseFeature(**f) for f in data["sparse"]), tuple(DenseFeature(**f) for f in data["dense"]))


@dataclass(frozen=True)
class LakeColumn:
    name: str  # lake column
    source: str  # warehouse column
    family: str  # expected warehouse type family (see type_family)
    kind: str  # role | id | sparse | dense | label
    sparse_type: str = "int"


@dataclass(frozen=True)
class FeatureSpec:
    table: str
    sample_id: str
    date: str
    event_time: str
    scenario: str
    user: SparseFeature
    item: SparseFeature
    category: SparseFeature
    sparse: tuple[SparseFeature, ...]
    dense: tuple[DenseFeature, ...]
    labels: tuple[Label, ...]
    path: str = field(default="", compare=False)

    # --- the model's view ----------------------------------------------------------------
    @property
    def all_sparse(self) -> tuple[SparseFeature, ...]:
        """Id roles first (user, item, category), then the other sparse features, in spec order."""
        return (self.user, self.item, self.category, *self.sparse)

    def model_features(self) -> ModelFeatures:
        return ModelFeatures(self.all_sparse, self.dense)

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.all_sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    @property
    def label_names(self) -> list[str]:
        return [lb.name for lb in self.labels]

    # --- the lake contract ---------------------------------------------------------------
    def lake_columns(self) -> list[LakeColumn]:
        """Every column of an extracted partition, in lake order, with its warehouse source."""
        cols = [
            LakeColumn("sample_id", self.sample_id, "string", "role"),
            LakeColumn("ds", self.date, "date", "role"),
            LakeColumn("event_ts", self.event_time, "timestamp", "role"),
            LakeColumn("scenario", self.scenario, "string", "role"),
        ]
        for f in self.all_sparse:
            family = "string" if f.type == "string" else "integer"
            cols.append(LakeColumn(f.name, f.source, family, "id" if f.name in ID_ROLES.values() else "sparse", f.type))
        cols += [LakeColumn(f.name, f.source, "float", "dense") for f in self.dense]
        cols += [LakeColumn(lb.name, lb.column, "integer", "label") for lb in self.labels]
        return cols

    @property
    def lake_names(self) -> list[str]:
        return [c.name for c in self.lake_columns()]

    def arrow_schema(self) -> Any:
        """The Arrow schema of an extracted partition (what extract writes and validate checks)."""
        import pyarrow as pa

        types = {"sample_id": pa.string(), "ds": pa.date32(), "event_ts": pa.timestamp("us"), "scenario": pa.string()}
        return pa.schema([(c.name, types.get(c.name, pa.float64() if c.kind == "dense" else pa.int64()))
                          for c in self.lake_columns()])

    # --- SQL -----------------------------------------------------------------------------
    def select_list(self) -> str:
        """The extraction column list: quoted warehouse columns aliased to lake names."""
        parts = []
        for c in self.lake_columns():
            src, dst = quote_ident(c.source), quote_ident(c.name)
            parts.append(src if c.source == c.name else f"{src} AS {dst}")
        return ", ".join(parts)

    def sql_identifiers(self) -> dict[str, str]:
        """Identifiers a SQL template may use (``${table}``, ``${columns}``, ``${date}``, ...), all quoted."""
        return {
            "table": quote_table(self.table), "columns": self.select_list(), "date": quote_ident(self.date),
            "scenario": quote_ident(self.scenario), "sample_id": quote_ident(self.sample_id),
        }

    def ddl(self) -> str:
        """CREATE TABLE for this spec's warehouse table (the synthetic generator's, and tests')."""
        lines = []
        for c in self.lake_columns():
            not_null = " NOT NULL" if c.kind == "role" else ""
            lines.append(f"    {quote_ident(c.source)} {_DDL_TYPES[c.family]}{not_null}")
        return f"CREATE TABLE IF NOT EXISTS {quote_table(self.table)} (\n" + ",\n".join(lines) + "\n)"

    # --- docs ----------------------------------------------------------------------------
    def contract_markdown(self) -> str:
        """The README's contract table: warehouse column -> lake column, type, role, checks."""
        rows = ["| warehouse column | lake column | type | role | checked |", "| --- | --- | --- | --- | --- |"]
        sparse = {f.name: f for f in self.all_sparse}
        dense = {f.name: f for f in self.dense}
        labels = {lb.name: lb for lb in self.labels}
        for c in self.lake_columns():
            if c.kind == "role":
                role, check = {"sample_id": "sample id", "ds": "partition date", "event_ts": "event time",
                               "scenario": "scenario"}[c.name], "not null" + (", unique" if c.name == "sample_id" else "")
            elif c.kind in ("id", "sparse"):
                f = sparse[c.name]
                role = ("id, " if c.kind == "id" else "") + "embedded" + ("" if f.vocab_size is None else
                                                                           f", vocab {f.vocab_size}+{f.hash_buckets} buckets, min count {f.min_count}")
                check = ("not null, " if c.kind == "id" else "") + (f">= {f.low}" if f.low is not None and f.type == "int" else "-")
            elif c.kind == "dense":
                f = dense[c.name]
                role, check = f"dense, {f.normalisation}", f"in [{f.low:g}, {f.high:g}]"
            else:
                role, check = "label", "in {" + ", ".join(map(str, labels[c.name].values)) + "}, not null"
            family = "string (hashed to int64)" if c.sparse_type == "string" and c.kind in ("id", "sparse") else c.family
            rows.append(f"| `{c.source}` | `{c.name}` | {family} | {role} | {check} |")
        return f"Table `{self.table}`:\n\n" + "\n".join(rows)

    def summary(self) -> dict[str, Any]:
        """For manifests: where the spec came from and its shape."""
        return {"path": self.path, "table": self.table, "sparse": self.sparse_names, "dense": self.dense_names,
                "labels": self.label_names}


# --- loading ----------------------------------------------------------------------------
_TOP_KEYS = {"table", "columns", "user", "item", "category", "labels", "sparse", "dense"}
_SPARSE_KEYS = {"column", "name", "type", "low", "vocab_size", "hash_buckets", "min_count"}
_DENSE_KEYS = {"column", "low", "high", "normalisation"}
_LABEL_KEYS = {"column", "values"}


def _keys(where: str, data: Any, allowed: set[str], required: Iterable[str] = ()) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise SpecError(f"{where}: missing {missing}")
    return dict(data)


def _int(where: str, value: Any, low: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SpecError(f"{where}: expected an integer >= {low}, got {value!r}")
    return value


def _sparse(where: str, data: Any, name: str | None = None) -> SparseFeature:
    d = _keys(where, data, _SPARSE_KEYS, ["column"])
    column = d["column"]
    quote_ident(str(column))
    kind = d.get("type", "int")
    if kind not in SPARSE_TYPES:
        raise SpecError(f"{where}: type must be one of {list(SPARSE_TYPES)}, got {kind!r}")
    low = d.get("low", 0 if kind == "int" else None)
    if low is not None and (isinstance(low, bool) or not isinstance(low, int)):
        raise SpecError(f"{where}: low must be an integer, got {low!r}")
    return SparseFeature(
        name=name or column, column=column if name else "", type=kind, low=low,
        vocab_size=_int(f"{where}.vocab_size", d.get("vocab_size"), 1, allow_none=True),
        hash_buckets=_int(f"{where}.hash_buckets", d.get("hash_buckets", 0), 0),
        min_count=_int(f"{where}.min_count", d.get("min_count", 1), 1),
    )


def _dense(where: str, data: Any) -> DenseFeature:
    d = _keys(where, data, _DENSE_KEYS, ["column"])
    quote_ident(str(d["column"]))
    try:
        low, high = float(d.get("low", 0.0)), float(d.get("high", 1e9))
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: low/high must be numbers") from exc
    if not low < high:
        raise SpecError(f"{where}: low {low} must be below high {high}")
    norm = d.get("normalisation", "log_standard")
    if norm not in NORMALISATIONS:
        raise SpecError(f"{where}: normalisation must be one of {list(NORMALISATIONS)}, got {norm!r}")
    return DenseFeature(d["column"], low, high, norm)


def parse_spec(data: Any, path: str = "") -> FeatureSpec:
    """A :class:`FeatureSpec` from the YAML document's data; :class:`SpecError` names what is wrong."""
    where = path or "spec"
    d = _keys(where, data, _TOP_KEYS, ["table", "columns", "user", "item", "category", "labels"])
    quote_table(str(d["table"]))
    cols = _keys(f"{where}: columns", d["columns"], set(ROLE_COLUMNS), list(ROLE_COLUMNS))
    for role, column in cols.items():
        quote_ident(str(column))
    ids = {role: _sparse(f"{where}: {role}", d[role], lake) for role, lake in ID_ROLES.items()}
    raw_labels = _keys(f"{where}: labels", d["labels"], set(d["labels"]) if isinstance(d["labels"], Mapping) else set())
    unknown = sorted(set(raw_labels) - set(KNOWN_LABELS))
    if unknown:
        raise SpecError(f"{where}: unknown label(s) {unknown}; the pipeline knows {list(KNOWN_LABELS)}")
    if "click" not in raw_labels:
        raise SpecError(f"{where}: labels must declare 'click' (the graph's edges and the default label)")
    labels = []
    for name in KNOWN_LABELS:
        if name in raw_labels:
            ld = _keys(f"{where}: labels.{name}", raw_labels[name], _LABEL_KEYS, ["column"])
            quote_ident(str(ld["column"]))
            values = tuple(ld.get("values", (0, 1)))
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise SpecError(f"{where}: labels.{name}.values must be a list of integers, got {values!r}")
            labels.append(Label(name, ld["column"], values))
    sparse = tuple(_sparse(f"{where}: sparse[{i}]", f) for i, f in enumerate(d.get("sparse") or []))
    dense = tuple(_dense(f"{where}: dense[{i}]", f) for i, f in enumerate(d.get("dense") or []))
    spec = FeatureSpec(
        table=d["table"], sample_id=cols["sample_id"], date=cols["date"], event_time=cols["event_time"],
        scenario=cols["scenario"], user=ids["user"], item=ids["item"], category=ids["category"],
        sparse=sparse, dense=dense, labels=tuple(labels), path=path,
    )
    _check_unique(spec, where)
    return spec


def _check_unique(spec: FeatureSpec, where: str) -> None:
    lake, sources = {}, {}
    for c in spec.lake_columns():
        if c.name in lake:
            raise SpecError(f"{where}: lake column {c.name!r} is declared twice ({lake[c.name]} and {c.kind}); "
                            f"a feature cannot take a role's name ({sorted(set(ROLE_COLUMNS.values()) | set(ID_ROLES.values()))})")
        lake[c.name] = c.kind
        if c.source in sources:
            raise SpecError(f"{where}: warehouse column {c.source!r} is used twice ({sources[c.source]} and {c.name})")
        sources[c.source] = c.name


def spec_path(value: str | os.PathLike[str] | None = None) -> Path:
    """The spec file: ``value``, else ``ECAT_FEATURE_SPEC``, else the demo spec; relative paths
    resolve against the checkout (workers may start anywhere)."""
    raw = str(value) if value else os.environ.get(SPEC_ENV, "")
    if not raw:
        return DEMO_SPEC_PATH
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (REPO_ROOT / path)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> FeatureSpec:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:  # where, not what: the text of a file named by a trigger stays out of the logs
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"feature spec {path} is not valid YAML{where}") from None
    return parse_spec(data, path)


def load_spec(value: str | os.PathLike[str] | None = None) -> FeatureSpec:
    """Load (and cache) the spec named by ``value`` / ``ECAT_FEATURE_SPEC`` / the demo default."""
    path = spec_path(value)
    if not path.is_file():
        raise SpecError(f"feature spec {path} does not exist (param feature_spec / {SPEC_ENV})")
    return _load_cached(str(path), path.stat().st_mtime_ns)


def spec_of(cfg: Any) -> FeatureSpec:
    """The spec a run's config names (``feature_spec``; empty = environment, then the demo)."""
    return load_spec(getattr(cfg, "feature_spec", "") or None)


def demo_spec() -> FeatureSpec:
    return load_spec(DEMO_SPEC_PATH)


# --- checking a warehouse against the spec --------------------------------------------
def warehouse_columns(connection: Any, table: str) -> dict[str, str]:
    """column -> SQL type of ``table`` from ``information_schema`` (DuckDB and PostgreSQL alike)."""
    from ecat_tasks.sql import bind, paramstyle_of

    schema, _, name = table.rpartition(".")
    sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :name"
    params: dict[str, Any] = {"name": name}
    if schema:
        sql += " AND table_schema = :schema"
        params["schema"] = schema
    query, bound = bind(sql, params, paramstyle_of(connection))
    cursor = connection.cursor()
    try:
        cursor.execute(query, bound)
        return {str(c): str(t) for c, t in cursor.fetchall()}
    finally:
        cursor.close()


def _unknown_label_values(connection: Any, spec: FeatureSpec, label: Label,
                          days: tuple[str, str] | None) -> list[Any]:
    from ecat_tasks.sql import bind, paramstyle_of

    params: dict[str, Any] = {f"v{i}": v for i, v in enumerate(label.values)}
    col = quote_ident(label.column)
    sql = (f"SELECT DISTINCT {col} FROM {quote_table(spec.table)} WHERE {col} IS NOT NULL AND {col} NOT IN ("
           + ", ".join(f":v{i}" for i in range(len(label.values))) + ")")
    if days:
        sql += f" AND {quote_ident(spec.date)} >= CAST(:start_ds AS DATE) AND {quote_ident(spec.date)} <= CAST(:end_ds AS DATE)"
        params.update(start_ds=days[0], end_ds=days[1])
    sql += " LIMIT 5"
    query, bound = bind(sql, params, paramstyle_of(connection))
    cursor = connection.cursor()
    try:
        cursor.execute(query, bound)
        return sorted(r[0] for r in cursor.fetchall())
    finally:
        cursor.close()


def check_warehouse(spec: FeatureSpec, connection: Any, label: str | None = None,
                    days: tuple[str, str] | None = None) -> list[str]:
    """Every way the warehouse table breaks ``spec``: missing columns, wrong types, unknown labels.

    ``label`` is the run's training label (it must be declared); ``days`` limits the scan of
    label values to a date range. An empty list means the table follows the spec.
    """
    problems: list[str] = []
    if label is not None and label not in spec.label_names:
        problems.append(f"unknown label {label!r}: the spec declares {spec.label_names}")
    have = {c.lower(): t for c, t in warehouse_columns(connection, spec.table).items()}
    if not have:
        return problems + [f"table {spec.table!r} does not exist (or has no columns) in the warehouse"]
    checkable = []
    for c in spec.lake_columns():
        got = have.get(c.source.lower())
        if got is None:
            problems.append(f"missing column {c.source!r} ({c.kind} {c.name})")
            continue
        family = type_family(got)
        ok = {"float": ("float", "integer"), "integer": ("integer",) if c.kind != "label" else ("integer", "boolean"),
              "timestamp": ("timestamp",), "date": ("date",), "string": ("string",)}[c.family]
        if family not in ok:
            problems.append(f"column {c.source!r} ({c.kind} {c.name}) has type {got}, expected {c.family}")
        elif c.kind == "label" and family == "integer":
            checkable.append(c.name)
    for lb in spec.labels:
        if lb.name in checkable:
            bad = _unknown_label_values(connection, spec, lb, days)
            if bad:
                problems.append(f"label column {lb.column!r} ({lb.name}) holds unknown label value(s) {bad}; "
                                f"allowed {list(lb.values)}")
    return problems


def require_warehouse(spec: FeatureSpec, connection: Any, label: str | None = None,
                      days: tuple[str, str] | None = None) -> None:
    """:func:`check_warehouse`, raising one :class:`SpecError` that lists every problem."""
    problems = check_warehouse(spec, connection, label, days)
    if problems:
        raise SpecError(f"warehouse table {spec.table!r} does not follow the feature spec {spec.path}: "
                        f"{len(problems)} problem(s): " + "; ".join(problems))


README_MARKERS = ("<!-- contract:start -->", "<!-- contract:end -->")


def readme_with_contract(text: str, spec: FeatureSpec | None = None) -> str:
    """The README text with its contract section (between the markers) regenerated from the demo spec."""
    start, end = README_MARKERS
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{(spec or demo_spec()).contract_markdown()}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    """``python -m ecat_tasks.spec check SPEC --warehouse W [--label click]`` | ``readme [--update]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ecat_tasks.spec")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a warehouse table against a feature spec")
    check.add_argument("spec", help="the spec file (YAML)")
    check.add_argument("--warehouse", required=True, help="DuckDB warehouse file")
    check.add_argument("--label", default=None, help="the label a run would train on (default: none checked)")
    readme = sub.add_parser("readme", help="print (or --update) the README's contract section from the demo spec")
    readme.add_argument("--update", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "readme":
        if args.update:
            path = REPO_ROOT / "README.md"
            path.write_text(readme_with_contract(path.read_text()))
        else:
            sys.stdout.write(demo_spec().contract_markdown() + "\n")
        return 0
    import duckdb

    try:
        spec = load_spec(Path(args.spec).resolve())
        if not Path(args.warehouse).is_file():
            raise SpecError(f"warehouse {args.warehouse} does not exist")
        with duckdb.connect(str(args.warehouse), read_only=True) as con:
            require_warehouse(spec, con, args.label)
    except SpecError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"ok: {args.warehouse} table {spec.table!r} follows {spec.path} "
                     f"({len(spec.lake_columns())} columns, labels {spec.label_names})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
